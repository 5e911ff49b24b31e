"""Config: shipped recipes (paper settings, Sec. 4.3 / 4.2), overrides and validation."""

from __future__ import annotations

import pytest
import yaml

from fcnkit.engine.config import ConfigError, list_recipes, load_config, recipe_text

REQUIRED = [
    "voc-fcn32s",
    "voc-fcn16s",
    "voc-fcn8s",
    "voc-fcn8s-atonce",
    "voc-fcn32s-fixed",
    "voc-fcn32s-alexnet",
    "siftflow-fcn16s",
    "nyud-fcn16s-rgbhha",
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
    ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn32s-fixed", "voc-fcn32s-googlenet"],
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
    assert load_config("voc-fcn32s").optim.lr == 1e-4  # VGG16
    assert load_config("voc-fcn32s-alexnet").optim.lr == 1e-3  # AlexNet
    googlenet = load_config("voc-fcn32s-googlenet")  # GoogLeNet (Sec. 4.3)
    assert googlenet.optim.lr == 5e-5 and googlenet.model.name == "fcn32s-googlenet"
    assert load_config("voc-fcn32s").train.init_from is None
    assert load_config("voc-fcn16s").train.init_from == "runs/voc-fcn32s"  # Sec. 4.2
    assert load_config("voc-fcn8s").train.init_from == "runs/voc-fcn16s"
    assert load_config("siftflow-fcn16s").train.init_from == "runs/siftflow-fcn32s"
    assert load_config("nyud-fcn16s-rgbhha").train.init_from == "runs/nyud-fcn32s-rgbhha"


@pytest.mark.parametrize("stride, lr", [(32, 1e-10), (16, 1e-12), (8, 1e-14)])
def test_reference_heavy_settings(stride: int, lr: float) -> None:
    c = load_config(f"voc-fcn{stride}s-heavy")
    assert c.optim.lr == lr and c.optim.momentum == 0.99
    assert c.data.batch_size == 1 and c.optim.accumulate == 1
    assert c.loss.normalize is False  # summed loss goes with these tiny rates


def test_atonce_and_multihead_recipes() -> None:
    c = load_config("voc-fcn8s-atonce")
    assert c.model.name == "fcn8s-atonce" and c.optim.lr == 1e-14 and c.train.init_from is None
    s = load_config("siftflow-fcn16s")
    assert s.model.name == "fcn16s-siftflow" and s.loss.head_weights == {"sem": 1.0, "geo": 1.0}
    n = load_config("nyud-fcn16s-rgbhha")
    assert n.model.options["modality"] == "rgb+hha" and n.data.options["modality"] == "rgb+hha"


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
    c = load_config("voc-fcn16s", ["optim.lr=3e-6"])
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
    if c.loss.class_weights is not None:
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
    # scratch: no ImageNet, the whole chain's budget
    assert scratch.model.name == "fcn8s-efficientnet_lite0" and scratch.train.init_from is None
    assert scratch.model.options == {"backbone_weights": None}
    assert scratch.train.steps == r32.train.steps + r16.train.steps + r8.train.steps
