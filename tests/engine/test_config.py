"""Config: shipped recipes (paper settings, Sec. 4.3 / 4.2), overrides and validation."""

from __future__ import annotations

import pytest
import yaml

from fcnkit.engine.config import ConfigError, list_recipes, load_config, recipe_text

REQUIRED = [
    "voc-fcn32s",
    "voc-fcn16s",
    "voc-fcn8s",
    "voc-fcn32s-paper",
    "voc-fcn16s-paper",
    "voc-fcn8s-paper",
    "voc-fcn8s-atonce",
    "voc-fcn32s-fixed",
    "voc-fcn32s-alexnet",
    "siftflow-fcn16s",
    "nyud-fcn16s-rgbhha",
    "nyud-fcn32s-rgbhha",
    "nyud-fcn32s-color",
    "nyud-fcn32s-hha",
    "nyud-fcn32s-color-d",
    "camvid-fcn8s",
    "demo",
    "voc-fcn32s-googlenet",
]


def test_required_recipes_ship_and_validate() -> None:
    names = list_recipes()
    assert set(REQUIRED) <= set(names)
    for name in names:
        config = load_config(name)
        assert config.name == name
        assert config.description


@pytest.mark.parametrize(
    "name",
    [
        "voc-fcn32s-paper",
        "voc-fcn16s-paper",
        "voc-fcn8s-paper",
        "voc-fcn32s-fixed",
        "voc-fcn32s-googlenet",
        "voc-fcn32s-alexnet",
    ],
)
def test_paper_sgd_settings(name: str) -> None:
    c = load_config(name)
    assert c.optim.name == "sgd" and c.optim.momentum == 0.9
    assert c.optim.weight_decay == 5e-4
    assert c.optim.bias_lr_mult == 2.0 and c.optim.bias_weight_decay == 0.0
    assert c.data.batch_size * c.optim.accumulate == 20  # 20-image batches (accumulated)
    assert c.loss.normalize is True and c.loss.ignore_index == 255
    assert c.schedule.name == "fixed"


def test_paper_learning_rates_and_staging() -> None:
    assert load_config("voc-fcn32s-paper").optim.lr == 1e-4  # VGG16 (Sec. 4.3)
    assert load_config("voc-fcn16s-paper").optim.lr == 1e-6  # "decreased by 100" (Sec. 4.2)
    assert load_config("voc-fcn8s-paper").optim.lr == 1e-8  # extrapolated: 100x again
    assert "extrapolation" in recipe_text("voc-fcn8s-paper")  # and says so
    assert load_config("voc-fcn32s-alexnet").optim.lr == 1e-3  # AlexNet
    googlenet = load_config("voc-fcn32s-googlenet")  # GoogLeNet (Sec. 4.3)
    assert googlenet.optim.lr == 5e-5 and googlenet.model.name == "fcn32s-googlenet"
    assert load_config("voc-fcn32s-paper").train.init_from is None
    assert load_config("voc-fcn16s-paper").train.init_from == "runs/voc-fcn32s-paper"
    assert load_config("voc-fcn8s-paper").train.init_from == "runs/voc-fcn16s-paper"
    assert load_config("voc-fcn32s").train.init_from is None
    assert load_config("voc-fcn16s").train.init_from == "runs/voc-fcn32s"  # Sec. 4.2
    assert load_config("voc-fcn8s").train.init_from == "runs/voc-fcn16s"
    assert load_config("siftflow-fcn16s").train.init_from == "runs/siftflow-fcn32s"
    assert load_config("nyud-fcn16s-rgbhha").train.init_from == "runs/nyud-fcn32s-rgbhha"


