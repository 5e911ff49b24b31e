"""Loading weights into a built model: ``load_weights(model, spec)``.

``spec`` is a known entry name (:mod:`fcnkit.weights.entries`), a :class:`WeightEntry` or a
local file: ``.pt``/``.pth`` (an fcnkit checkpoint, a state dict of the model, a torchvision
VGG16 or an ``efficientnet_pytorch`` EfficientNet-Lite0 state dict), ``.caffemodel`` (read
without Caffe, :mod:`fcnkit.weights.caffe`) or ``.h5`` (HED weights). Every file loads with
``weights_only=True``. The weights decide ``model.preprocessing``. Entries are checked against
the model they load into (:func:`compatible`: model name and, for NYUD nets, the modality).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnkit.models.efficientnet import EfficientNetLite
from fcnkit.preprocessing import Preprocessing, get_preprocessing
from fcnkit.weights.caffe import _trunk_suffixes, load_caffemodel
from fcnkit.weights.checkpoint import (
    SAFETENSORS_SUFFIX,
    is_checkpoint,
    read_safetensors,
    torch_load_error,
)
from fcnkit.weights.download import torchvision_weight_file
from fcnkit.weights.entries import (
    _TV_VGG16_CONV_INDICES,
    SHIPPED_KIND,
    VGG16_CONVS,
    WeightEntry,
    get_weight_entry,
    list_weights,
)
from fcnkit.weights.modality import (
    HHA_TRUNK_FIRST_CONV,
    expand_input_filters,
    hha_trunk_filters,
    load_rgb_weights,
)

# --------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What :func:`load_weights` did: tensors loaded, and model parameters left untouched."""

    source: str
    loaded: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_weights(model: nn.Module, spec: str | os.PathLike | WeightEntry) -> LoadReport:
    """Load ``spec`` (entry name, :class:`WeightEntry` or local file) into ``model``.

    Sets ``model.preprocessing`` from the weights' metadata and ``model.weights`` to the
    entry name or file. Returns a :class:`LoadReport`. An entry must be made for the model
    (:func:`check_compatible`: model name and NYUD modality), else ``ValueError``.
    """
    if isinstance(spec, WeightEntry):
        entry: WeightEntry | None = spec
    elif isinstance(spec, str) and not looks_like_path(spec):
        entry = get_weight_entry(spec)
    else:
        entry = None
    if entry is not None:
        check_compatible(entry, model)
        path = torchvision_weight_file(entry) if entry.kind == "torchvision" else entry.path()
        report = _LOADERS[entry.kind](model, path, entry)
        _set_preprocessing(model, entry.preprocessing, trunk=entry.num_classes is None)
        model.weights = entry.name
        return report
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (known weight names: "
            f"{', '.join(e.name for e in list_weights())})"
        )
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        report = _load_caffemodel(model, path, None)
    elif suffix == ".h5":
        report = _load_hed(model, path, None)
        _set_preprocessing(model, "caffe-voc", trunk=True)
    elif suffix in (".pt", ".pth", SAFETENSORS_SUFFIX):
        report = _load_torch_file(model, path)
    else:
        raise ValueError(
            f"{path}: unknown weights file type {suffix!r}; expected .pt/.pth/.safetensors "
            "(fcnkit checkpoint or state dict), .caffemodel or .h5 (HED)"
        )
    model.weights = str(path)
    return report


def looks_like_path(spec: str) -> bool:
    """Whether a weights spec names a file (a separator or a weights suffix), not an entry."""
    return os.sep in spec or "/" in spec or Path(spec).suffix.lower() in (
        ".pt", ".pth", ".caffemodel", ".h5", SAFETENSORS_SUFFIX,
    )  # fmt: skip


