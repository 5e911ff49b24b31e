"""``fcnkit models``: list every registered model with its parameter count.

    fcnkit models [--tag T] [--num-classes N]      every model (or those tagged T)
    fcnkit models NAME                             one model
    fcnkit models NAME --geometry                  its layers' stride, offset, receptive
                                                   field and the crops derived from them

The geometry report answers "how are 19 / 5 / 9 / 31 derived?": each layer's coordinate map
(:mod:`fcnkit.coord_map`, Caffe's ``coord_map``) composed from the image, ``x_image = stride
* x + offset``, and each crop offset ``(offset_reference - offset_source) / stride``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from fcnkit.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the registered models with parameter counts; --geometry: strides, "
        "receptive fields, crop offsets",
    )
    p.add_argument("name", nargs="?", default=None, help="one model (default: every model)")
    p.add_argument("--num-classes", type=int, default=None, help="classes (default: each model's)")
    p.add_argument("--tag", default=None, help="only models with this tag (e.g. paper, modern)")
    p.add_argument(
        "--geometry",
        action="store_true",
        help="with NAME: every layer's stride, offset (the image coordinate of its output "
        "position 0) and receptive field, and how each crop offset follows from them",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnkit.models import build_model, get_model_entry, list_models

    if args.geometry and args.name is None:
        raise CLIError("--geometry needs a model name: fcnkit models fcn8s --geometry")
    if args.name is not None:
        try:
            get_model_entry(args.name)
        except ValueError as err:
            raise CLIError(str(err)) from None
    if args.geometry:
        with torch.device("meta"):
            model = build_model(args.name, args.num_classes)
        print(format_geometry(model_geometry(model), args.name))
        return 0
    names = [args.name] if args.name else list_models(args.tag)
    width = max((len(n) for n in names), default=5)
    print(f"{'model':<{width}}  {'classes':>7}  {'parameters':>13}  description")
    failed = []
    for name in names:
        entry = get_model_entry(name)
        try:
            # Built on the meta device: shapes only, no memory, no initialisation cost.
            with torch.device("meta"):
                model = build_model(name, args.num_classes)
        except Exception as err:  # report every model, then fail
            failed.append(name)
            print(f"{name:<{width}}  {'?':>7}  {'?':>13}  cannot build: {err}")
            continue
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:<{width}}  {model.num_classes:>7}  {n_params:>13,}  {entry.description}")
    if failed:
        print(f"fcnkit: error: cannot build {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------
# the geometry report


@dataclass
class GeometryRow:
    """One layer: its geometry along each axis (height, width), where its input comes from
    and what it is."""

    name: str
    source: str
    kind: str
    axes: tuple[Any, Any]  # (LayerGeometry along the height, along the width)


@dataclass
class Crop:
    """A Caffe ``Crop``: ``source`` cropped to ``reference`` (``None``: the image)."""

    name: str
    source: GeometryRow
    reference: GeometryRow | None
    offsets: tuple[Fraction, Fraction]


@dataclass
class GeometryReport:
    rows: list[GeometryRow] = field(default_factory=list)
    crops: list[Crop] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _parts(module: nn.Module) -> list[list[Any]] | None:
    """Parallel branches of the composite torchvision blocks fcnkit's models hold."""
    from torchvision.models.googlenet import BasicConv2d, Inception
    from torchvision.models.mobilenetv3 import InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops.misc import SqueezeExcitation

    if isinstance(module, BasicConv2d):
        return [[module.conv]]
    if isinstance(module, Inception):
        return [[module.branch1], [module.branch2], [module.branch3], [module.branch4]]
    if isinstance(module, (BasicBlock, Bottleneck)):
        main = [module.conv1, module.conv2] + ([module.conv3] if hasattr(module, "conv3") else [])
        shortcut = [module.downsample] if module.downsample is not None else []
        return [main, shortcut]
    if isinstance(module, InvertedResidual):
        return [[module.block]]
    if isinstance(module, SqueezeExcitation):
        return [[]]  # a per-channel gate computed from the whole map: element-wise here
    return None


