"""PASCAL-Context as the reference's ``pascalcontext_layers.py`` reads it, on small files
written in the real formats: ``labels.txt`` / ``59_labels.txt`` (``N: name`` lines),
``trainval/<id>.mat`` (``LabelMap``), ``VOC2010/JPEGImages`` and ``ImageSets/Main``. Also the
recipes, weight entries and models of the reference's ``pascalcontext-fcn{32,16,8}s``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnkit.cli import main
from fcnkit.data import create_dataset
from fcnkit.data.base import DatasetError, SplitUnavailable
from fcnkit.data.pascal_context import CONTEXT_59, PASCAL_CONTEXT_CLASSES

# A full class list in labels.txt's form: names with spaces, the full labelling's own names
# for the three task classes the reference translates (table, bedclothes, cloth), and classes
# outside the task in between, so that raw values and task indices differ everywhere.
_FULL_NAME = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
_SPACED = {"pottedplant": "potted plant", "tvmonitor": "tv monitor"}
EXTRA = ["accordion", "air conditioner", "antenna", "artillery", "ashtray", "atrium"]
FULL = []
for _k, _name in enumerate(reversed(CONTEXT_59)):
    FULL.append(_SPACED.get(_name, _FULL_NAME.get(_name, _name)))
    if _k % 10 == 0:
        FULL.append(EXTRA[_k // 10])
TASK_LINES = [f"{k}: {_SPACED.get(n, n)}" for k, n in enumerate(CONTEXT_59, start=1)]


def raw(name: str) -> int:
    """The raw LabelMap value of a full-list class: its line number in labels.txt."""
    return FULL.index(name) + 1


def write_context(
    data: Path,
    ids: dict[str, list[str]],
    label: np.ndarray,
    task_file: bool = True,
) -> Path:
    """The reference's layout under ``data``: ``pascal/VOC2010`` and ``pascal-context``."""
    voc = data / "pascal" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    ctx = data / "pascal-context"
    (ctx / "trainval").mkdir(parents=True, exist_ok=True)
    (ctx / "labels.txt").write_text("".join(f"{k}: {n}\n" for k, n in enumerate(FULL, 1)))
    if task_file:
        (ctx / "59_labels.txt").write_text("\n".join(TASK_LINES) + "\n")
    for split, names in ids.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i in names:
            Image.fromarray(np.full((*label.shape, 3), 90, np.uint8)).save(
                voc / "JPEGImages" / f"{i}.jpg"
            )
            scipy.io.savemat(ctx / "trainval" / f"{i}.mat", {"LabelMap": label.astype(np.uint16)})
    return ctx


# raw values: 0 (unlabelled), a class outside the task, and task classes (translated ones too)
LABEL = np.array(
    [
        [0, raw("accordion"), raw("aeroplane"), raw("wood")],
        [raw("table"), raw("bedclothes"), raw("cloth"), raw("potted plant")],
        [raw("sky"), raw("air conditioner"), raw("person"), raw("tv monitor")],
    ]
)
# the task classes, by name: background 0, then classes-59.txt's order
EXPECTED = [
    [0, 0, PASCAL_CONTEXT_CLASSES.index("aeroplane"), PASCAL_CONTEXT_CLASSES.index("wood")],
    [
        PASCAL_CONTEXT_CLASSES.index("diningtable"),
        PASCAL_CONTEXT_CLASSES.index("bedcloth"),
        PASCAL_CONTEXT_CLASSES.index("clothes"),
        PASCAL_CONTEXT_CLASSES.index("pottedplant"),
    ],
    [
        PASCAL_CONTEXT_CLASSES.index("sky"),
        0,
        PASCAL_CONTEXT_CLASSES.index("person"),
        PASCAL_CONTEXT_CLASSES.index("tvmonitor"),
    ],
]
IDS = {"train": ["2008_000002", "2008_000003"], "val": ["2008_000008"]}


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return write_context(tmp_path / "data", IDS, LABEL)


def test_class_list_is_the_reference_classes_59() -> None:
    # data/pascal-context/classes-59.txt: 0 background, 1 aeroplane ... 59 wood
    assert len(PASCAL_CONTEXT_CLASSES) == 60
    assert PASCAL_CONTEXT_CLASSES[:3] == ["background", "aeroplane", "bicycle"]
    assert PASCAL_CONTEXT_CLASSES[11] == "diningtable" and PASCAL_CONTEXT_CLASSES[28] == "clothes"
    assert PASCAL_CONTEXT_CLASSES[52] == "bedcloth" and PASCAL_CONTEXT_CLASSES[59] == "wood"


