"""A sentence, not a traceback (issue 12 §5): every failure of ``fcnkit`` ends in one
``fcnkit: error: ...`` sentence naming the file or option and what was expected; tracebacks
only with ``--debug`` or ``FCNKIT_DEBUG=1``. Exit status: 2 refused input, 1 anything else,
130 interrupted."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcnkit.cli.data
from cli_fixtures import TINY_TRAIN as TINY
from fcnkit.cli import main
from fcnkit.weights.checkpoint import atomic_save, load_checkpoint
from protobuf_wire import ld, varint


def sentence(capsys) -> str:
    """What ``fcnkit`` printed on stderr, checked to hold no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.startswith("fcnkit: error: "), err
    return err


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ----------------------------------------------------------------- tracebacks, exit codes


def _boom(args) -> int:
    raise RuntimeError("the flux capacitor is out of flux")


def test_unexpected_error_is_one_sentence_with_exit_1(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FCNKIT_DEBUG", raising=False)
    monkeypatch.setattr(fcnkit.cli.data, "run_list", _boom)
    assert main(["data", "list"]) == 1
    err = sentence(capsys)
    assert "RuntimeError: the flux capacitor is out of flux" in err
    assert "--debug" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, env",
    [(["--debug", "data", "list"], None), (["data", "list", "--debug"], None),
     (["data", "list"], "1")],
)  # fmt: skip
def test_debug_flag_or_env_shows_the_traceback(argv, env, monkeypatch, capsys) -> None:
    if env is None:
        monkeypatch.delenv("FCNKIT_DEBUG", raising=False)
    else:
        monkeypatch.setenv("FCNKIT_DEBUG", env)
    monkeypatch.setattr(fcnkit.cli.data, "run_list", _boom)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "flux capacitor" in err


def test_debug_shows_the_error_a_sentence_replaced(tmp_path, capsys) -> None:
    argv = ["eval", str(tmp_path / "nope"), "--dataset", "synthetic", "--split", "val"]
    assert main(argv) == 2
    assert "nope" in sentence(capsys)
    assert main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "load_any" in err and "fcnkit: error: " in err


def test_debug_flag_does_not_change_a_working_command(capsys) -> None:
    assert main(["--debug", "data", "list"]) == 0
    assert "synthetic" in capsys.readouterr().out