def _kind(layer: nn.Module) -> str:
    def pair(value: Any) -> str:
        a, b = value if isinstance(value, tuple) else (value, value)
        return f"{a}x{b}" if a != b else str(a)

    def extras(s: Any, p: Any, d: Any = 1) -> str:
        out = f" s{pair(s)}" if s not in (1, (1, 1)) else ""
        out += f" pad {pair(p)}" if p not in (0, (0, 0)) else ""
        return out + (f" dilation {pair(d)}" if d not in (1, (1, 1)) else "")

    if isinstance(layer, nn.ConvTranspose2d):
        k = layer.kernel_size
        return f"deconv {k[0]}x{k[1]}" + extras(layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        return f"conv {k[0]}x{k[1]}" + extras(layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(layer, nn.MaxPool2d) else "avg"
        k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * 2
        ceil = " ceil" if layer.ceil_mode else ""
        return f"{kind} pool {k[0]}x{k[1]}" + extras(layer.stride, layer.padding) + ceil
    if type(layer).__name__ == "BasicConv2d":  # torchvision GoogLeNet: conv + batch norm
        return _kind(layer.conv) + " +bn"
    if isinstance(layer, nn.Sequential) and len(layer) and isinstance(layer[0], nn.Conv2d):
        return _kind(layer[0]) + (
            " +bn" if any(isinstance(m, nn.BatchNorm2d) for m in layer) else ""
        )
    if isinstance(layer, nn.Sequential) and len({type(m) for m in layer}) == 1:
        return f"{len(layer)} x {type(layer[0]).__name__}"
    return type(layer).__name__


def _element_wise(layer: nn.Module) -> bool:
    from fcnkit.coord_map import PASS_THROUGH
    from fcnkit.models.vgg import FixedScale

    return isinstance(layer, (*PASS_THROUGH, FixedScale))


class _Tracer:
    """Builds a :class:`GeometryReport` path by path, along both axes at once."""

    def __init__(self) -> None:
        self.report = GeometryReport()
        self.at: dict[str, GeometryRow] = {}
        self.blob: dict[str, str] = {}  # layer -> the blob its output is known by

    def path(
        self, layers: list[tuple[str, nn.Module]], start: str | None = None, label: str = ""
    ) -> None:
        """Trace ``layers`` from the image or from layer ``start``'s output; ``label`` names
        that input in the report (default: the last layer shown before it, as Caffe names
        the blob an in-place ReLU or dropout writes)."""
        from fcnkit.coord_map import trace_geometry

        begin = self.at[start] if start is not None else None
        per_axis = [
            trace_geometry(layers, begin.axes[axis] if begin else None, axis, _parts)
            for axis in (0, 1)
        ]
        source = label or (self.blob[start] if start is not None else "data")
        for (name, layer), h, w in zip(layers, *per_axis, strict=True):
            row = GeometryRow(name, source, _kind(layer), (h, w))
            self.at[name] = row
            if not _element_wise(layer):
                self.report.rows.append(row)
                source = name
            self.blob[name] = source

    def crop(self, name: str, source: str, reference: str | None) -> Fraction:
        from fcnkit.coord_map import crop_between

        src = self.at[source]
        ref = self.at[reference] if reference is not None else None
        offsets = tuple(crop_between(src.axes[a], ref.axes[a] if ref else None) for a in (0, 1))
        self.report.crops.append(Crop(name, src, ref, offsets))  # type: ignore[arg-type]
        return offsets[0]


def _check_crops(report: GeometryReport, model: nn.Module) -> None:
    """The report's crops must be the model's own (derived by the model's code)."""
    derived = getattr(model, "crop_offsets", {})
    for crop in report.crops:
        own = derived.get(crop.name)
        if own is not None and any(o != own for o in crop.offsets):
            raise RuntimeError(f"{crop.name}: report says {crop.offsets}, model uses {own}")


def _vgg(model: nn.Module) -> GeometryReport:
    from fcnkit.models.vgg import vgg16_layers

    t, h = model.trunks[0], next(iter(model.heads))
    tr = _Tracer()
    trunk = [n for n, _ in vgg16_layers()]
    tr.path([(n + t, getattr(model, n + t)) for n in trunk])
    tr.path([(f"score_fr{h}{t}", getattr(model, f"score_fr{h}{t}"))], f"drop7{t}")
    coarse, fused = f"score_fr{h}{t}", ""
    scale = {
        4: [("scale_pool4", model.scale_pool4)] if hasattr(model, "scale_pool4") else [],
        3: [("scale_pool3", model.scale_pool3)] if hasattr(model, "scale_pool3") else [],
    }
    for pool, up in ((4, f"upscore2{h}"), (3, f"upscore_pool4{h}")):
        if model.stride > 2**pool:
            break
        tr.path([(up, getattr(model, up))], coarse, label=fused)
        skip = f"score_pool{pool}{h}{t}"
        tr.path([*scale[pool], (skip, getattr(model, skip))], f"pool{pool}{t}")
        tr.crop(f"score_pool{pool}c", skip, up)
        # fuse_pool4 = upscore2 + score_pool4c: the crop puts both on one grid, centred alike
        coarse, fused = up, f"fuse_pool{pool}{h}"
    final = {32: "upscore", 16: "upscore16", 8: "upscore8"}[model.stride] + h
    tr.path([(final, getattr(model, final))], coarse, label=fused)
    tr.crop("score", final, None)
    report = tr.report
    if len(model.trunks) > 1:
        report.notes.append(
            f"shown: trunk {t!r}; the trunks {', '.join(map(repr, model.trunks))} have the "
            "same geometry (their scores are summed before the upsamplers)"
        )
    if len(model.heads) > 1:
        report.notes.append(
            f"shown: head {h!r}; the heads {', '.join(map(repr, model.heads))} have the same "
            "geometry and crops"
        )
    return report


def _sequential(model: nn.Module, crop_from: str) -> GeometryReport:
    """A model whose children run in order (FCN-AlexNet, FCN-GoogLeNet), cropped once."""
    tr = _Tracer()
    tr.path(list(model.named_children()))
    tr.crop("score", crop_from, None)
    return tr.report


def _modern(model: nn.Module) -> GeometryReport:
    from fcnkit.models.modern import FeatureTaps

    backbone = model.backbone
    if not isinstance(backbone, FeatureTaps):
        raise CLIError(
            f"{type(backbone).__name__} has no static coordinate map: its TensorFlow 'SAME' "
            "padding moves each cell's centre with the input size (see its feature_offsets "
            "and fcnkit.models.efficientnet)"
        )
    tr = _Tracer()
    tr.path(list(backbone.named_children()))
    taps = {stride: name for name, stride in backbone.taps.items()}
    heads = [(32, "score_fr"), (16, "score_pool4"), (8, "score_pool3")]
    for stride, head in heads:
        if stride < model.stride:
            break
        tr.path([(head, getattr(model, head))], taps[stride])
    for stride, (bh, bw) in sorted(backbone.offsets.items(), reverse=True):
        row = tr.at[taps[stride]]
        if (row.axes[0].offset, row.axes[1].offset) != (bh, bw):
            raise RuntimeError(f"{taps[stride]}: offsets disagree with the backbone's")
    tr.report.notes.append(
        "no crops: score cell i of stride s is placed on image pixel s * i + offset (the "
        "offsets above) by edge-clamped bilinear upsampling (fcnkit.models.modern)"
    )
    if any("SqueezeExcitation" in type(m).__name__ for m in backbone.modules()):
        tr.report.notes.append(
            "squeeze-and-excitation gates see the whole map; the fields shown are the "
            "convolutions' local ones"
        )
    return tr.report


def model_geometry(model: nn.Module) -> GeometryReport:
    """Every layer's stride, offset and receptive field, and the derived crops."""
    from fcnkit.models.alexnet import FCNAlexNet
    from fcnkit.models.googlenet import FCNGoogLeNet
    from fcnkit.models.modern import ModernFCN
    from fcnkit.models.vgg import FCN

    if isinstance(model, FCN):
        report = _vgg(model)
    elif isinstance(model, (FCNAlexNet, FCNGoogLeNet)):
        report = _sequential(model, "upscore")
    elif isinstance(model, ModernFCN):
        report = _modern(model)
    else:
        raise CLIError(f"no geometry report for {type(model).__name__}")
    _check_crops(report, model)
    return report


def _num(value: Fraction) -> str:
    """Exact: an integer, a terminating decimal, or ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    return f"{float(value):g}" if d == 1 else f"{value.numerator}/{value.denominator}"


def _paren(value: Fraction) -> str:
    return f"({_num(value)})" if value < 0 else _num(value)


def format_geometry(report: GeometryReport, name: str) -> str:
    """The report as text (one axis when both agree, else height then width)."""
    alike = all(r.axes[0] == r.axes[1] for r in report.rows)
    axes = [(0, "")] if alike else [(0, " (height)"), (1, " (width)")]
    lines = [
        f"{name}: geometry of each layer along "
        + ("each spatial axis (the two agree)" if alike else "the height, then the width"),
        "  stride: image pixels per step of the layer's output",
        "  offset: image coordinate of output position 0, its receptive field's centre "
        "(x_image = stride * x + offset)",
        "  field:  receptive field, image pixels (element-wise layers are left out)",
    ]
    wn = max(12, *(len(r.name) for r in report.rows))
    ws = max(8, *(len(r.source) for r in report.rows))
    wk = max(12, *(len(r.kind) for r in report.rows))
    for axis, label in axes:
        lines.append("")
        head = f"{'layer':<{wn}}  {'input':<{ws}}  {'type':<{wk}}  {'stride':>7}  {'offset':>8}"
        lines.append(head + f"  {'field':>6}{label}")
        for r in report.rows:
            g = r.axes[axis]
            lines.append(
                f"{r.name:<{wn}}  {r.source:<{ws}}  {r.kind:<{wk}}  {_num(g.stride):>7}  "
                f"{_num(g.offset):>8}  {_num(g.field):>6}"
            )
        if report.crops:
            lines.append("")
            lines.append(
                "crops" + label + ": both blobs mapped onto the image; the reference starts at "
                "(offset_reference - offset_source) / stride of the source"
            )
            for c in report.crops:
                src = c.source.axes[axis]
                ref = c.reference.axes[axis].offset if c.reference else Fraction(0)
                target = c.reference.name if c.reference else "data (the image)"
                lines.append(
                    f"  {c.name:<13} {c.source.name} -> {target}: ({_num(ref)} - "
                    f"{_paren(src.offset)}) / {_num(src.stride)} = {_num(c.offsets[axis])}"
                )
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