@pytest.mark.parametrize(
    ("stride", "lr", "weights"),
    [
        (32, 1e-10, "vgg16-ilsvrc-caffe"),  # voc-fcn32s/solver.prototxt base_lr; ImageNet VGG16
        (16, 1e-12, None),  # voc-fcn16s/solver.prototxt base_lr; solve.py: from voc-fcn32s
        (8, 1e-14, None),  # voc-fcn8s/solver.prototxt base_lr; solve.py: from voc-fcn16s
    ],
)
def test_plain_voc_names_are_the_reference_solvers(stride: int, lr: float, weights) -> None:
    """voc-fcn{32,16,8}s reproduce the released fcn{32,16,8}s-heavy-pascal: the reference's
    voc-fcn{32,16,8}s/solver.prototxt (momentum 0.99, weight_decay 0.0005, iter_size 1,
    max_iter 100000, snapshot 4000) with net.py's unnormalised loss and fixed upsamplers."""
    c = load_config(f"voc-fcn{stride}s")
    assert c.optim.lr == lr and c.optim.momentum == 0.99 and c.optim.weight_decay == 5e-4
    assert c.data.batch_size == 1 and c.optim.accumulate == 1
    assert c.loss.normalize is False  # summed loss goes with these tiny rates
    assert (c.train.steps, c.train.eval_every, c.train.checkpoint_every) == (100000, 4000, 4000)
    assert c.model.weights == weights and c.model.options.get("learn_upsampling", False) is False
    assert (c.data.dataset, c.data.val_split) == ("sbd", "seg11valid")
    # the former -heavy names: the same recipes, chained through their own runs
    old = load_config(f"voc-fcn{stride}s-heavy")
    assert (old.optim, old.loss, old.model, old.data) == (c.optim, c.loss, c.model, c.data)


def test_paper_recipes_stage_length_matches_the_reference_update() -> None:
    """The paper-text recipes take the cumulative update of the reference runs: per image,
    reference lr x pixels / (1 - momentum) = 1e-10 x 1.8e5 / 0.01 (voc-fcn32s/solver.prototxt)
    vs paper 1e-4 / (1 - 0.9) / 20: 36x, so 36 x the reference's 100,000 images."""
    ref, paper = load_config("voc-fcn32s"), load_config("voc-fcn32s-paper")
    per_image_ref = ref.optim.lr * 1.8e5 / (1 - ref.optim.momentum)
    per_image_paper = paper.optim.lr / (1 - paper.optim.momentum) / paper.optim.accumulate
    ratio = per_image_ref / per_image_paper
    assert ratio == pytest.approx(36)
    images = paper.train.steps * paper.optim.accumulate * paper.data.batch_size
    assert images == pytest.approx(ratio * ref.train.steps) and images == 3_600_000
    for stride in (16, 8):  # the same ratio at every stage (both drop 100x per stage)
        r, p = load_config(f"voc-fcn{stride}s"), load_config(f"voc-fcn{stride}s-paper")
        assert p.optim.lr / r.optim.lr == pytest.approx(paper.optim.lr / ref.optim.lr)
        assert p.train.steps == paper.train.steps == 180000
    # AlexNet: voc-fcn-alexnet/solver.prototxt base_lr 1e-4, max_iter 100000 (iter_size 20,
    # normalised loss, momentum 0.9): the same update at the paper's lr 1e-3 takes 10,000
    alexnet = load_config("voc-fcn32s-alexnet")
    assert alexnet.optim.lr * alexnet.train.steps == pytest.approx(1e-4 * 100000)


def test_atonce_and_multihead_recipes() -> None:
    c = load_config("voc-fcn8s-atonce")
    assert c.model.name == "fcn8s-atonce" and c.train.init_from is None
    # reference voc-fcn8s-atonce/solver.prototxt: base_lr 1e-10, max_iter 300000 (from
    # VGG16 in one stage; 1e-14 is the staged FCN-8s rate and would leave the net unmoved)
    assert (c.optim.lr, c.train.steps) == (1e-10, 300000)
    assert c.optim.momentum == 0.99 and c.loss.normalize is False and c.optim.accumulate == 1
    s = load_config("siftflow-fcn16s")
    assert s.model.name == "fcn16s-siftflow" and s.loss.head_weights == {"sem": 1.0, "geo": 1.0}
    n = load_config("nyud-fcn16s-rgbhha")
    assert n.model.options["modality"] == "rgb+hha" and n.data.options["modality"] == "rgb+hha"