def test_keyboard_interrupt_exits_130_without_traceback(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FCNKIT_DEBUG", raising=False)

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(fcnkit.cli.data, "run_list", interrupted)
    assert main(["data", "list"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err


# ---------------------------------------------------------------------- training data


def test_train_missing_or_broken_root_names_it(tmp_path, capsys) -> None:
    argv = ["train", "voc-fcn32s", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, "--set", f"data.root={tmp_path / 'nonexistent'}"]) == 2
    assert "nonexistent: dataset root is not a folder" in sentence(capsys)
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--set", f"data.root={tmp_path / 'empty'}"]) == 2
    assert f"{tmp_path / 'empty' / 'train.txt'}: missing" in sentence(capsys)


def test_train_option_the_dataset_does_not_take_names_the_key(tmp_path, capsys) -> None:
    # the demo recipe's data.options (size) are the synthetic dataset's, not VOC's
    argv = ["train", "demo", "--set", "data.dataset=voc", "--set", "data.root=/nonexistent"]
    assert main([*argv, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = sentence(capsys)
    assert "'voc'" in err and "'size'" in err and "data.options" in err
    assert "/nonexistent" in err  # the root's problem is said too


def _folder_with_a_bad_image(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"images/s{i}.png")
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / f"masks/s{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    bad = root / "images/s2.png"
    bad.write_bytes(b"not a png at all")
    return bad


def test_train_bad_sample_in_a_worker_is_a_sentence(tmp_path, capsys) -> None:
    bad = _folder_with_a_bad_image(tmp_path / "data")
    argv = ["train", "demo", *TINY, "--set", "data.dataset=folder"]
    argv += ["--set", f"data.root={tmp_path / 'data'}", "--set", "data.options={}"]
    argv += ["--set", "data.val_options={}", "--set", "data.split=all"]
    argv += ["--set", "data.val_split=all"]
    argv += ["--set", "model.num_classes=3", "--set", "data.batch_size=4"]
    argv += ["--set", "data.num_workers=1", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = sentence(capsys)
    assert f"{bad}: cannot decode" in err
    assert "DataLoader worker" not in err and 'File "' not in err


# ------------------------------------------------------------------------ disk full


def test_atomic_save_on_a_full_disk_keeps_the_old_file_and_says_so(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def half_written(obj, f) -> None:
        f.write(b"x" * 1000)
        enospc()

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="no space left on device") as info:
        atomic_save({"step": 2}, path)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}  # the previous file, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_train_disk_full_at_a_checkpoint_is_a_sentence(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("FCNKIT_DEBUG", raising=False)
    run = tmp_path / "run"

    def full(obj, f) -> None:
        enospc()

    monkeypatch.setattr(torch, "save", full)
    assert main(["train", "demo", *TINY, "--run-dir", str(run)]) == 1
    err = sentence(capsys)
    assert "no space left on device" in err and str(run / "checkpoints") in err
    assert not list((run / "checkpoints").glob("*.tmp"))


# ------------------------------------------------------------- --out at the wrong kind


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "RUN", "--dataset", "synthetic", "--split", "val"],
        ["predict", "RUN", "IMAGES"],
        ["data", "stats", "synthetic"],
    ],
)
def test_out_naming_a_file_where_a_folder_is_expected(argv, tmp_path, capsys) -> None:
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    assert main([*argv, "--out", str(out)]) == 2
    err = sentence(capsys)
    assert f"--out {out} is a file" in err and "folder" in err
    assert out.read_text() == "keep me"
    below = out / "sub"  # a folder inside a file
    assert main([*argv, "--out", str(below)]) == 2
    assert f"{out} is a file" in sentence(capsys)


def test_export_out_naming_a_folder(tmp_path, capsys) -> None:
    assert main(["export", "RUN", "--out", str(tmp_path)]) == 2
    err = sentence(capsys)
    assert f"--out {tmp_path} is a folder" in err and ".onnx" in err
    assert main(["convert", "x.caffemodel", "--model", "fcn32s", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder" in sentence(capsys)


# ------------------------------------------------------------------ refused pickles


class NotAllowed:
    """A class torch.load(weights_only=True) refuses."""


def _pickled_checkpoint(path: Path) -> Path:
    torch.save({"model": {}, "model_name": "fcn8s", "extra": NotAllowed()}, path)
    return path


def test_refused_pickle_is_fcnkits_own_message(tmp_path, capsys) -> None:
    path = _pickled_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "arbitrary code" in message
    assert "weights_only=False" not in message and "NotAllowed" in message
    assert main(["eval", str(path), "--dataset", "synthetic", "--split", "val"]) == 2
    err = sentence(capsys)
    assert str(path) in err and "arbitrary code" in err and "weights_only=False" not in err


def test_refused_pickle_through_load_any(tmp_path) -> None:
    from fcnkit.weights.load import _torch_load

    path = tmp_path / "state.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": NotAllowed()}, path)
    with pytest.raises(ValueError) as info:
        _torch_load(path)
    message = str(info.value)
    assert str(path) in message and "arbitrary code" in message
    assert "weights_only=False" not in message


def test_no_message_suggests_weights_only_false() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "fcnkit"
    texts = [p.read_text() for p in src.rglob("*.py")]
    assert not [t for t in texts if "weights_only=False" in t]


# -------------------------------------------------------------------- convert overflow


@pytest.mark.parametrize(
    "dims, values",
    [((2**32, 2**32), 0), ((2**31 - 1, 2**31 - 1), 4), ((2**63 + 5,), 4), ((2**40, 2**40, 0), 0)],
)
def test_convert_blob_with_overflowing_dimensions(dims, values, tmp_path, capsys) -> None:
    """Declared dimensions whose product overflows 64 bits (to 0: matching an empty blob)
    or is far larger than the data: refused, naming the file and the layer."""
    shape = ld(7, ld(1, b"".join(varint(d) for d in dims)))
    blob = shape + (ld(5, np.zeros(values, "<f4").tobytes()) if values else b"")
    layer = ld(1, b"conv1_1") + ld(2, b"Convolution") + ld(7, blob)
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(ld(100, layer))
    out = tmp_path / "out.pt"
    assert main(["convert", str(path), "--model", "fcn32s", "--out", str(out)]) == 2
    err = sentence(capsys)
    assert str(path) in err and "conv1_1" in err and not out.exists()
