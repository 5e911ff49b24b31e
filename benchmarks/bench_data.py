"""Data-loading throughput of every dataset reader against a model's training step rate.

Run from the repository root::

    python -m benchmarks.bench_data                      # every registered dataset
    python -m benchmarks.bench_data --datasets synthetic voc --workers 4 --crop-size 320
    python -m benchmarks.bench_data --model fcn8s --batch-size 1 --no-crop   # paper setting

For each reader it measures samples/s of ``DataLoader(TransformedDataset(reader,
build_transforms(True, model.preprocessing, ...)), num_workers=W, collate_fn=collate_pad)``,
i.e. decoding plus the training transforms with the configured worker count (default: the
engine's ``data.num_workers``). Readers that need files get a small dataset written in a
temporary folder in their exact on-disk format at the dataset's native image size (the
content comes from the synthetic dataset); SIFT Flow reads the real copy under
``../shared/data/siftflow`` (or ``$FCNKIT_SHARED_DATA``) when present. Small generated sets
sit in the OS file cache, so these numbers exclude disk reads.

The model row is the training step rate (forward, backward, SGD step) at the crop size and
batch size; a reader whose samples/s is below the model's would starve training on this
machine with this worker count. This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

from fcnkit.data import build_transforms, collate_pad, create_dataset, list_datasets
from fcnkit.data.synthetic import SyntheticShapes
from fcnkit.data.transforms import TransformedDataset

SHARED_DATA = Path(
    os.environ.get("FCNKIT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared/data")
)
# Native (H, W) of each dataset's images.
NATIVE_SIZE = {
    "voc": (375, 500),
    "sbd": (375, 500),
    "siftflow": (256, 256),
    "nyud": (425, 560),
    "camvid": (360, 480),
    "cityscapes": (1024, 2048),
    "folder": (512, 512),
}


def _content(
    n: int, size: tuple[int, int], num_classes: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (RGB uint8 H x W x 3, class map uint8 H x W in 0..num_classes-1) pairs."""
    h, w = size
    base = SyntheticShapes("test", size=(min(h, 512), min(w, 512)))
    out = []
    for i in range(n):
        img, lab = base.generate(i)
        if (h, w) != img.shape[:2]:
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            lab = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
        out.append((img, (lab.astype(np.int64) * 3 % num_classes).astype(np.uint8)))
    return out


def _save_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if palette is not None:
        im = im.convert("P")
        im.putpalette(palette)
    im.save(path)


def _save_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=90)


