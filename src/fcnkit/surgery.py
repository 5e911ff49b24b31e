"""Net surgery (paper Sec. 3.1, 3.3, 4.2): turn a classifier into a dense predictor.

- :func:`bilinear_kernel` / :func:`init_bilinear_`: the reference upsampling filter (Sec. 3.3),
  defined with the other head primitives in :mod:`fcnkit.models.heads`.
- :func:`linear_to_conv` / :func:`convolutionalize`: fully connected layers as convolutions,
  so that a classifier outputs a class heatmap (Sec. 3.1, Fig. 2).
- :func:`transplant`: copy weights by name, reshaping fc <-> conv.
- :func:`init_from`: staged training, FCN-16s from 32s, 8s from 16s (Sec. 4.2); from a run
  directory: :func:`fcnkit.weights.init_from_run`.
- :func:`resize_score_layer`: change the class count, keeping shared classes' weights.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fcnkit.models.heads import bilinear_kernel, init_bilinear_

__all__ = [
    "bilinear_kernel",
    "init_bilinear_",
    "linear_to_conv",
    "convolutionalize",
    "TransplantReport",
    "transplant",
    "init_from",
    "resize_score_layer",
]


# Layers that act element-wise, so they can follow a convolutionalized Linear unchanged.
# nn.Dropout stays element-wise on a 4-D map (the reference's fc6/fc7 dropout), unlike Dropout2d.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Identity,
)


@torch.no_grad()
def linear_to_conv(linear: nn.Linear, in_shape: tuple[int, int, int]) -> nn.Conv2d:
    """The convolution equivalent to ``linear`` applied to a flattened ``C x kh x kw`` map.

    Paper Sec. 3.1: a fully connected layer is a convolution whose kernel covers its whole
    input region (VGG16 fc6: ``in_shape=(512, 7, 7)`` -> a 7x7 conv; a layer after global
    pooling: ``(C, 1, 1)`` -> a 1x1 conv). Flattening order is PyTorch's (channel, row, column),
    as in ``torch.flatten(x, 1)``. The weights are copied, not shared.
    """
    c, kh, kw = in_shape
    if linear.in_features != c * kh * kw:
        raise ValueError(
            f"Linear has {linear.in_features} inputs, but in_shape {tuple(in_shape)} has "
            f"{c * kh * kw} elements"
        )
    w = linear.weight
    conv = nn.Conv2d(
        c,
        linear.out_features,
        (kh, kw),
        bias=linear.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    conv.weight.copy_(w.reshape(linear.out_features, c, kh, kw))
    if linear.bias is not None:
        conv.bias.copy_(linear.bias)
    return conv


def _pair(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int]:
    if size is None:  # AdaptiveAvgPool2d allows None (keep the input size): not a fixed grid
        raise ValueError("an adaptive pool with output size None cannot be convolutionalized")
    if isinstance(size, int):
        return size, size
    h, w = size
    if h is None or w is None:
        raise ValueError("an adaptive pool with output size None cannot be convolutionalized")
    return int(h), int(w)


def _convolutionalize_head(
    layers: list[nn.Module], in_shape: tuple[int, int, int]
) -> nn.Sequential:
    """Linear layers -> convs; element-wise layers copied; ``Flatten`` dropped."""
    out: list[nn.Module] = []
    shape = in_shape
    for layer in layers:
        if isinstance(layer, nn.Flatten):
            continue
        if isinstance(layer, nn.Linear):
            out.append(linear_to_conv(layer, shape))
            shape = (layer.out_features, 1, 1)
        elif isinstance(layer, _ELEMENTWISE):
            out.append(copy.deepcopy(layer))
        else:
            raise TypeError(
                f"cannot convolutionalize a classifier layer of type {type(layer).__name__}: "
                "only Linear, Flatten and element-wise layers are supported"
            )
    return nn.Sequential(*out)


def _head_layers(head: nn.Module) -> list[nn.Module]:
    return list(head) if isinstance(head, nn.Sequential) else [head]


def _first_linear(layers: list[nn.Module]) -> nn.Linear:
    for layer in layers:
        if isinstance(layer, nn.Linear):
            return layer
    raise TypeError("the classifier head has no nn.Linear layer")


class _ExtractFeatures(nn.Module):
    """A copy of a classifier without its head, run through ``extract_features(x)``."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(classifier)
        for name in ("_avg_pooling", "_dropout", "_fc"):
            setattr(self.net, name, nn.Identity())  # the head runs after the trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def convolutionalize(
    classifier: nn.Module, *, global_pool: str = "window", pool_size: int | tuple[int, int] = 7
) -> nn.Sequential:
    """A fully convolutional copy of an image classifier: it outputs a class-score map.

    Paper Sec. 3.1 and Fig. 2. Supported layouts (torchvision's, and any module built alike):

    * ``features`` -> ``avgpool`` (``AdaptiveAvgPool2d``) -> ``classifier`` (``Sequential``),
      as VGG, AlexNet, MobileNetV3, EfficientNet. With a spatial pool (VGG's 7x7, AlexNet's
      6x6) the pool is dropped and the first ``Linear`` becomes a ``C x h x w`` convolution
      (VGG fc6 -> 7x7, fc7/fc8 -> 1x1); at the training size the pool is the identity.
    * children ending in ``avgpool`` -> ``fc`` (ResNet, ResNeXt, RegNet): the trunk is the
      preceding children in definition order (the order their ``forward`` runs them).
    * children ending in ``_avg_pooling`` -> ``_dropout`` -> ``_fc`` with an
      ``extract_features(x)`` method (``efficientnet_pytorch`` layout, fcnkit's
      EfficientNet-Lite0): the trunk is a copy running ``extract_features``, the head
      ``_dropout``, ``_fc``.

    Global pooling (``AdaptiveAvgPool2d(1)``) does not slide, so ``global_pool`` decides:
    ``"window"`` (default) replaces it by a stride-1 ``AvgPool2d(pool_size)``, the pool the
    classifier applied at its training size (7 = 224 px / stride 32): the output cell
    ``(i, j)`` is the classifier's score of the input window at ``(32 i, 32 j)``.
    ``"none"`` drops the pooling and scores every feature cell (the FCN head); for a single
    ``Linear`` head the spatial mean of that map equals the logits at any input size.

    Returns ``Sequential(features, [pool,] classifier)``; the input's own modules are copied,
    never shared. The classifier's ``forward`` must be these modules in this order (true for
    the torchvision classes named above, not for GoogLeNet/Inception with auxiliary heads).
    """
    if global_pool not in ("window", "none"):
        raise ValueError(f"global_pool must be 'window' or 'none', got {global_pool!r}")
    children = OrderedDict(classifier.named_children())
    names = list(children)
    if {"features", "avgpool", "classifier"} <= set(names):
        trunk = copy.deepcopy(children["features"])
        pool, head = children["avgpool"], children["classifier"]
    elif names[-2:] == ["avgpool", "fc"]:
        trunk = nn.Sequential(
            OrderedDict(
                (n, copy.deepcopy(m)) for n, m in children.items() if n not in ("avgpool", "fc")
            )
        )
        pool, head = children["avgpool"], children["fc"]
    elif names[-3:] == ["_avg_pooling", "_dropout", "_fc"] and callable(
        getattr(classifier, "extract_features", None)
    ):
        trunk = _ExtractFeatures(classifier)
        pool, head = children["_avg_pooling"], nn.Sequential(children["_dropout"], children["_fc"])
    else:
        raise TypeError(
            f"cannot convolutionalize {type(classifier).__name__}: expected children "
            "'features', 'avgpool', 'classifier' (VGG/AlexNet/MobileNet style), ending in "
            "'avgpool', 'fc' (ResNet style) or in '_avg_pooling', '_dropout', '_fc' with an "
            "extract_features method (efficientnet_pytorch style)"
        )
    if not isinstance(pool, nn.AdaptiveAvgPool2d):
        raise TypeError(f"expected avgpool to be nn.AdaptiveAvgPool2d, got {type(pool).__name__}")
    layers = _head_layers(head)
    oh, ow = _pair(pool.output_size)
    in_features = _first_linear(layers).in_features
    if in_features % (oh * ow):
        raise ValueError(f"first Linear's {in_features} inputs do not split into {oh}x{ow} cells")
    in_shape = (in_features // (oh * ow), oh, ow)

    modules: OrderedDict[str, nn.Module] = OrderedDict(features=trunk)
    if (oh, ow) == (1, 1) and global_pool == "window":
        modules["pool"] = nn.AvgPool2d(pool_size, stride=1)
    modules["classifier"] = _convolutionalize_head(layers, in_shape)
    return nn.Sequential(modules)


# ---------------------------------------------------------------------------------------
# Transplanting parameters (fc <-> conv), staged training (Sec. 4.2), class-count changes


@dataclass
class TransplantReport:
    """What :func:`transplant` did, key by key (destination names)."""

    copied: list[str] = field(default_factory=list)
    reshaped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason
    missing: list[str] = field(default_factory=list)  # in the destination only: left as is
    unused: list[str] = field(default_factory=list)  # in the source only

    @property
    def loaded(self) -> list[str]:
        """Destination keys that received values (copied or reshaped)."""
        return self.copied + list(self.reshaped)

    def __str__(self) -> str:
        lines = [
            f"transplant: {len(self.copied)} copied, {len(self.reshaped)} reshaped, "
            f"{len(self.skipped)} skipped, {len(self.missing)} missing, "
            f"{len(self.unused)} unused"
        ]
        for key, (old, new) in self.reshaped.items():
            lines.append(f"  reshaped {key}: {tuple(old)} -> {tuple(new)}")
        for key, reason in self.skipped.items():
            lines.append(f"  skipped {key}: {reason}")
        if self.missing:
            lines.append(f"  missing (left as initialised): {', '.join(self.missing)}")
        if self.unused:
            lines.append(f"  unused source keys: {', '.join(self.unused)}")
        return "\n".join(lines)


def _state_of(src: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return src.state_dict() if isinstance(src, nn.Module) else src


def _fc_conv_pair(a: torch.Size, b: torch.Size) -> bool:
    """``out x in`` (Linear) vs ``out x C x kh x kw`` (conv) with ``in == C kh kw``."""
    if sorted((len(a), len(b))) != [2, 4] or a[0] != b[0]:
        return False
    return math.prod(a) == math.prod(b)


@torch.no_grad()
def transplant(
    src: nn.Module | Mapping[str, torch.Tensor],
    dst: nn.Module,
    *,
    rename: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> TransplantReport:
    """Copy parameters and buffers from ``src`` into ``dst`` by name (net surgery, Sec. 3.1).

    A Linear weight ``out x in`` and a conv weight ``out x C x kh x kw`` with
    ``in == C kh kw`` are reshaped into each other in PyTorch's flattening order, so the
    fully connected and convolutional forms of a layer convert both ways (``fc6.weight``
    ``4096 x 25088`` <-> ``4096 x 512 x 7 x 7``, see :func:`linear_to_conv`). Other
    mismatches are skipped with a reason. Values are copied into ``dst``'s own tensors
    (``copy_``), never shared with ``src``.

    Args:
        src: a module or a state dict.
        dst: the module to fill, in place.
        rename: maps source keys to destination keys (a dict, or a function returning
            ``None`` to drop a key); keys it does not name are used unchanged.
    """
    target = dst.state_dict()
    report = TransplantReport()
    seen: set[str] = set()
    for src_key, value in _state_of(src).items():
        key: str | None = src_key
        if callable(rename):
            key = rename(src_key)
        elif rename is not None:
            key = rename.get(src_key, src_key)
        if key is None or key not in target:
            report.unused.append(src_key)
            continue
        seen.add(key)
        out = target[key]
        if value.shape == out.shape:
            out.copy_(value)
            report.copied.append(key)
        elif _fc_conv_pair(value.shape, out.shape):
            out.copy_(value.reshape(out.shape))
            report.reshaped[key] = (tuple(value.shape), tuple(out.shape))
        elif value.numel() == out.numel():
            report.skipped[key] = (
                f"shape {tuple(value.shape)} has as many elements as {tuple(out.shape)} "
                "but is not the fully connected / convolutional form of it"
            )
        else:
            report.skipped[key] = (
                f"shape {tuple(value.shape)} does not fit {tuple(out.shape)} "
                f"({value.numel()} vs {out.numel()} elements)"
            )
    report.missing = [k for k in target if k not in seen]
    return report


def _parent_and_attr(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


@torch.no_grad()
def init_from(parent: nn.Module, child: nn.Module) -> TransplantReport:
    """Staged initialisation (Sec. 4.2): FCN-16s from FCN-32s, FCN-8s from FCN-16s.

    Every layer the two nets share by name is copied from ``parent``; the child's new
    layers are initialised as the paper prescribes: score layers (``score*``) to zero,
    transposed convolutions (``upscore*``) to bilinear interpolation. ``child`` is changed
    in place; the returned report lists what was copied and what is new (``missing``).

    The staged child reproduces its parent only in part. With ``score_pool4`` zero, the
    FCN-16s output is ``upscore16(upscore2(score_fr))``; two bilinear stages (x2 then
    x16) equal one x32 stage only where the x2 samples on both sides of a pixel lie on the
    same linear piece of the x32 interpolant. Each x32 piece has a kink at every score
    cell's centre, between two x2 samples, so the two agree exactly on pixels farther than
    8 px from every kink (in the paper nets' geometry: output rows/columns ``y`` with
    ``y mod 32`` in ``0..4`` or ``21..31``) and differ by a multiple of the score map's
    second difference elsewhere. No choice of 4x4 and 32x32 kernels can do better: their
    composite 80-tap filter would have to equal the 64-tap x32 filter shifted by 8, and
    that filter has no factor in ``z^16`` of degree 3. FCN-8s vs FCN-16s likewise agree
    for ``y mod 16`` in ``{0}`` or ``9..15``. Everything else (trunk, ``score_fr``,
    ``score_pool4``) carries over exactly.
    """
    report = transplant(parent, child)
    new_modules = {k.rpartition(".")[0] for k in report.missing}
    for name in sorted(new_modules):
        if not name:
            continue
        module = child.get_submodule(name)
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.ConvTranspose2d):
            init_bilinear_(module)
        elif leaf.startswith("score") and isinstance(module, nn.Conv2d):
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return report


def _score_layer_names(model: nn.Module, num_classes: int) -> list[str]:
    """Score convolutions (``*score*``) and C->C upsamplers with ``num_classes`` channels."""
    names = []
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(module, nn.ConvTranspose2d):
            if module.in_channels == module.out_channels == num_classes:
                names.append(name)
        elif (
            isinstance(module, nn.Conv2d) and "score" in leaf and module.out_channels == num_classes
        ):
            names.append(name)
    return names


def _class_map(keep: Mapping[int, int] | int | None, old: int, new: int) -> dict[int, int]:
    if keep is None:
        keep = min(old, new)
    mapping = {i: i for i in range(keep)} if isinstance(keep, int) else dict(keep)
    for n, o in mapping.items():
        if not (0 <= n < new and 0 <= o < old):
            raise ValueError(f"keep maps new class {n} to old class {o}: out of range")
    return mapping


@torch.no_grad()
def resize_score_layer(
    model: nn.Module,
    num_classes: int,
    *,
    layers: str | Sequence[str] | None = None,
    keep: Mapping[int, int] | int | None = None,
) -> nn.Module:
    """Change the class count of score layers in place, keeping shared classes' weights.

    Args:
        model: the network; its modules are replaced (same type, device, dtype and
            ``requires_grad``).
        num_classes: the new class count.
        layers: module names to resize. ``None``: every score convolution (a ``Conv2d``
            whose name contains ``score``) and every class-to-class transposed convolution
            whose channel count is ``model.num_classes``; ``model.num_classes`` is updated.
        keep: new class index -> old class index whose weights it keeps (e.g. VOC to
            person-vs-background ``{0: 0, 1: 15}``), or ``n``: the first ``n`` classes;
            default ``min(old, new)``.

    New classes' score weights and biases are zero (Sec. 4.3); an upsampler keeps its
    weights between kept classes and gets the bilinear kernel for new classes (Sec. 3.3).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if layers is None:
        old_classes = getattr(model, "num_classes", None)
        if not isinstance(old_classes, int):
            raise ValueError("model has no integer num_classes: pass layers=[...]")
        names = _score_layer_names(model, old_classes)
        if not names:
            raise ValueError(f"no score layer with {old_classes} classes found")
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no layer named {name!r}") from None
        if isinstance(module, nn.ConvTranspose2d):
            new_module = _resize_upsampler(module, num_classes, keep)
        elif isinstance(module, nn.Conv2d):
            new_module = _resize_score(module, num_classes, keep)
        else:
            raise TypeError(f"{name} is a {type(module).__name__}, not a Conv2d/ConvTranspose2d")
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, new_module)
    if layers is None:
        model.num_classes = num_classes
    return model


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    for p_new, p_old in zip(new.parameters(), old.parameters(), strict=True):
        p_new.requires_grad_(p_old.requires_grad)
    return new


def _resize_score(conv: nn.Conv2d, num_classes: int, keep) -> nn.Conv2d:
    if conv.groups != 1:
        raise ValueError("grouped score convolutions are not supported")
    mapping = _class_map(keep, conv.out_channels, num_classes)
    new = nn.Conv2d(
        conv.in_channels,
        num_classes,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    _like(new, conv)
    nn.init.zeros_(new.weight)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    for n, o in mapping.items():
        new.weight[n].copy_(conv.weight[o])
        if new.bias is not None:
            new.bias[n].copy_(conv.bias[o])
    return new


def _resize_upsampler(up: nn.ConvTranspose2d, num_classes: int, keep) -> nn.ConvTranspose2d:
    if up.in_channels != up.out_channels or up.groups != 1:
        raise ValueError("only ungrouped class-to-class transposed convolutions can be resized")
    mapping = _class_map(keep, up.in_channels, num_classes)
    new = nn.ConvTranspose2d(
        num_classes,
        num_classes,
        up.kernel_size,
        up.stride,
        up.padding,
        up.output_padding,
        bias=up.bias is not None,
        dilation=up.dilation,
    )
    _like(new, up)
    if new.kernel_size[0] == new.kernel_size[1]:
        init_bilinear_(new)
    else:
        nn.init.zeros_(new.weight)
    new_idx = torch.tensor(list(mapping), dtype=torch.long)
    old_idx = torch.tensor(list(mapping.values()), dtype=torch.long)
    if len(mapping):
        new.weight[new_idx[:, None], new_idx[None, :]] = up.weight[old_idx[:, None], old_idx]
        if new.bias is not None:
            new.bias[new_idx] = up.bias[old_idx]
    return new