@pytest.mark.parametrize(
    ("name", "modality", "lr"),
    [
        ("nyud-fcn32s-color", "rgb", 1e-10),  # nyud-fcn32s-color/solver.prototxt base_lr
        ("nyud-fcn32s-hha", "hha", 1e-10),  # nyud-fcn32s-hha/solver.prototxt base_lr
        ("nyud-fcn32s-color-d", "rgbd", 1e-10),  # nyud-fcn32s-color-d/solver.prototxt base_lr
        ("nyud-fcn32s-rgbhha", "rgb+hha", 1e-12),  # nyud-fcn32s-color-hha/solver.prototxt
    ],
)
def test_nyud_recipes_are_the_reference_solvers(name: str, modality: str, lr: float) -> None:
    """The reference's NYUD solvers (fcn.berkeleyvision.org nyud-fcn32s-*/solver.prototxt):
    momentum 0.99, weight_decay 0.0005, iter_size 1, fixed lr; net.py: normalize: false;
    solve.py: 50 x solver.step(2000) = 100,000 iterations, scored on test every 2000."""
    c = load_config(name)
    assert c.optim.lr == lr and c.optim.momentum == 0.99 and c.optim.weight_decay == 5e-4
    assert c.optim.accumulate == 1 and c.data.batch_size == 1 and c.loss.normalize is False
    assert (c.train.steps, c.train.eval_every, c.train.checkpoint_every) == (100000, 2000, 2000)
    assert c.model.options["modality"] == c.data.options["modality"] == modality
    assert (c.data.split, c.data.val_split, c.model.num_classes) == ("trainval", "test", 40)


def test_nyud_late_fusion_starts_from_the_two_single_stream_runs(tmp_path) -> None:
    """nyud-fcn32s-color-hha/solve.py transplants the trained colour and HHA nets (suffix
    'color' / 'hha') instead of starting from ImageNet; the 16s fusion is fcnkit's own."""
    c = load_config("nyud-fcn32s-rgbhha")
    assert c.train.init_from == {"color": "runs/nyud-fcn32s-color", "hha": "runs/nyud-fcn32s-hha"}
    assert c.model.weights is None  # every weight comes from the two runs
    for name in ("nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d"):
        single = load_config(name)
        assert single.train.init_from is None and single.model.weights == "vgg16-ilsvrc-caffe"
    s = load_config("nyud-fcn16s-rgbhha")
    assert "fcnkit's own" in s.description and s.train.init_from == "runs/nyud-fcn32s-rgbhha"
    c = load_config("nyud-fcn32s-rgbhha", ["train.init_from.hha=runs/mine"])
    assert c.train.init_from == {"color": "runs/nyud-fcn32s-color", "hha": "runs/mine"}
    with pytest.raises(ConfigError, match=r"train\.init_from: expected .*\{color: RUN, hha: RUN"):
        load_config("nyud-fcn32s-rgbhha", ["train.init_from.depth=runs/d"])
    with pytest.raises(ConfigError, match=r"train\.init_from: expected"):
        load_config("nyud-fcn32s-rgbhha", ["train.init_from={color: 1, hha: 2}"])


def test_recipe_text_is_the_loaded_recipe() -> None:
    text = recipe_text("voc-fcn32s")
    assert "# " in text  # comments explain the settings
    assert load_config(yaml.safe_load(text)) == load_config("voc-fcn32s")