def _write_list(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def make_voc(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    year = root / "VOCdevkit" / "VOC2012"
    palette = [c for i in range(256) for c in _voc_colour(i)]
    names = [f"2012_{i:06d}" for i in range(n)]
    for name, (img, lab) in zip(names, _content(n, size, 21), strict=True):
        lab = lab.copy()
        lab[::37] = 255  # some ignore rows, like the boundary band
        _save_jpg(year / "JPEGImages" / f"{name}.jpg", img)
        _save_png(year / "SegmentationClass" / f"{name}.png", lab, palette)
    _write_list(year / "ImageSets" / "Segmentation" / "train.txt", names)
    return root / "VOCdevkit", {"split": "train"}


def _voc_colour(i: int) -> tuple[int, int, int]:
    r = g = b = 0
    for k in range(8):
        r |= ((i >> 0) & 1) << (7 - k)
        g |= ((i >> 1) & 1) << (7 - k)
        b |= ((i >> 2) & 1) << (7 - k)
        i >>= 3
    return r, g, b


def make_sbd(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    import scipy.io

    ds = root / "dataset"
    names = [f"2008_{i:06d}" for i in range(n)]
    for name, (img, lab) in zip(names, _content(n, size, 21), strict=True):
        _save_jpg(ds / "img" / f"{name}.jpg", img)
        (ds / "cls").mkdir(parents=True, exist_ok=True)
        gt = {"Segmentation": lab, "Boundaries": np.zeros((21, 1), object)}
        scipy.io.savemat(ds / "cls" / f"{name}.mat", {"GTcls": gt})
    _write_list(ds / "train.txt", names)
    return ds, {"split": "train"}


def make_siftflow(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    real = SHARED_DATA / "siftflow"
    if (real / "Images").is_dir():
        return real, {"split": "trainval", "_source": f"real ({real})"}
    import scipy.io

    sub = "spatial_envelope_256x256_static_8outdoorcategories"
    names = [f"coast_n{i:06d}" for i in range(n)]
    for name, (img, lab) in zip(names, _content(n, size, 34), strict=True):
        _save_jpg(root / "Images" / sub / f"{name}.jpg", img)
        (root / "SemanticLabels" / sub).mkdir(parents=True, exist_ok=True)
        (root / "GeoLabels" / sub).mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(
            root / "SemanticLabels" / sub / f"{name}.mat", {"S": lab.astype(np.uint16)}
        )
        geo = (lab.astype(np.int16) % 4) - 1  # -1 void, 1..3 -- plus some 0 rows below
        scipy.io.savemat(root / "GeoLabels" / sub / f"{name}.mat", {"S": geo})
    _write_list(root / "trainval.txt", names)
    _write_list(root / "test.txt", names[:1])
    return root, {"split": "trainval"}


def make_nyud(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    import scipy.io

    numbers = [str(5001 + i) for i in range(n)]
    for num, (img, lab) in zip(numbers, _content(n, size, 41), strict=True):
        _save_png(root / "data" / "images" / f"img_{num}.png", img)
        _save_png(root / "data" / "hha" / f"img_{num}.png", img[..., ::-1].copy())
        depth = (500 + lab.astype(np.uint16) * 100).astype(np.uint16)
        _save_png(root / "data" / "depth" / f"img_{num}.png", depth)
        (root / "segmentation").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "segmentation" / f"img_{num}.mat", {"segmentation": lab})
    _write_list(root / "train.txt", numbers)
    return root, {"split": "train", "modality": "rgb+hha"}


def make_camvid(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    names = [f"0001TP_{i:06d}" for i in range(n)]
    for name, (img, lab) in zip(names, _content(n, size, 12), strict=True):
        _save_png(root / "train" / f"{name}.png", img)
        _save_png(root / "trainannot" / f"{name}.png", lab)
    return root, {"split": "train"}


def make_cityscapes(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    for i, (img, lab) in enumerate(_content(n, size, 34)):
        stem = f"aachen_{i:06d}_000019"
        _save_png(root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", img)
        _save_png(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", lab)
    return root, {"split": "train"}


def make_folder(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, dict]:
    for i, (img, lab) in enumerate(_content(n, size, 7)):
        _save_png(root / "images" / f"img{i:03d}.png", img)
        _save_png(root / "masks" / f"img{i:03d}.png", lab)
    (root / "classes.txt").write_text("".join(f"c{k}\n" for k in range(7)))
    return root, {"split": "all"}


MAKERS: dict[str, Callable[[Path, int, tuple[int, int]], tuple[Path, dict]]] = {
    "voc": make_voc,
    "sbd": make_sbd,
    "siftflow": make_siftflow,
    "nyud": make_nyud,
    "camvid": make_camvid,
    "cityscapes": make_cityscapes,
    "folder": make_folder,
}


def build_reader(name: str, tmp: Path, n: int, scale: float, size: int) -> tuple[Dataset, str]:
    """The reader ``name`` on generated (or real) files; returns it and a source note."""
    if name == "synthetic":
        return create_dataset("synthetic", split="train", size=size), f"built-in {size}x{size}"
    if name not in MAKERS:
        raise KeyError(f"no file generator for dataset {name!r}")
    h, w = NATIVE_SIZE[name]
    hw = (max(8, round(h * scale)), max(8, round(w * scale)))
    root, options = MAKERS[name](tmp / name, n, hw)
    source = options.pop("_source", f"generated {n} x {hw[0]}x{hw[1]}")
    split = options.pop("split")
    return create_dataset(name, root, split, **options), source


def loader_rate(dataset: Dataset, args: argparse.Namespace, preprocessing: Any) -> float:
    """Samples/s of the training loader (decode + transforms + collate) after one warm-up batch."""
    crop = None if args.no_crop else args.crop_size
    transform = build_transforms(
        True, preprocessing, crop_size=crop, color_jitter=args.color_jitter
    )
    data = TransformedDataset(dataset, transform, seed=0)
    sampler = RandomSampler(data, replacement=True, num_samples=10**9)
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate_pad,
    )
    it = iter(loader)
    next(it)  # worker start-up and first decode
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        count += next(it)["image"].shape[0]
    rate = count / (time.perf_counter() - start)
    del it
    return rate


def model_rate(args: argparse.Namespace, device: torch.device) -> tuple[float, Any, str]:
    """Training samples/s of ``args.model`` (forward, backward, SGD step); its preprocessing."""
    from fcnkit import create_model

    model = create_model(args.model, args.num_classes).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    side = args.crop_size
    x = torch.randn(args.batch_size, 3, side, side, device=device)
    y = torch.randint(0, args.num_classes, (args.batch_size, side, side), device=device)

    def step() -> None:
        out = model(x)
        out = next(iter(out.values())) if isinstance(out, dict) else out
        loss = torch.nn.functional.cross_entropy(out, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds or count < 2:
        step()
        count += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = count * args.batch_size / (time.perf_counter() - start)
    return rate, model.preprocessing, f"{args.model} ({sum(p.numel() for p in params):,} params)"


def main(argv: list[str] | None = None) -> int:
    from fcnkit.engine.config import DataConfig

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_data", description=__doc__.split("\n")[0]
    )
    p.add_argument("--datasets", nargs="*", default=None, help="default: every registered one")
    p.add_argument(
        "--workers",
        type=int,
        default=DataConfig().num_workers,
        help="DataLoader num_workers (default: the engine's data.num_workers)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-size", type=int, default=256, help="training crop (and model input)")
    p.add_argument("--no-crop", action="store_true", help="whole images (the paper's setting)")
    p.add_argument("--color-jitter", type=float, default=0.2)
    p.add_argument("--model", default="fcn8s-efficientnet_lite0")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--images", type=int, default=16, help="files generated per dataset")
    p.add_argument("--image-scale", type=float, default=1.0, help="x native size when generating")
    p.add_argument("--synthetic-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0, help="measurement time per row")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    names = args.datasets or list_datasets()
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
    print(f"device: {device} ({what})")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPUs {os.cpu_count()}")
    crop = "whole image" if args.no_crop else f"{args.crop_size}x{args.crop_size}"
    print(
        f"workers {args.workers}, batch {args.batch_size}, crop {crop}, "
        f"color_jitter {args.color_jitter}, {args.seconds:g} s per row"
    )

    from fcnkit.preprocessing import CAFFE_VOC

    preprocessing: Any = CAFFE_VOC
    model_sps = None
    if not args.skip_model:
        model_sps, preprocessing, desc = model_rate(args, device)
        print(f"model: {desc}, preprocessing {preprocessing.name}")
    print()
    print(f"{'dataset':<12} {'samples/s':>10} {'vs model':>9}  source")
    if model_sps is not None:
        print(f"{'[model]':<12} {model_sps:>10.1f} {'1.00':>9}  training step rate on {device}")
    with tempfile.TemporaryDirectory(prefix="fcnkit-bench-") as tmp:
        for name in names:
            try:
                dataset, source = build_reader(
                    name, Path(tmp), args.images, args.image_scale, args.synthetic_size
                )
                rate = loader_rate(dataset, args, preprocessing)
            except Exception as err:  # a benchmark reports and goes on
                print(f"{name:<12} {'-':>10} {'-':>9}  skipped: {type(err).__name__}: {err}")
                continue
            ratio = f"{rate / model_sps:.2f}" if model_sps else "-"
            print(f"{name:<12} {rate:>10.1f} {ratio:>9}  {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