def test_reads_the_reference_layout(ctx: Path) -> None:
    ds = create_dataset("pascal-context", ctx, "train")  # voc_root: ../pascal by default
    assert ds.ids == IDS["train"] and len(ds) == 2
    assert ds.classes == PASCAL_CONTEXT_CLASSES and len(ds.palette) == 60
    assert ds.eval_exclude == [] and ds.ignore_index == 255  # score.py counts all 60
    s = ds[0]
    assert s["id"] == "2008_000002" and s["image"].shape == (3, 3, 4)
    assert s["label"].dtype == torch.int64 and s["label"].tolist() == EXPECTED
    assert ds.voc_dir == ctx.parent / "pascal" / "VOC2010" and ds.notes == []
    assert ds.files(0)["label"] == ctx / "trainval" / "2008_000002.mat"
    assert ds.files(0)["image"] == ds.voc_dir / "JPEGImages" / "2008_000002.jpg"


def test_voc_root_may_be_given_or_be_the_year_folder(ctx: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "VOCdevkit"
    shutil.move(str(ctx.parent / "pascal"), str(moved))
    with pytest.raises(DatasetError, match="voc_root"):
        create_dataset("pascal-context", ctx, "val")
    for voc_root in (moved, moved / "VOC2010"):
        ds = create_dataset("pascal-context", ctx, "val", voc_root=str(voc_root))
        assert ds.voc_dir == moved / "VOC2010" and ds[0]["label"].tolist() == EXPECTED
    with pytest.raises(DatasetError, match="VOC2010"):
        create_dataset("pascal-context", ctx, "val", voc_root=str(tmp_path / "elsewhere"))


def test_without_59_labels_txt_the_reference_order_is_used(tmp_path: Path) -> None:
    ctx = write_context(tmp_path, IDS, LABEL, task_file=False)
    ds = create_dataset("pascal-context", ctx, "val")
    assert ds.classes == PASCAL_CONTEXT_CLASSES and ds[0]["label"].tolist() == EXPECTED
    assert "59_labels.txt" in ds.notes[0]


def test_errors_name_the_files(ctx: Path) -> None:
    with pytest.raises(SplitUnavailable, match="trainval.txt"):
        create_dataset("pascal-context", ctx, "trainval")
    bad = LABEL.copy()
    bad[0, 0] = len(FULL) + 1  # beyond labels.txt
    scipy.io.savemat(ctx / "trainval" / "2008_000003.mat", {"LabelMap": bad.astype(np.uint16)})
    ds = create_dataset("pascal-context", ctx, "train")
    with pytest.raises(DatasetError, match=r"2008_000003\.mat.*beyond"):
        ds[1]
    (ctx / "59_labels.txt").write_text("\n".join(TASK_LINES[:-1]) + "\n")
    with pytest.raises(DatasetError, match="58 classes"):
        create_dataset("pascal-context", ctx, "train")
    (ctx / "59_labels.txt").write_text("\n".join(TASK_LINES).replace("wood", "timber") + "\n")
    with pytest.raises(DatasetError, match="timber"):
        create_dataset("pascal-context", ctx, "train")
    (ctx / "labels.txt").unlink()
    with pytest.raises(DatasetError, match="labels.txt"):
        create_dataset("pascal-context", ctx, "train")


def test_data_check_cli(ctx: Path, capsys) -> None:
    assert main(["data", "check", "pascal-context", "--root", str(ctx)]) == 0
    out = capsys.readouterr().out
    assert "[train] checked all 2 samples: OK" in out and "[val] checked all 1 samples: OK" in out
    assert "[trainval] skipped" in out
    (ctx / "trainval" / "2008_000003.mat").unlink()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(
        ctx.parent / "pascal" / "VOC2010" / "JPEGImages" / "2008_000002.jpg"
    )
    assert main(["data", "check", "pascal-context", "--root", str(ctx), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "2008_000003.mat: missing" in out and "3x4 (HxW) but the image is 5x5" in out


# --------------------------------------------------------------------------- models, recipes,
# weights of the reference's pascalcontext-fcn{32,16,8}s


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_the_vgg_fcns_with_60_classes_are_the_reference_nets(stride: int) -> None:
    """pascalcontext-fcn*s/net.py: the VOC nets' layers and names, num_output 60; the crop
    offsets of their val.prototxt (19; 5, 27; 5, 9, 31)."""
    from fcnkit import create_model

    with torch.device("meta"):
        model = create_model(f"fcn{stride}s", 60)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["score_fr.weight"] == (60, 4096, 1, 1)
    final = {32: "upscore", 16: "upscore16", 8: "upscore8"}[stride]
    kernel = {32: 64, 16: 32, 8: 16}[stride]
    assert shapes[f"{final}.weight"] == (60, 60, kernel, kernel)
    names = {k.rsplit(".", 1)[0] for k in shapes}
    heads = {"score_fr", final}
    heads |= {"score_pool4", "upscore2"} if stride <= 16 else set()
    heads |= {"score_pool3", "upscore_pool4"} if stride == 8 else set()
    assert {n for n in names if n.startswith(("score", "upscore"))} == heads
    offsets = {32: {"score": 19}, 16: {"score_pool4c": 5, "score": 27}}
    offsets[8] = {"score_pool4c": 5, "score_pool3c": 9, "score": 31}
    assert model.crop_offsets == offsets[stride]


@pytest.mark.parametrize("stride, lr", [(32, 1e-10), (16, 1e-12), (8, 1e-14)])
def test_recipes_carry_the_reference_solver(stride: int, lr: float) -> None:
    """pascalcontext-fcn*s/solver.prototxt: base_lr 1e-10 / 1e-12 / 1e-14, fixed, momentum
    0.99, weight_decay 0.0005, iter_size 1, snapshot 4000; solve.py: 50 x step(8000), val
    scored after each; SoftmaxWithLoss normalize false, ignore_label 255."""
    from fcnkit.engine.config import load_config

    c = load_config(f"pascalcontext-fcn{stride}s")
    assert (c.model.name, c.model.num_classes) == (f"fcn{stride}s", 60)
    assert c.optim.lr == lr and c.optim.momentum == 0.99 and c.optim.weight_decay == 5e-4
    assert c.optim.bias_lr_mult == 2.0 and c.optim.bias_weight_decay == 0.0
    assert c.optim.accumulate == 1 and c.data.batch_size == 1 and c.schedule.name == "fixed"
    assert c.loss.normalize is False and c.loss.ignore_index == 255
    assert (c.train.steps, c.train.eval_every, c.train.checkpoint_every) == (400000, 8000, 4000)
    assert (c.data.dataset, c.data.split, c.data.val_split) == ("pascal-context", "train", "val")
    assert c.data.root == "data/pascal-context" and c.data.options == {"voc_root": "data/pascal"}
    if stride == 32:
        assert c.model.weights == "vgg16-ilsvrc-caffe" and c.train.init_from is None
    else:
        assert c.model.weights is None and c.model.options == {"learn_upsampling": False}
        assert c.train.init_from == f"runs/pascalcontext-fcn{stride * 2}s"


def test_recipe_datasets_build_from_the_real_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fcnkit.engine.config import load_config
    from fcnkit.engine.train import build_datasets

    write_context(tmp_path / "data", IDS, LABEL)
    monkeypatch.chdir(tmp_path)  # the recipes' roots are relative (data/pascal-context)
    data = build_datasets(load_config("pascalcontext-fcn8s"))
    assert len(data.train) == 2 and len(data.val) == 1
    assert data.classes == PASCAL_CONTEXT_CLASSES


@pytest.mark.parametrize("stride", [32, 16, 8])
def test_weight_entries_of_the_released_models(stride: int) -> None:
    """pascalcontext-fcn*s/caffemodel-url."""
    from fcnkit.weights import get_weight_entry

    e = get_weight_entry(f"pascalcontext-fcn{stride}s-heavy")
    url = f"http://dl.caffe.berkeleyvision.org/pascalcontext-fcn{stride}s-heavy.caffemodel"
    assert e.source == url and e.file_name == url.rsplit("/", 1)[1]
    assert e.kind == "caffemodel" and e.models == (f"fcn{stride}s",) and e.num_classes == 60
    assert e.class_names() == PASCAL_CONTEXT_CLASSES and e.preprocessing == "caffe-voc"
    assert e.metrics == {} and "no PASCAL-Context scores" in e.metrics_note