def test_overrides_are_typed() -> None:
    c = load_config(
        "demo",
        [
            "optim.lr=1e-4",  # YAML 1.1 would read this as a string
            "train.steps=1e3",
            "loss.normalize=false",
            "optim.betas=[0.8, 0.9]",
            "model.options.backbone_weights=null",
            "data.options.size=48",
            "loss.class_weights=[1, 2, 1, 1, 1, 1, 1]",
        ],
    )
    assert c.optim.lr == 1e-4 and isinstance(c.optim.lr, float)
    assert c.train.steps == 1000 and isinstance(c.train.steps, int)
    assert c.loss.normalize is False
    assert c.optim.betas == [0.8, 0.9]
    assert c.model.options["backbone_weights"] is None
    assert c.data.options["size"] == 48
    assert c.loss.class_weights == [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_unknown_override_key_names_key_and_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["optim.lrr=1e-4"])
    msg = str(err.value)
    assert "optim.lrr" in msg and "did you mean 'optim.lr'" in msg
    assert "momentum" in msg and "weight_decay" in msg  # lists the valid keys
    with pytest.raises(ConfigError, match="unknown config key 'optimiser'"):
        load_config("demo", ["optimiser.lr=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("demo", ["optim.lr"])


def test_wrong_type_names_file_field_and_expected(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "optim.lr" in str(err.value)
    assert "expected a number" in str(err.value) and "'fast'" in str(err.value)
    with pytest.raises(ConfigError, match=r"--set train.steps=many: train.steps: expected an int"):
        load_config("demo", ["train.steps=many"])
    with pytest.raises(ConfigError, match="train.steps: expected an integer >= 1"):
        load_config("demo", ["train.steps=0"])
    with pytest.raises(ConfigError, match="schedule.name: expected one of fixed, poly, step"):
        load_config("demo", ["schedule.name=cosine"])
    with pytest.raises(ConfigError, match=r"loss.sample_prob: expected a probability"):
        load_config("demo", ["loss.sample_prob=1.5"])
    with pytest.raises(ConfigError, match="loss.class_weights: expected 7 numbers"):
        load_config("demo", ["loss.class_weights=[1, 2]"])


def test_class_weights_median_frequency_string(tmp_path) -> None:
    c = load_config("demo", ["loss.class_weights=median_frequency"])
    assert c.loss.class_weights == "median_frequency"
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    assert load_config(path) == c  # the string survives the run directory's config.yaml
    with pytest.raises(
        ConfigError,
        match=r"^--set loss.class_weights=median_freq: loss.class_weights: expected a list of "
        r"numbers \(one per class\) or 'median_frequency', got 'median_freq' "
        r"\(did you mean 'median_frequency'\?\)$",
    ):
        load_config("demo", ["loss.class_weights=median_freq"])
    path.write_text("loss:\n  class_weights: balanced\n")
    with pytest.raises(ConfigError, match=r"c.yaml: loss.class_weights: .* got 'balanced'$"):
        load_config(path)


def test_unknown_key_in_file_and_unknown_recipe(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stepz: 3\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: unknown config key 'train.stepz'.*'train.steps'"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown recipe 'voc-fcn32'.*Did you mean"):
        load_config("voc-fcn32")
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")


def test_config_roundtrips_through_yaml(tmp_path) -> None:
    c = load_config("voc-fcn16s-paper", ["optim.lr=3e-6"])
    path = tmp_path / "resolved.yaml"
    path.write_text(c.to_yaml())
    assert load_config(path) == c


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_names_real_models_datasets_and_weights(name: str) -> None:
    """Each recipe's model builds with its options, its datasets/splits and weights exist."""
    import torch

    from fcnkit import create_model
    from fcnkit.data import get_dataset_entry
    from fcnkit.weights import get_weight_entry

    c = load_config(name)
    options = {k: v for k, v in c.model.options.items() if k != "backbone_weights"}  # no I/O
    with torch.device("meta"):
        model = create_model(c.model.name, c.model.num_classes, **options)
    assert model.num_classes == (c.model.num_classes or model.num_classes)
    assert c.data.split in get_dataset_entry(c.data.dataset).splits
    assert c.data.val_split in get_dataset_entry(c.data.val_dataset or c.data.dataset).splits
    if c.model.weights is not None:
        assert get_weight_entry(c.model.weights).name == c.model.weights
    if isinstance(c.loss.class_weights, list):  # "median_frequency": from the data at start
        assert len(c.loss.class_weights) == model.num_classes


def test_siftflow_lite0_reproduction_recipes() -> None:
    """Issue 6: one recipe per row; selection on the val carve-out, never on test."""
    fixed, r32, r16, r8, scratch = (
        load_config(f"siftflow-{n}")
        for n in ("fcn32s-fixed-lite0", "fcn32s-lite0", "fcn16s-lite0", "fcn8s-lite0",
                  "fcn8s-lite0-scratch")
    )  # fmt: skip
    for c in (fixed, r32, r16, r8, scratch):
        assert c.data.dataset == "siftflow" and c.model.num_classes == 33
        assert (c.data.split, c.data.val_split) == ("train", "val")
        assert c.train.best_metric == "mean_iu"
    # 32s-fixed = the 32s recipe with the trunk frozen, same budget
    assert fixed.model.options == {"backbone_weights": "imagenet", "freeze_backbone": True}
    assert r32.model.options == {"backbone_weights": "imagenet"}
    assert (fixed.optim, fixed.schedule, fixed.train.steps) == (r32.optim, r32.schedule, 3360)
    # staged 32s -> 16s -> 8s (Sec. 4.2), later stages at a tenth of the rate
    assert r16.train.init_from == "runs/siftflow-fcn32s-lite0"
    assert r8.train.init_from == "runs/siftflow-fcn16s-lite0"
    assert r16.optim.lr == r8.optim.lr == r32.optim.lr / 10
    # tempered class balance from the 16s stage on, chosen on val (docs/results.md)
    assert r32.loss.class_weights is None and fixed.loss.class_weights is None
    for c in (r16, r8):
        assert (c.loss.class_weights, c.loss.class_weight_power) == ("median_frequency", 0.5)
    # scratch: no ImageNet, the whole chain's budget
    assert scratch.model.name == "fcn8s-efficientnet_lite0" and scratch.train.init_from is None
    assert scratch.model.options == {"backbone_weights": None}
    assert scratch.train.steps == r32.train.steps + r16.train.steps + r8.train.steps


# ---------------------------------------------------------------------------------------------
# Inheritance: `_base_`


def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shipped_recipes_name_and_describe_themselves() -> None:
    """Bases (`_*.yaml`) are not listed; every recipe states its own name and description."""
    names = list_recipes()
    assert not [n for n in names if n.startswith("_")]
    with_bases = []
    for name in names:
        raw = yaml.safe_load(recipe_text(name))
        assert raw["name"] == name and raw["description"]  # never inherited
        if "_base_" in raw:
            with_bases.append(name)
    chained = {
        "voc-fcn16s",
        "voc-fcn8s",
        "voc-fcn8s-paper",
        "nyud-fcn32s-hha",
        "siftflow-fcn8s-lite0",
    }
    assert chained <= set(with_bases)
    assert load_config("siftflow-fcn8s-lite0").name == "siftflow-fcn8s-lite0"


# voc-fcn8s-paper spelled out: voc-fcn32s <- voc-fcn32s-paper <- voc-fcn16s-paper <- itself
VOC_FCN8S_PAPER = """
name: voc-fcn8s-paper
description: FCN-8s on PASCAL VOC, staged from voc-fcn16s-paper (Sec. 4.2), the paper text's SGD settings (lr extrapolated)
model: {name: fcn8s, num_classes: 21, weights: null, options: {learn_upsampling: true}}
data:
  dataset: sbd
  root: data/sbd
  split: train
  val_dataset: voc
  val_root: data/VOCdevkit
  val_split: seg11valid
  val_options: {year: 2011, sbd_root: data/sbd}
  augment: {scale_range: null, flip: false}
  batch_size: 1
  num_workers: 4
loss: {normalize: true, sample_prob: 1.0, ignore_index: 255}
optim:
  name: sgd
  lr: 1.0e-8
  momentum: 0.9
  weight_decay: 5.0e-4
  bias_lr_mult: 2.0
  bias_weight_decay: 0.0
  accumulate: 20
schedule: {name: fixed}
train:
  steps: 180000
  seed: 0
  log_every: 20
  eval_every: 7200
  checkpoint_every: 1800
  zero_check_step: 100
  init_from: runs/voc-fcn16s-paper
"""  # noqa: E501


def test_recipe_chain_resolves_to_the_spelled_out_recipe() -> None:
    c = load_config("voc-fcn8s-paper")  # voc-fcn32s <- 32s-paper <- 16s-paper <- 8s-paper
    assert c == load_config(yaml.safe_load(VOC_FCN8S_PAPER))
    assert c.to_dict() == load_config(yaml.safe_load(VOC_FCN8S_PAPER)).to_dict()
    # from voc-fcn32s (three levels up), from voc-fcn32s-paper, voc-fcn16s-paper, itself
    assert (c.data.val_split, c.optim.momentum, c.optim.accumulate) == ("seg11valid", 0.9, 20)
    assert c.model.weights is None and c.model.options == {"learn_upsampling": True}
    assert (c.model.name, c.optim.lr, c.train.init_from) == (
        "fcn8s",
        1e-8,
        "runs/voc-fcn16s-paper",
    )
    assert c.description.startswith("FCN-8s")  # its own, not voc-fcn16s-paper's
    plain = load_config("voc-fcn8s")  # voc-fcn32s <- voc-fcn16s <- voc-fcn8s
    assert (plain.optim.lr, plain.optim.momentum, plain.data.val_split) == (
        1e-14,
        0.99,
        "seg11valid",
    )
    # a hidden base at the root of the SIFT Flow Lite0 chain
    s = load_config("siftflow-fcn8s-lite0")  # _siftflow-adamw <- 32s-lite0 <- 16s-lite0 <- 8s
    assert (s.data.dataset, s.data.batch_size, s.optim.name) == ("siftflow", 8, "adamw")
    assert s.train.channels_last is True and s.model.options == {"backbone_weights": None}
    assert (s.optim.lr, s.train.steps) == (1e-4, 560)
    assert s.train.init_from == "runs/siftflow-fcn16s-lite0"


def test_recipe_text_with_base_loads_as_a_dict() -> None:
    raw = yaml.safe_load(recipe_text("voc-fcn16s"))
    assert raw["_base_"] == "voc-fcn32s"
    assert load_config(raw) == load_config("voc-fcn16s")


def test_base_depth_two_merges_mappings_and_replaces_lists(tmp_path) -> None:
    _write(
        tmp_path / "a.yaml",
        "name: a\ndescription: base a\nmodel: {name: fcn32s, options: {x: 1, y: 2}}\n"
        "optim: {lr: 0.01, betas: [0.5, 0.6]}\ntrain: {steps: 10, seed: 3}\n",
    )
    _write(tmp_path / "b.yaml", "_base_: a.yaml\nmodel: {options: {y: 20}}\ntrain: {steps: 20}\n")
    c = load_config(
        _write(tmp_path / "c.yaml", "_base_: b.yaml\nname: c\noptim: {betas: [0.8, 0.9]}\n")
    )
    assert c.name == "c" and c.description == ""  # name, description: not inherited
    assert c.model.name == "fcn32s" and c.model.options == {"x": 1, "y": 20}  # merged
    assert c.optim.lr == 0.01 and c.optim.betas == [0.8, 0.9]  # the list replaced
    assert (c.train.steps, c.train.seed) == (20, 3)
    assert load_config(tmp_path / "b.yaml").name == "run"  # the default, not a's


def test_list_of_bases_later_ones_win(tmp_path) -> None:
    _write(tmp_path / "x.yaml", "optim: {lr: 0.1, momentum: 0.5}\ntrain: {steps: 7}\n")
    _write(tmp_path / "y.yaml", "optim: {lr: 0.2}\n")
    path = _write(tmp_path / "z.yaml", "_base_: [voc-fcn32s, x.yaml, y.yaml]\nname: z\n")
    c = load_config(path)
    assert (c.optim.lr, c.optim.momentum, c.train.steps) == (0.2, 0.5, 7)
    assert c.model.name == "fcn32s" and c.data.dataset == "sbd"  # from the recipe
    assert c.train.eval_every == 4000  # voc-fcn32s: the reference scores every 4000


def test_relative_base_resolves_against_the_including_file(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "shared" / "base.yaml", "_base_: voc-fcn32s\noptim: {lr: 3.0e-5}\n")
    mine = _write(
        tmp_path / "exp" / "mine.yaml",
        "_base_: ../shared/base.yaml\nname: mine\ntrain: {seed: 5}\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not relative to the working directory
    c = load_config(mine)
    assert (c.name, c.optim.lr, c.train.seed, c.model.name) == ("mine", 3e-5, 5, "fcn32s")
    monkeypatch.chdir(tmp_path)  # a dict's relative bases: the working directory
    assert load_config({"_base_": "shared/base.yaml"}).optim.lr == 3e-5


def test_base_cycle_names_the_files(tmp_path) -> None:
    _write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(tmp_path / "a.yaml")
    msg = str(err.value)
    assert f"{tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'}" in msg
    with pytest.raises(ConfigError, match=r"cycle: .*self.yaml -> .*self.yaml"):
        load_config(_write(tmp_path / "self.yaml", "_base_: [voc-fcn32s, self.yaml]\n"))


def test_missing_base_names_the_file_and_the_base(tmp_path) -> None:
    path = _write(tmp_path / "mine.yaml", "_base_: voc-fcn32\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'voc-fcn32'" in msg and "Did you mean voc-fcn32s" in msg
    path.write_text("_base_: [voc-fcn32s, parts/gone.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "parts/gone.yaml" in str(err.value)
    _write(tmp_path / "sibling.yaml", "train: {steps: 3}\n")
    path.write_text("_base_: sibling\n")  # a recipe name; the file is `sibling.yaml`
    with pytest.raises(ConfigError, match="write sibling.yaml"):
        load_config(path)
    path.write_text("_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match="_base_: expected a recipe name, a path or a list"):
        load_config(path)


def test_set_overrides_an_inherited_value(tmp_path) -> None:
    c = load_config("voc-fcn16s", ["optim.momentum=0.95", "data.val_options.year=2012"])
    assert c.optim.momentum == 0.95  # inherited from voc-fcn32s, then overridden
    assert c.data.val_options == {"year": 2012, "sbd_root": "data/sbd"}
    path = _write(tmp_path / "mine.yaml", "_base_: voc-fcn16s\nname: mine\n")
    c = load_config(path, ["optim.lr=2e-6", "train.init_from=runs/other"])
    assert (c.optim.lr, c.train.init_from, c.model.name) == (2e-6, "runs/other", "fcn16s")


def test_bad_inherited_value_names_its_file_and_the_top_file(tmp_path) -> None:
    base = _write(tmp_path / "base.yaml", "train: {stepz: 1}\n")
    mine = _write(tmp_path / "mine.yaml", "_base_: base.yaml\ntrain: {stepz: 2}\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'") as err:
        load_config(mine)  # set by both: the file that won is named
    assert str(err.value).startswith(f"{mine}: ")
    mine.write_text("_base_: base.yaml\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'") as err:
        load_config(mine, ["train.steps=3"])
    assert str(err.value).startswith(f"{base} (via {mine}): ")
    base.write_text("optim: {lr: fast}\n")
    with pytest.raises(ConfigError) as err:
        load_config(mine)
    assert str(err.value).startswith(f"{base} (via {mine}): optim.lr: expected a number")
    with pytest.raises(ConfigError, match=r"^--set optim.lr=-1: optim.lr: expected a number > 0"):
        load_config(mine, ["optim.lr=-1"])