def _set_preprocessing(model: nn.Module, name: str, *, trunk: bool) -> None:
    """Use the weights' preprocessing, except that Caffe-convention *trunk* weights (no score
    layer of their own) keep a Caffe-convention model's dataset input: the reference
    subtracts the dataset's own mean (VOC, SIFT Flow, NYUD colour, HHA in file order,
    log-depth) when fine-tuning from ImageNet VGG16."""
    new = get_preprocessing(name)
    old = getattr(model, "preprocessing", None)
    if trunk and _is_caffe_convention(new) and old is not None and _is_caffe_convention(old):
        return
    model.preprocessing = new


def _is_caffe_convention(p: Preprocessing) -> bool:
    """0..255 minus a mean, unit std on the image channels: the reference's input. Any
    channel order (colour BGR, HHA as in the file); extra channels may be scaled (the RGB-D
    depth code becomes the reference's log-depth)."""
    return p.scale == 255.0 and all(s == 1.0 for s in p.std[:3])


def _torch_load(path: Path) -> Any:
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(torch_load_error(path, err, "a state dict of tensors")) from err


# ----- EfficientNet-Lite0/1/2 (pip package files) -----------------------------------------


def _load_efficientnet(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    """Load the ``efficientnet_pytorch``-layout state dict into every EfficientNet-Lite in
    ``model``: strictly, classifier ``_fc`` included where the module keeps a 1000-class one."""
    nets = [(n, m) for n, m in model.named_modules() if isinstance(m, EfficientNetLite)]
    if not nets:
        variant = entry.name.removeprefix("efficientnet_").split("-")[0] if entry else "lite"
        net = f"EfficientNet-{variant.capitalize()}"
        raise ValueError(
            f"{path}: {net} weights need a model with an {net} backbone "
            f"(fcn*-efficientnet_{variant}), not {getattr(model, 'model_name', model)}"
        )
    state = _torch_load(path)
    return _load_efficientnet_state(model, nets, state, str(path))


def _load_efficientnet_state(
    model: nn.Module, nets: list[tuple[str, nn.Module]], state: Mapping, source: str
) -> LoadReport:
    report = LoadReport(source)
    for prefix, net in nets:
        own = net.state_dict()
        wanted = dict(state)
        if not isinstance(net._fc, nn.Linear) or net._fc.out_features != 1000:
            wanted = {k: v for k, v in wanted.items() if not k.startswith("_fc.")}
            report.notes.append(f"{prefix or 'model'}: ImageNet classifier _fc not used")
        missing = sorted(set(own) - set(wanted))
        unexpected = sorted(set(wanted) - set(own))
        wrong = [k for k in own if k in wanted and wanted[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"{source} does not fit EfficientNet-{net.variant.capitalize()} "
                f"({prefix or 'model'}): missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
            )
        net.load_state_dict(wanted, strict=True)
        report.loaded += [f"{prefix}.{k}" if prefix else k for k in wanted]
    report.untouched = _untouched(model, report.loaded)
    return report


# ----- HED VGG16 (h5) ----------------------------------------------------------------------


def read_hed_h5(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 13 VGG16 convolutions of a HED ``.weights.h5`` as PyTorch ``(weight, bias)`` by
    Caffe name (``conv1_1`` ... ``conv5_3``); Keras ``kh x kw x in x out`` kernels are
    transposed to ``out x in x kh x kw``. The HED side outputs (``dsn*``, ``fuse``) are not read.
    """
    import h5py

    path = Path(path)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file: {err}") from err
    with f:
        for block in range(1, 6):
            group = f.get(f"block{block}/layers")
            if group is None:
                raise ValueError(f"{path}: no group block{block}/layers (not HED VGG16 weights)")
            for key in group:
                vars_ = group[key].get("vars")
                name = vars_.attrs.get("name", "") if vars_ is not None else ""
                if isinstance(name, bytes):
                    name = name.decode()
                if not name.startswith(f"block{block}_conv"):
                    continue  # pooling layers
                caffe = f"conv{block}_{name[len(f'block{block}_conv') :]}"
                kernel, bias = np.asarray(vars_["0"]), np.asarray(vars_["1"])
                if kernel.ndim != 4 or bias.shape != (kernel.shape[3],):
                    raise ValueError(
                        f"{path}: {group.name}/{key} ({name}) has kernel {kernel.shape} and bias "
                        f"{bias.shape}; expected kh x kw x in x out and out"
                    )
                weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
                out[caffe] = (weight, torch.from_numpy(bias.copy()))
    if sorted(out) != sorted(VGG16_CONVS):
        raise ValueError(f"{path}: found convolutions {sorted(out)}, expected {list(VGG16_CONVS)}")
    return out


def _load_hed(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    convs = read_hed_h5(path)
    report = _copy_trunk(model, convs, str(path), channel_order="BGR")
    report.notes.append("HED edge-detection weights (not the ImageNet classifier); fc6/fc7 fresh")
    return report


def _copy_trunk(
    model: nn.Module,
    tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    source: str,
    *,
    channel_order: str,
) -> LoadReport:
    """Copy ``{caffe name: (weight, bias)}`` into the model's trunk(s), shapes checked.

    ``channel_order`` is the input order the weights were trained on (``"BGR"``: HED, Caffe;
    ``"RGB"``: torchvision). Late-fusion models get the trunk in each suffixed copy
    (``conv1_1color``, ``conv1_1hha``). The first convolution of an HHA trunk (``conv1_1hha``,
    or ``conv1_1`` of a ``modality="hha"`` net) goes through
    :func:`fcnkit.weights.modality.hha_trunk_filters`: BGR-trained filters unchanged, as the
    reference initialises its HHA nets (HHA channel k meets BGR filter k), RGB-trained ones
    reversed into that pairing. A ``conv1_1`` with more input channels (RGB-D) is widened by
    :func:`fcnkit.weights.modality.expand_input_filters` (each extra input channel gets the
    mean of the RGB filters, as the reference's ``nyud-fcn32s-color-d/solve.py``).
    """
    own = model.state_dict()
    suffixes = _trunk_suffixes(own) if "conv1_1.weight" not in own else [""]
    hha_first = "conv1_1.weight" if model_modality(model) == "hha" else HHA_TRUNK_FIRST_CONV
    if not suffixes or not all(f"{n}{s}.weight" in own for n in tensors for s in suffixes):
        missing = [f"{n}.weight" for n in tensors if f"{n}.weight" not in own]
        raise ValueError(
            f"{source}: VGG16 trunk weights need a VGG16 FCN with Caffe parameter names "
            f"(conv1_1 ... conv5_3); {getattr(model, 'model_name', type(model).__name__)} "
            f"has no {', '.join(missing[:3])}"
        )
    report = LoadReport(source)
    new: dict[str, torch.Tensor] = {}
    for suffix in suffixes:
        for name, (weight, bias) in tensors.items():
            key = f"{name}{suffix}"
            dst_w, dst_b = own[f"{key}.weight"], own[f"{key}.bias"]
            if name == "conv1_1" and dst_w.dim() == 4 and dst_w.shape[1] > weight.shape[1] == 3:
                weight = expand_input_filters(weight, dst_w.shape[1])
                report.notes.append(f"{key}: extra input channels = mean of the RGB filters")
            if f"{key}.weight" == hha_first:
                weight = hha_trunk_filters(weight, channel_order)
                if channel_order == "RGB":
                    report.notes.append(
                        f"{key}: input channels reversed (RGB-trained filters; the reference "
                        "pairs HHA channel k with BGR filter k)"
                    )
            weight = _reshape_like(weight, dst_w, f"{source}: {key}.weight")
            if bias.shape != dst_b.shape:
                raise ValueError(
                    f"{source}: {key}.bias has {tuple(bias.shape)}, model {tuple(dst_b.shape)}"
                )
            new[f"{key}.weight"], new[f"{key}.bias"] = weight, bias
    model.load_state_dict(new, strict=False)
    report.loaded = sorted(new)
    report.untouched = _untouched(model, report.loaded)
    return report


def _reshape_like(src: torch.Tensor, dst: torch.Tensor, what: str) -> torch.Tensor:
    """Same shape, or a fully connected ``out x in`` into a conv ``out x c x kh x kw``."""
    if src.shape == dst.shape:
        return src.to(dst.dtype)
    fc_to_conv = src.dim() == 2 and dst.dim() == 4 and src.shape[0] == dst.shape[0]
    if fc_to_conv and src.shape[1] == dst.shape[1] * dst.shape[2] * dst.shape[3]:
        return src.reshape(dst.shape).to(dst.dtype)
    raise ValueError(f"{what}: weights have shape {tuple(src.shape)}, model {tuple(dst.shape)}")


def _untouched(model: nn.Module, loaded: list[str]) -> list[str]:
    done = set(loaded)
    return [k for k, _ in model.named_parameters() if k not in done]


# ----- torchvision -------------------------------------------------------------------------

# torchvision VGG16 -> Caffe layer names.
_TV_VGG16 = {
    **{f"features.{i}": name for i, name in zip(_TV_VGG16_CONV_INDICES, VGG16_CONVS, strict=True)},
    "classifier.0": "fc6",
    "classifier.3": "fc7",
}


def torchvision_vgg16_to_caffe(
    state: Mapping[str, torch.Tensor], *, features_only: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """torchvision VGG16 state dict -> ``{caffe name: (weight, bias)}`` (``fc8`` dropped)."""
    out = {}
    for tv, caffe in _TV_VGG16.items():
        if features_only and caffe.startswith("fc"):
            continue
        try:
            out[caffe] = (state[f"{tv}.weight"], state[f"{tv}.bias"])
        except KeyError as err:
            raise ValueError(f"not a torchvision VGG16 state dict: no {err.args[0]}") from None
    return out


def _is_tv_vgg16(state: Mapping[str, Any]) -> bool:
    w = state.get("features.28.weight")
    return isinstance(w, torch.Tensor) and tuple(w.shape) == (512, 512, 3, 3)


_TV_VGG16_FEATURES = "VGG16_Weights.IMAGENET1K_FEATURES"


def _is_tv_vgg16_features(state: Mapping[str, Any], path: Path, entry: WeightEntry | None) -> bool:
    """torchvision's ``IMAGENET1K_FEATURES`` (``vgg16_features-*.pth``): only the convolutions
    are real; its classifier is NaN (or absent)."""
    if entry is not None and entry.torchvision == _TV_VGG16_FEATURES:
        return True
    if path.name.startswith("vgg16_features-"):
        return True
    fc = [state.get(f"{tv}.weight") for tv, caffe in _TV_VGG16.items() if caffe.startswith("fc")]
    return any(w is None or (w.is_floating_point() and bool(torch.isnan(w).any())) for w in fc)


def _load_tv_vgg16(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, entry: WeightEntry | None
) -> LoadReport:
    """A torchvision VGG16 (classifier, or ``IMAGENET1K_FEATURES``: convolutions only) into a
    VGG16 FCN's trunk; sets the matching preprocessing."""
    features_only = _is_tv_vgg16_features(state, path, entry)
    tensors = torchvision_vgg16_to_caffe(state, features_only=features_only)
    report = _copy_trunk(model, tensors, str(path), channel_order="RGB")
    if features_only:
        report.notes.append("torchvision VGG16 features only: fc6/fc7 left as initialised")
    else:
        report.notes.append("fc8 (ImageNet classifier) dropped")
    prep = "torchvision-vgg16-features" if features_only else "torchvision-imagenet"
    _set_preprocessing(model, entry.preprocessing if entry else prep, trunk=True)
    return report


def _load_torchvision(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    state = _torch_load(path)
    if _is_tv_vgg16(state) and any(k.startswith("conv1_1") for k in model.state_dict()):
        return _load_tv_vgg16(model, state, path, entry)
    return _load_into_submodule(model, state, str(path))


_CLASSIFIER_HEADS = ("fc.", "classifier.", "aux1.", "aux2.")


def _load_into_submodule(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Load a classifier's state dict into the submodule whose parameter names end with the
    state dict's names (e.g. a torchvision ResNet-50 held as ``model.backbone``); only the
    classifier layers (``fc``, ``classifier``, ``aux*``) may be left out."""
    own = model.state_dict()
    prefixes = {k[: -len(s)] for s in list(state)[:8] for k in own if k == s or k.endswith("." + s)}

    def fits(prefix: str) -> dict[str, torch.Tensor]:
        """The state's tensors that find a same-shaped parameter under ``prefix``."""
        out = {}
        for k, v in state.items():
            target = own.get(prefix + k)
            if target is not None and target.shape == v.shape:
                out[prefix + k] = v
        return out

    best = max(prefixes, key=lambda p: len(fits(p)), default="")
    usable = fits(best)
    left_out = sorted(k for k in state if best + k not in usable)
    bad = [k for k in left_out if not k.startswith(_CLASSIFIER_HEADS)]
    if not usable or bad:
        raise ValueError(
            f"{source} does not fit {getattr(model, 'model_name', type(model).__name__)}: "
            f"{len(bad or state)} tensors have no same-shaped counterpart "
            f"(e.g. {(bad or list(state))[:4]}); a classifier's state dict loads into a model "
            "holding that classifier as a submodule"
        )
    model.load_state_dict(usable, strict=False)
    report = LoadReport(source, loaded=sorted(usable))
    if left_out:
        report.notes.append(f"classifier tensors not used: {left_out}")
    report.untouched = _untouched(model, report.loaded)
    return report


# ----- Caffe --------------------------------------------------------------------------------


def _load_caffemodel(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    caffe_report = load_caffemodel(model, path)
    report = LoadReport(str(path), loaded=caffe_report.copied, untouched=caffe_report.missing)
    report.notes += (
        caffe_report.skipped + caffe_report.checked + caffe_report.notes + caffe_report.reshaped
    )
    old = getattr(model, "preprocessing", None)
    if entry is None and (old is None or not _is_caffe_convention(old)):
        model.preprocessing = get_preprocessing("caffe-voc")
    return report


# ----- local torch files -------------------------------------------------------------------


def _load_torch_file(model: nn.Module, path: Path) -> LoadReport:
    """An fcnkit checkpoint, the model's own state dict, a torchvision VGG16 (classifier or
    ``vgg16_features-*.pth``) or an EfficientNet-Lite0 state dict. A 3-channel (RGB) net's
    weights load into an early-fusion RGB-D net with ``conv1_1`` widened
    (:func:`fcnkit.weights.modality.load_rgb_weights`)."""
    obj = _torch_load(path)
    if is_checkpoint(obj):
        state = obj["model"]
        name = getattr(model, "model_name", None)
        try:
            widened = _load_full_state(model, state)
        except RuntimeError as err:
            raise ValueError(
                f"{path}: checkpoint of {obj['model_name']!r} ({obj.get('num_classes')} classes) "
                f"does not fit {name!r}: {err}"
            ) from err
        report = LoadReport(str(path), loaded=list(state))
        if widened:  # an RGB net initialising RGB-D: the model keeps its RGB-D preprocessing
            report.notes.append("conv1_1: extra input channels = mean of the RGB filters")
        elif obj.get("preprocessing"):
            model.preprocessing = get_preprocessing(obj["preprocessing"])
        return report
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path}: expected an fcnkit checkpoint or a state dict (name -> tensor), "
            f"got {type(obj).__name__}"
        )
    own = model.state_dict()
    if set(obj) == set(own):
        try:
            _load_full_state(model, obj)
        except RuntimeError as err:
            raise ValueError(f"{path}: state dict does not fit the model: {err}") from err
        return LoadReport(str(path), loaded=list(obj))
    if "_conv_stem.weight" in obj:
        nets = [(n, m) for n, m in model.named_modules() if isinstance(m, EfficientNetLite)]
        if nets:
            report = _load_efficientnet_state(model, nets, obj, str(path))
            model.preprocessing = get_preprocessing("tf-efficientnet-lite")
            return report
    if _is_tv_vgg16(obj) and any(k.startswith("conv1_1") for k in own):
        return _load_tv_vgg16(model, obj, path, None)
    missing = sorted(set(own) - set(obj))
    if set(obj) <= set(own):  # a subset of the model's own names: load it, report the rest
        shapes = [k for k in obj if obj[k].shape != own[k].shape]
        if shapes:
            raise ValueError(f"{path}: shape mismatch for {shapes[:5]}")
        model.load_state_dict(obj, strict=False)
        return LoadReport(str(path), loaded=list(obj), untouched=missing)
    return _load_into_submodule(model, obj, str(path))


def _load_full_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """``load_state_dict(strict=True)``, widening a 3-channel ``conv1_1`` for RGB-D nets;
    returns whether it widened."""
    own = model.state_dict()
    w, dst = state.get("conv1_1.weight"), own.get("conv1_1.weight")
    if w is not None and dst is not None and w.dim() == 4 and w.shape[1] == 3 < dst.shape[1]:
        load_rgb_weights(model, state, strict=True)
        return True
    model.load_state_dict(state, strict=True)
    return False


_LOADERS: dict[str, Callable[[nn.Module, Path, WeightEntry | None], LoadReport]] = {
    "efficientnet-package": _load_efficientnet,
    "hed-package": _load_hed,
    "torchvision": _load_torchvision,
    "caffemodel": _load_caffemodel,
    SHIPPED_KIND: lambda model, path, _entry: _load_torch_file(model, path),  # a safetensors
}


def compatible(entry: WeightEntry, model_name: str, modality: str | None = None) -> bool:
    """Whether ``entry`` is made for ``model_name`` (its ``models`` glob patterns) and, for an
    entry recording a NYUD ``modality``, for a model built with that ``modality`` (``None``:
    not checked)."""
    if not any(fnmatch.fnmatchcase(model_name, p) for p in entry.models):
        return False
    return entry.modality is None or modality is None or modality == entry.modality


def model_modality(model: nn.Module) -> str | None:
    """A NYUD model's ``modality`` (its attribute, else its ``model_options``), or ``None``."""
    modality = getattr(model, "modality", None)
    if modality is None:
        modality = dict(getattr(model, "model_options", {}) or {}).get("modality")
    return modality if isinstance(modality, str) else None


def check_compatible(
    entry: WeightEntry, model: nn.Module | str, modality: str | None = None
) -> None:
    """``ValueError`` unless ``entry`` is made for ``model`` (see :func:`compatible`).

    ``model`` is a model built by ``create_model`` or a model name (then ``modality`` is the
    one it will be built with). Models not built by ``create_model`` (no ``model_name``,
    e.g. a torchvision classifier for ``surgery.convolutionalize``) are not checked here:
    the loaders check their layout.
    """
    if isinstance(model, str):
        name: Any = model
    else:
        name, modality = getattr(model, "model_name", None), model_modality(model)
    if not isinstance(name, str) or compatible(entry, name, modality):
        return
    if entry.modality is not None and any(fnmatch.fnmatchcase(name, p) for p in entry.models):
        raise ValueError(
            f"weights {entry.name!r} are for {name} with modality={entry.modality!r} "
            f"({entry.preprocessing} input), but the model was built with modality={modality!r}: "
            f"build it with create_model({name!r}, modality={entry.modality!r}, ...)"
        )
    made_for = ", ".join(entry.models) or "no fcnkit model"
    raise ValueError(
        f"weights {entry.name!r} are made for {made_for}, not {name!r} ({entry.description})"
    )
