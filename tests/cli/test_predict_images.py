"""``fcnkit predict`` / ``fcnkit heatmap`` on images as users have them (issue 12 §4): phone
photos with EXIF orientation, corrupt and non-image files, images over the pixel limit, a
model that fails on one image: every good image is written, failures are listed, exit 2."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cli_fixtures import TinyNet as Tiny
from fcnkit.cli import main
from fcnkit.inference import Segmenter
from fcnkit.models import create_model, register_model, unregister_model
from fcnkit.weights import save_checkpoint


class FailsOnBrightImages(Tiny):
    """Raises (as an allocator would) when a batch holds a nearly white image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.mean(dim=(1, 2, 3)) > 100).any():
            raise RuntimeError("CUDA out of memory. Tried to allocate 6.00 GiB\nmore detail")
        return super().forward(x)


@pytest.fixture(autouse=True, scope="module")
def _models():
    register_model("test-predict-images-tiny", description="test", default_num_classes=3)(Tiny)
    register_model("test-predict-images-fails", description="test", default_num_classes=3)(
        FailsOnBrightImages
    )
    yield
    unregister_model("test-predict-images-tiny")
    unregister_model("test-predict-images-fails")


def checkpoint(path, name: str = "test-predict-images-tiny"):
    torch.manual_seed(0)
    save_checkpoint(path, create_model(name, preprocessing="caffe-voc"), classes=list("abc"))
    return path


def rand_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_declaring(path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))


def phone_photo(path, h: int, w: int, seed: int) -> None:
    """A JPEG stored ``h x w`` with EXIF Orientation 6: viewers show it ``w x h``."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rand_image(h, w, seed)).save(path, exif=exif, quality=95)


def test_one_bad_or_huge_file_never_aborts_the_folder(tmp_path, capsys) -> None:
    weights = checkpoint(tmp_path / "tiny.pt")
    folder = tmp_path / "photos"
    folder.mkdir()
    good = []
    for i, (h, w) in enumerate([(20, 30), (20, 30), (20, 30), (33, 17), (9, 40), (20, 30)]):
        Image.fromarray(rand_image(h, w, i)).save(folder / f"good{i}.png")
        good.append(folder / f"good{i}.png")
    phone_photo(folder / "phone.jpg", 24, 36, seed=9)
    good.append(folder / "phone.jpg")
    valid = (folder / "good0.png").read_bytes()
    (folder / "corrupt.png").write_bytes(valid[: len(valid) // 2])  # truncated
    (folder / "notes.jpg").write_text("a shopping list, not a photo")
    png_declaring(folder / "bomb.png", 40_000, 40_000)  # 1.6 gigapixels in a few bytes
    Image.fromarray(rand_image(80, 80, 20)).save(folder / "big.png")  # over --max-image-pixels
    out = tmp_path / "out"
    argv = ["predict", str(weights), str(folder), "--out", str(out), "--batch-size", "2"]
    assert main([*argv, "--max-image-pixels", "5000"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    segmenter = Segmenter(weights)
    for source in good:
        label = np.asarray(Image.open(out / "labels" / f"{source.stem}.png"))
        assert np.array_equal(label, segmenter.predict(source)), source
        assert (out / "overlays" / f"{source.stem}.png").is_file()
    # the phone photo's outputs are in its displayed orientation (portrait)
    assert Image.open(out / "labels/phone.png").size == (24, 36)
    assert Image.open(out / "overlays/phone.png").size == (24, 36)
    summary = err[err.index("4 of 11") :]
    failures = [line.strip() for line in summary.splitlines()[1:] if line.strip()]
    assert len(failures) == 4
    reasons = {name: next(f for f in failures if name in f) for name in
               ("corrupt.png", "notes.jpg", "bomb.png", "big.png")}  # fmt: skip
    assert "truncated" in reasons["corrupt.png"] or "broken" in reasons["corrupt.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert "40000 x 40000" in reasons["bomb.png"] and "limit of 5,000" in reasons["bomb.png"]
    assert "80 x 80 = 6,400 pixels" in reasons["big.png"]
    assert not (out / "labels/bomb.png").exists() and not (out / "labels/big.png").exists()


def test_the_default_pixel_limit_refuses_a_bomb_and_writes_the_rest(tmp_path, capsys) -> None:
    weights = checkpoint(tmp_path / "tiny.pt")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        Image.fromarray(rand_image(12, 14, i)).save(folder / f"img{i}.png")
    png_declaring(folder / "bomb.png", 40_000, 40_000)
    out = tmp_path / "out"
    assert main(["predict", str(weights), str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "limit of 200,000,000" in err and "bomb.png" in err
    assert len(list((out / "labels").glob("*.png"))) == 7


def test_a_failing_image_in_a_batch_does_not_take_the_batch_with_it(tmp_path, capsys) -> None:
    weights = checkpoint(tmp_path / "fails.pt", "test-predict-images-fails")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rand_image(10, 12, i) // 8).save(folder / f"dark{i}.png")
    Image.fromarray(np.full((10, 12, 3), 255, np.uint8)).save(folder / "white.png")
    out = tmp_path / "out"
    argv = ["predict", str(weights), str(folder), "--out", str(out), "--batch-size", "4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"dark{i}.png" for i in range(3)]
    line = next(ln for ln in err[err.index("1 of 4") :].splitlines() if "white.png" in ln)
    assert "out of memory" in line and "more detail" not in line  # one sentence


def test_all_good_images_exit_0(tmp_path, capsys) -> None:
    weights = checkpoint(tmp_path / "tiny.pt")
    Image.fromarray(rand_image(10, 12, 0)).save(tmp_path / "a.png")
    assert (
        main(["predict", str(weights), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 0
    )
    assert "wrote 1 label map" in capsys.readouterr().out


def test_predict_help_documents_the_pixel_limit(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-image-pixels" in out and "200,000,000" in out


def test_heatmap_reads_photos_upright_and_refuses_bombs(tmp_path, capsys) -> None:
    from fcnkit.cli.weights import read_photo

    phone_photo(tmp_path / "phone.jpg", 24, 36, seed=1)
    assert read_photo(tmp_path / "phone.jpg").shape == (36, 24, 3)
    values = np.array([[0, 257, 65535]], np.uint16)  # 16-bit: scaled, not clipped to white
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert read_photo(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 1, 255]
    png_declaring(tmp_path / "bomb.png", 40_000, 40_000)
    assert main(["heatmap", str(tmp_path / "bomb.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bomb.png" in err and "limit of 200,000,000" in err


def test_debug_shows_each_failures_traceback(tmp_path, capsys, monkeypatch) -> None:
    weights = checkpoint(tmp_path / "tiny.pt")
    (tmp_path / "notes.png").write_text("not an image")
    argv = ["predict", str(weights), str(tmp_path / "notes.png"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("FCNKIT_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "notes.png: not an image" in err
