"""`fcnkit recipes`: list, show resolved (`_base_` merged), show --raw."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fcnkit.cli import main
from fcnkit.engine.config import load_config, recipe_text


def test_recipes_list_and_show(capsys, tmp_path: Path) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "voc-fcn32s" in out and "demo" in out and "siftflow-fcn16s" in out
    assert "_siftflow-adamw" not in out  # a base, not a recipe to train
    assert main(["recipes", "show", "voc-fcn16s"]) == 0
    text = capsys.readouterr().out
    copy = tmp_path / "mine.yaml"
    copy.write_text(text)  # the printed recipe is a usable config file
    assert load_config(copy) == load_config("voc-fcn16s")
    assert yaml.safe_load(text)["train"]["init_from"] == "runs/voc-fcn32s"
    assert main(["recipes", "show", "voc-fcn99s"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["recipes", "demo"]) == 0  # a bare name shows the recipe too
    assert capsys.readouterr().out == recipe_text("demo")
    assert main(["recipes", "voc-fcn99s"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_show_resolved_and_raw(capsys) -> None:
    assert main(["recipes", "show", "voc-fcn8s"]) == 0
    resolved = capsys.readouterr().out
    data = yaml.safe_load(resolved)
    assert "_base_" not in data and "voc-fcn32s <- voc-fcn16s <- voc-fcn8s" in resolved
    # lr 1e-14 and momentum 0.99: the reference's voc-fcn8s/solver.prototxt
    assert (data["name"], data["model"]["name"], data["optim"]["lr"]) == (
        "voc-fcn8s",
        "fcn8s",
        1e-14,
    )
    assert data["data"]["dataset"] == "sbd" and data["optim"]["momentum"] == 0.99  # from the base
    assert list(data)[:3] == ["name", "description", "model"]
    assert load_config(data) == load_config("voc-fcn8s")
    assert main(["recipes", "show", "voc-fcn8s", "--raw"]) == 0
    raw = capsys.readouterr().out
    assert raw == recipe_text("voc-fcn8s") and yaml.safe_load(raw)["_base_"] == "voc-fcn16s"
    assert main(["recipes", "--raw", "voc-fcn8s"]) == 0
    assert capsys.readouterr().out == raw
    # a recipe without bases is already resolved: shown as written, comments and all
    assert main(["recipes", "show", "voc-fcn32s"]) == 0
    assert capsys.readouterr().out == recipe_text("voc-fcn32s")
    assert main(["recipes", "--raw"]) == 2
    assert "show NAME --raw" in capsys.readouterr().err


def test_show_a_user_file_with_bases(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "base.yaml").write_text("_base_: voc-fcn32s\noptim: {lr: 3.0e-5}\n")
    (tmp_path / "mine.yaml").write_text("_base_: base.yaml\nname: mine\n")
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "show", "mine.yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert (data["name"], data["optim"]["lr"], data["model"]["name"]) == ("mine", 3e-5, "fcn32s")
    assert main(["recipes", "show", "mine.yaml", "--raw"]) == 0
    assert capsys.readouterr().out == "_base_: base.yaml\nname: mine\n"
    (tmp_path / "mine.yaml").write_text("_base_: gone.yaml\n")
    assert main(["recipes", "show", "mine.yaml"]) == 2
    assert "gone.yaml" in capsys.readouterr().err


def test_recipes_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["recipes", "--help"])
    out = capsys.readouterr().out
    assert "recipes show NAME" in out and "--raw" in out
