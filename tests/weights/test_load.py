"""Weight entries and load_weights: every source (pip-package EfficientNet-Lite0 and HED,
torchvision through the hub cache, Caffe files, local .pt/.pth) and every failure mode."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from urllib.error import URLError

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fcnkit
from fcnkit import weights as W
from fcnkit.preprocessing import Preprocessing, get_preprocessing
from fcnkit.weights import download as weight_download
from fcnkit.weights import load as weight_load
from fcnkit.weights import save_checkpoint


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache and fcnkit weights dir; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FCNKIT_WEIGHTS_DIR", str(tmp_path / "fcnkit"))
    monkeypatch.delenv("FCNKIT_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "fcnkit").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def vgg_fcn() -> nn.Module:
    """One FCN-32s (VGG16, 2 classes), shared: each test loads the weights it checks."""
    return fcnkit.create_model("fcn32s", 2)


# --------------------------------------------------------------------------- metadata


def test_every_entry_has_complete_metadata() -> None:
    entries = W.list_weights()
    assert len({e.name for e in entries}) == len(entries)
    for e in entries:
        assert e.kind in weight_load._LOADERS, e.name
        assert e.source and e.license and e.file_name and e.description, e.name
        assert e.models or "convolutionalize only" in e.description, e.name
        assert isinstance(get_preprocessing(e.preprocessing), Preprocessing), e.name
        assert e.metrics_note or not e.metrics, e.name
    names = {e.name for e in entries}
    assert {
        "efficientnet_lite0-imagenet1k",
        "vgg16-hed-bsds500",
        "vgg16-imagenet1k-v1",
        "vgg16-imagenet1k-features",
        "alexnet-imagenet1k-v1",
        "googlenet-imagenet1k-v1",
        "resnet50-imagenet1k-v1",
        "vgg16-ilsvrc-caffe",
        "fcn8s-heavy-pascal",
        "fcn8s-atonce-pascal",
        "fcn-alexnet-pascal",
        "siftflow-fcn16s-heavy",
        "nyud-fcn32s-color-hha-heavy",
    } <= names


def test_caffe_entries_name_registered_models() -> None:
    registered = fcnkit.list_models()
    for e in W.list_weights():
        if e.kind == "caffemodel":
            assert any(W.compatible(e, m) for m in registered), e.name


def test_nyud_entries_record_their_modality() -> None:
    modality = {e.name: e.modality for e in W.list_weights() if "nyud" in e.name}
    assert modality == {
        "nyud-fcn32s-color-heavy": "rgb",
        "nyud-fcn32s-hha-heavy": "hha",
        "nyud-fcn32s-color-hha-heavy": "rgb+hha",
    }
    hha = W.get_weight_entry("nyud-fcn32s-hha-heavy")
    assert W.compatible(hha, "fcn32s-nyud", "hha") and not W.compatible(hha, "fcn32s-nyud", "rgb")
    assert not W.compatible(hha, "fcn8s", "hha")


def test_entry_for_another_modality_or_model_is_refused(offline_cache) -> None:
    """HHA weights into an RGB model would silently switch its preprocessing: refused before
    anything is read (no file needed), naming the modality to build."""
    with torch.device("meta"):
        rgb = fcnkit.create_model("fcn32s-nyud", 40)
        fcn8s = fcnkit.create_model("fcn8s", 21)
    with pytest.raises(ValueError, match=r"modality='hha'.*built with modality='rgb'"):
        W.load_weights(rgb, "nyud-fcn32s-hha-heavy")
    assert rgb.preprocessing.name == "caffe-nyud-color"
    with pytest.raises(ValueError, match=r"made for fcn32s-nyud, not 'fcn8s'"):
        W.load_weights(fcn8s, "nyud-fcn32s-color-heavy")
    with pytest.raises(ValueError, match=r"made for fcn16s, not 'fcn8s'"):
        W.load_weights(fcn8s, "fcn16s-heavy-pascal")


def test_torchvision_entries_follow_torchvision_enums() -> None:
    from torchvision.models import VGG16_Weights

    e = W.get_weight_entry("vgg16-imagenet1k-v1")
    assert e.source == VGG16_Weights.IMAGENET1K_V1.url and e.file_name == "vgg16-397923af.pth"
    assert e.metrics == {"acc@1": 71.592, "acc@5": 90.382}
    assert e.class_names() == W.imagenet_classes()
    features = W.get_weight_entry("vgg16-imagenet1k-features")
    assert features.metrics == {}  # torchvision publishes NaN: no classifier


@pytest.mark.parametrize("name", ["efficientnet_lite0-imagenet1k", "vgg16-hed-bsds500"])
def test_package_files_are_available_and_match_their_hash(name: str) -> None:
    entry = W.get_weight_entry(name)
    path = entry.locate()
    assert path is not None and entry.available
    assert path.stat().st_size == entry.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


def test_extra_presets() -> None:
    x = torch.tensor([0.0, 127.0, 255.0]).view(1, 3, 1, 1).expand(1, 3, 1, 1).clone()
    lite = get_preprocessing("tf-efficientnet-lite").normalize(x.repeat(1, 1, 1, 1))
    assert lite.flatten().tolist() == pytest.approx([-127 / 128, 0.0, 128 / 128])
    # torchvision's IMAGENET1K_FEATURES transform: (x / 255 - mean) / (1 / 255)
    feats = get_preprocessing("torchvision-vgg16-features").normalize(x)
    mean = torch.tensor([0.48235, 0.45882, 0.40784])
    torch.testing.assert_close(feats.flatten(), x.flatten() - 255 * mean)


# --------------------------------------------------------------------------- pip packages


def test_efficientnet_entry_into_fcn() -> None:
    model = fcnkit.create_model(
        "fcn32s-efficientnet_lite0", 3, weights="efficientnet_lite0-imagenet1k"
    )
    state = torch.load(
        W.get_weight_entry("efficientnet_lite0-imagenet1k").path(), weights_only=True
    )
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert model.weights == "efficientnet_lite0-imagenet1k"
    assert model.preprocessing.name == "tf-efficientnet-lite"


def test_efficientnet_weights_need_an_efficientnet_model(vgg_fcn) -> None:
    with pytest.raises(ValueError, match="made for fcn\\*-efficientnet_lite0, not 'fcn32s'"):
        W.load_weights(vgg_fcn, "efficientnet_lite0-imagenet1k")
    with pytest.raises(ValueError, match="EfficientNet-Lite0 backbone"):  # a plain module
        W.load_weights(nn.Conv2d(3, 3, 1), "efficientnet_lite0-imagenet1k")


def test_hed_into_vgg_trunk_matches_the_h5_exactly(vgg_fcn) -> None:
    entry = W.get_weight_entry("vgg16-hed-bsds500")
    fc6_before = vgg_fcn.fc6.weight.clone()
    report = W.load_weights(vgg_fcn, "vgg16-hed-bsds500")
    with h5py.File(entry.path(), "r") as f:
        kernel = np.asarray(f["block1/layers/conv2d/vars/0"])  # block1_conv1: kh, kw, in, out
        assert f["block1/layers/conv2d/vars"].attrs["name"] == "block1_conv1"
        # element by element: torch [out, in, y, x] == keras [y, x, in, out]
        w = vgg_fcn.conv1_1.weight.detach().numpy()
        assert w[5, 2, 0, 1] == kernel[0, 1, 2, 5] and w[63, 0, 2, 1] == kernel[2, 1, 0, 63]
        for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            for i in range(n):
                group = f[f"block{block}/layers/conv2d{'_' + str(i) if i else ''}/vars"]
                assert group.attrs["name"] == f"block{block}_conv{i + 1}"
                conv = getattr(vgg_fcn, f"conv{block}_{i + 1}")
                np.testing.assert_array_equal(
                    conv.weight.detach().numpy(), np.asarray(group["0"]).transpose(3, 2, 0, 1)
                )
                np.testing.assert_array_equal(conv.bias.detach().numpy(), np.asarray(group["1"]))
    assert torch.equal(vgg_fcn.fc6.weight, fc6_before)  # fc6/fc7 stay freshly initialised
    assert len(report.loaded) == 26 and "fc6.weight" in report.untouched
    assert vgg_fcn.preprocessing.name == "caffe-voc" and vgg_fcn.weights == "vgg16-hed-bsds500"


def test_hed_weights_really_detect_edges() -> None:
    """The trunk plus HED's own side outputs, run in PyTorch on a real photo, give an edge
    map that follows the image gradient (guards the kernel layout and BGR order)."""
    from scipy import ndimage
    from skimage import data

    path = W.get_weight_entry("vgg16-hed-bsds500").path()
    convs = W.read_hed_h5(path)
    with h5py.File(path, "r") as f:

        def conv1x1(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            k = torch.from_numpy(np.asarray(f[f"{name}/vars/0"])).permute(3, 2, 0, 1)
            return k, torch.from_numpy(np.asarray(f[f"{name}/vars/1"]))

        sides_w = [conv1x1(f"dsn{i}") for i in range(1, 6)]
        fuse = conv1x1("fuse")
    image = data.camera()[::4, ::4].astype(np.float32)  # 128 x 128 greyscale photo
    rgb = np.repeat(image[..., None], 3, axis=2)
    x = get_preprocessing("caffe-voc").normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    sides = []
    with torch.no_grad():
        for stage, names in enumerate(
            [
                [f"conv{b}_{i}" for i in range(1, n + 1)]
                for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
            ]
        ):
            if stage:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for name in names:
                x = F.relu(F.conv2d(x, *convs[name], padding=1))
            side = F.conv2d(x, *sides_w[stage])
            sides.append(F.interpolate(side, size=image.shape, mode="bilinear"))
        edges = torch.sigmoid(F.conv2d(torch.cat(sides, 1), *fuse))[0, 0].numpy()
    gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
    assert np.corrcoef(edges.ravel(), gradient.ravel())[0, 1] > 0.4
    assert edges.max() > 0.9 and np.median(edges) < 0.5


def test_trunk_weights_keep_a_caffe_models_dataset_mean() -> None:
    model = nn.Module()
    model.preprocessing = get_preprocessing("caffe-siftflow")
    weight_load._set_preprocessing(model, "caffe-voc", trunk=True)  # HED trunk into SIFT Flow
    assert model.preprocessing.name == "caffe-siftflow"
    weight_load._set_preprocessing(model, "torchvision-imagenet", trunk=True)  # other convention
    assert model.preprocessing.name == "torchvision-imagenet"
    weight_load._set_preprocessing(model, "caffe-voc", trunk=False)  # a full FCN's own
    assert model.preprocessing.name == "caffe-voc"


# --------------------------------------------------------------------------- torchvision


def test_torchvision_weights_missing_fail_at_once_naming_the_file(offline_cache) -> None:
    with torch.device("meta"):
        model = fcnkit.create_model("fcn32s", 2)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        W.load_weights(model, "vgg16-imagenet1k-v1")
    assert time.monotonic() - start < 2.0
    message = str(info.value)
    expected = offline_cache / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert str(expected) in message and "network is unreachable" in message
    assert "weights='/path/to/vgg16-397923af.pth'" in message


def test_torchvision_weight_file_policy(offline_cache, monkeypatch) -> None:
    """One policy for every torchvision file: the hub cache, else one download with a short
    timeout (none with FCNKIT_OFFLINE), any failure an immediate clear error."""
    from torchvision.models import ResNet50_Weights

    cache = offline_cache / "torch" / "hub" / "checkpoints"
    calls = []

    def fake_download(url: str, target: Path, timeout: float) -> None:
        calls.append((url, timeout))
        target.write_bytes(b"downloaded")

    monkeypatch.setattr(weight_download, "_download", fake_download)
    member = ResNet50_Weights.IMAGENET1K_V2
    path = W.torchvision_weight_file(member)
    assert path == cache / "resnet50-11ad3fa6.pth" and calls == [(member.url, 10.0)]
    # cached now: no second download, whatever the spelling
    assert W.torchvision_weight_file("ResNet50_Weights.IMAGENET1K_V2") == path
    assert W.torchvision_weight_file("resnet50-imagenet1k-v2") == path and len(calls) == 1
    monkeypatch.setenv("FCNKIT_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"FCNKIT_OFFLINE.*place resnet50-0676ba61\.pth"):
        W.torchvision_weight_file(ResNet50_Weights.IMAGENET1K_V1)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="not torchvision weights"):
        W.torchvision_weight_file("fcn8s-heavy-pascal")


def test_download_gives_up_after_the_timeout(offline_cache, monkeypatch) -> None:
    """A download that stalls (packets dropped) fails after the socket timeout, not hanging."""
    import socket

    seen = []

    def stalled(url, dst, *args, **kwargs):
        seen.append(socket.getdefaulttimeout())
        raise TimeoutError("timed out")

    monkeypatch.setattr(torch.hub, "download_url_to_file", stalled)
    monkeypatch.setenv("FCNKIT_DOWNLOAD_TIMEOUT", "0.5")
    before = socket.getdefaulttimeout()
    with pytest.raises(FileNotFoundError, match="TimeoutError: timed out"):
        W.torchvision_weight_file("vgg16-imagenet1k-v1")
    assert seen == [0.5] and socket.getdefaulttimeout() == before


def test_torchvision_vgg16_mapping_is_the_classifier(vgg_fcn) -> None:
    """features.N -> conv*_*, classifier.0/3 -> fc6/fc7 as convolutions: fc6 on a pool5 map
    equals torchvision's Linear on the flattened map."""
    from torchvision.models import vgg16

    tv = vgg16()
    weight_load._copy_trunk(
        vgg_fcn, W.torchvision_vgg16_to_caffe(tv.state_dict()), "tv", channel_order="RGB"
    )
    assert torch.equal(vgg_fcn.conv4_2.weight, tv.features[19].weight)
    pool5 = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        expected = tv.classifier[3](tv.classifier[0](pool5.flatten(1)))
        got = vgg_fcn.fc7(vgg_fcn.fc6(pool5)).flatten(1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_torchvision_features_entry_from_the_hub_cache(offline_cache, vgg_fcn) -> None:
    from torchvision.models import vgg16

    features = {k: v for k, v in vgg16().state_dict().items() if k.startswith("features.")}
    entry = W.get_weight_entry("vgg16-imagenet1k-features")
    torch.save(features, offline_cache / "torch" / "hub" / "checkpoints" / entry.file_name)
    assert entry.available
    fc6 = vgg_fcn.fc6.weight.clone()
    vgg_fcn.preprocessing = get_preprocessing("caffe-voc")
    W.load_weights(vgg_fcn, "vgg16-imagenet1k-features")
    assert torch.equal(vgg_fcn.conv1_1.weight, features["features.0.weight"])
    assert torch.equal(vgg_fcn.conv5_3.bias, features["features.28.bias"])
    assert torch.equal(vgg_fcn.fc6.weight, fc6)
    assert vgg_fcn.preprocessing.name == "torchvision-vgg16-features"


def test_torchvision_googlenet_into_fcn_googlenet(offline_cache) -> None:
    from torchvision.models import googlenet

    tv = googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    entry = W.get_weight_entry("googlenet-imagenet1k-v1")
    torch.save(tv, offline_cache / "torch" / "hub" / "checkpoints" / entry.file_name)
    model = fcnkit.create_model("fcn32s-googlenet", 3, weights="googlenet-imagenet1k-v1")
    own = model.state_dict()
    trunk = [k for k in tv if not k.startswith(("fc.", "aux1.", "aux2."))]
    assert trunk and all(torch.equal(own[k], tv[k]) for k in trunk)
    assert model.preprocessing.name == "torchvision-imagenet"


def test_torchvision_alexnet_is_for_convolutionalize_only(offline_cache) -> None:
    """torchvision's AlexNet is not CaffeNet: not offered to fcn32s-alexnet, but loads into a
    torchvision AlexNet for surgery.convolutionalize."""
    from torchvision.models import alexnet

    from fcnkit.surgery import convolutionalize

    entry = W.get_weight_entry("alexnet-imagenet1k-v1")
    assert not any(W.compatible(entry, m) for m in fcnkit.list_models())
    state = alexnet().state_dict()
    torch.save(state, offline_cache / "torch/hub/checkpoints" / entry.file_name)
    with torch.device("meta"):
        model = fcnkit.create_model("fcn32s-alexnet", 2)
    with pytest.raises(ValueError, match="made for no fcnkit model.*convolutionalize only"):
        W.load_weights(model, "alexnet-imagenet1k-v1")
    classifier = alexnet()
    W.load_weights(classifier, "alexnet-imagenet1k-v1")
    assert torch.equal(classifier.features[0].weight, state["features.0.weight"])
    assert convolutionalize(classifier) is not None


# --------------------------------------------------------------------------- Caffe entries


def test_caffe_entry_missing_names_the_folder(offline_cache) -> None:
    with torch.device("meta"):
        model = fcnkit.create_model("fcn8s", 21)
    with pytest.raises(FileNotFoundError) as info:
        W.load_weights(model, "fcn8s-heavy-pascal")
    message = str(info.value)
    assert str(offline_cache / "fcnkit" / "fcn8s-heavy-pascal.caffemodel") in message
    assert "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel" in message


def test_caffe_entry_found_in_weights_dir(offline_cache) -> None:
    from test_caffe import MiniFCN, layers_from_state, net

    state = {k: torch.randn_like(v) for k, v in MiniFCN().state_dict().items()}
    (offline_cache / "fcnkit" / "fcn32s-heavy-pascal.caffemodel").write_bytes(
        net(layers_from_state(state, v1=False))
    )
    model = MiniFCN()
    model.preprocessing = get_preprocessing("torchvision-imagenet")
    W.load_weights(model, "fcn32s-heavy-pascal")
    assert torch.equal(model.score_fr.weight, state["score_fr.weight"])
    assert model.preprocessing.name == "caffe-voc" and model.weights == "fcn32s-heavy-pascal"


# --------------------------------------------------------------------------- local files


def test_fcnkit_checkpoint_round_trip(tmp_path) -> None:
    model = fcnkit.create_model("fcn16s-efficientnet_lite0", 3)
    with torch.no_grad():
        model.score_fr.weight.normal_()
    model.preprocessing = get_preprocessing("torchvision-imagenet")
    path = save_checkpoint(tmp_path / "ckpt.pt", model)
    loaded = fcnkit.create_model("fcn16s-efficientnet_lite0", 3, weights=str(path))
    assert torch.equal(loaded.score_fr.weight, model.score_fr.weight)
    assert loaded.preprocessing.name == "torchvision-imagenet"
    with pytest.raises(ValueError, match=r"ckpt\.pt: checkpoint of 'fcn16s-efficientnet_lite0'"):
        fcnkit.create_model("fcn16s-efficientnet_lite0", 5, weights=str(path))


def test_plain_and_package_state_dicts(tmp_path) -> None:
    model = fcnkit.create_model("fcn32s-efficientnet_lite0", 2)
    torch.save(model.state_dict(), tmp_path / "own.pth")
    again = fcnkit.create_model("fcn32s-efficientnet_lite0", 2, weights=str(tmp_path / "own.pth"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True)
    )
    # the package's efficientnet_pytorch file, passed as a path
    package_file = W.get_weight_entry("efficientnet_lite0-imagenet1k").path()
    m = fcnkit.create_model("fcn32s-efficientnet_lite0", 2, weights=str(package_file))
    state = torch.load(package_file, weights_only=True)
    assert torch.equal(m.backbone._conv_stem.weight, state["_conv_stem.weight"])
    assert m.preprocessing.name == "tf-efficientnet-lite"


def test_bad_specs_fail_clearly(tmp_path) -> None:
    model = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="unknown weights 'imagenet'.*known weights: "):
        W.load_weights(model, "imagenet")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        W.load_weights(model, str(tmp_path / "missing.pt"))
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown weights file type '\.npz'"):
        W.load_weights(model, str(tmp_path / "w.npz"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt could not be read.*weights_only=True"):
        W.load_weights(model, str(tmp_path / "junk.pt"))
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt does not fit"):
        W.load_weights(model, str(tmp_path / "other.pt"))
    (tmp_path / "bad.h5").write_bytes(b"no hdf5")
    with pytest.raises(ValueError, match=r"bad\.h5 is not a readable HDF5 file"):
        W.load_weights(model, str(tmp_path / "bad.h5"))


class VGGTrunk(nn.Module):
    """VGG16 convolutions with Caffe names, per trunk suffix (NYUD: "color", "hha")."""

    def __init__(self, in_channels: int = 3, suffixes: tuple[str, ...] = ("",)) -> None:
        super().__init__()
        for s in suffixes:
            c = in_channels
            for b, (width, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
                for i in range(1, n + 1):
                    self.add_module(f"conv{b}_{i}{s}", nn.Conv2d(c, width, 3, padding=1))
                    c = width
            self.add_module(f"score_fr{s}", nn.Conv2d(512, 2, 1))


def test_hed_into_rgbd_trunk_widens_conv1_1() -> None:
    """Early fusion RGB-D: the depth filter starts as the mean of the RGB filters."""
    model = VGGTrunk(in_channels=4)
    report = W.load_weights(model, "vgg16-hed-bsds500")
    rgb = W.read_hed_h5(W.get_weight_entry("vgg16-hed-bsds500").path())["conv1_1"][0]
    torch.testing.assert_close(model.conv1_1.weight[:, :3], rgb, rtol=0, atol=0)
    torch.testing.assert_close(model.conv1_1.weight[:, 3], rgb.mean(1))
    assert any("mean of the RGB filters" in n for n in report.notes)


def test_hed_into_late_fusion_fills_both_trunks() -> None:
    """BGR-trained HED filters go into both trunks as they are: the reference initialises its
    HHA net from the BGR-trained VGG16 unchanged (nyud-fcn32s-hha/solve.py copy_from) and
    feeds it HHA in file order (nyud_layers.py load_hha), so HHA channel k meets BGR filter k."""
    model = VGGTrunk(suffixes=("color", "hha"))
    report = W.load_weights(model, "vgg16-hed-bsds500")
    convs = W.read_hed_h5(W.get_weight_entry("vgg16-hed-bsds500").path())
    for s in ("color", "hha"):
        assert torch.equal(getattr(model, f"conv5_3{s}").weight, convs["conv5_3"][0])
    assert torch.equal(model.conv1_1color.weight, convs["conv1_1"][0])
    assert torch.equal(model.conv1_1hha.weight, convs["conv1_1"][0])  # was reversed
    assert not any("reversed" in n for n in report.notes)
    assert len(report.loaded) == 52 and sorted(report.untouched)[0] == "score_frcolor.bias"


@pytest.mark.parametrize("modality", ["hha", "rgbd"])
def test_caffe_trunk_keeps_the_nyud_input(modality: str) -> None:
    """Caffe-convention trunk weights (HED: BGR minus the VOC mean) keep a NYUD net's own
    input, as the reference fine-tunes from VGG16 on its NYUD data layer: HHA in file order
    minus (132.431, 94.076, 118.477); RGB-D colour minus its mean and ln(depth) - 7.844
    (nyud_layers.py). The HHA net's conv1_1 is HED's as it is."""
    model = VGGTrunk(in_channels=4 if modality == "rgbd" else 3)
    model.modality = modality
    model.preprocessing = get_preprocessing(f"caffe-nyud-{modality}")
    W.load_weights(model, "vgg16-hed-bsds500")
    assert model.preprocessing.name == f"caffe-nyud-{modality}"  # rgbd was caffe-voc
    conv1_1 = W.read_hed_h5(W.get_weight_entry("vgg16-hed-bsds500").path())["conv1_1"][0]
    assert torch.equal(model.conv1_1.weight[:, :3], conv1_1)


def _tv_vgg16_features(nan_classifier: bool = True) -> dict[str, torch.Tensor]:
    """A state dict laid out like torchvision's ``vgg16_features-amdegroot-88682ab5.pth``:
    real convolutions, the classifier NaN."""
    from torchvision.models import vgg16

    state = vgg16().state_dict()
    if nan_classifier:
        state = {
            k: v.fill_(float("nan")) if k.startswith("classifier.") else v for k, v in state.items()
        }
    return state


@pytest.mark.parametrize("late_fusion", [True, False])
def test_torchvision_rgb_trunk_meets_hha_as_the_reference_vgg16(tmp_path, late_fusion) -> None:
    """The reference pairs HHA channel k with the BGR filter k of its (BGR-trained) VGG16
    (nyud-fcn32s-hha/solve.py copies it as it is; load_hha feeds HHA in file order).
    RGB-trained torchvision filters are reversed into that pairing for the HHA trunk; the
    colour trunk takes them as they are."""
    state = _tv_vgg16_features()
    torch.save(state, tmp_path / "vgg16_features-amdegroot-88682ab5.pth")
    model = VGGTrunk(suffixes=("color", "hha")) if late_fusion else VGGTrunk()
    if not late_fusion:
        model.modality = "hha"
    report = W.load_weights(model, str(tmp_path / "vgg16_features-amdegroot-88682ab5.pth"))
    rgb = state["features.0.weight"]
    hha = model.conv1_1hha.weight if late_fusion else model.conv1_1.weight
    assert torch.equal(hha, rgb.flip(1)) and torch.equal(hha[:, 0], rgb[:, 2])  # B filter
    if late_fusion:
        assert torch.equal(model.conv1_1color.weight, rgb)
    assert any("input channels reversed (RGB-trained" in n for n in report.notes)


@pytest.mark.parametrize("file_name", ["vgg16_features-amdegroot-88682ab5.pth", "mine.pth"])
def test_local_torchvision_features_file_loads_features_only(tmp_path, vgg_fcn, file_name) -> None:
    """Detected by its file name or its NaN classifier: convolutions only, fc6/fc7 untouched
    (not NaN), and the features' own preprocessing."""
    state = _tv_vgg16_features()
    torch.save(state, tmp_path / file_name)
    fc6 = vgg_fcn.fc6.weight.clone()
    vgg_fcn.preprocessing = get_preprocessing("caffe-voc")
    report = W.load_weights(vgg_fcn, str(tmp_path / file_name))
    assert torch.equal(vgg_fcn.conv3_1.weight, state["features.10.weight"])
    assert torch.equal(vgg_fcn.fc6.weight, fc6) and not torch.isnan(vgg_fcn.fc7.weight).any()
    assert vgg_fcn.preprocessing.name == "torchvision-vgg16-features"
    assert "fc6.weight" in report.untouched


def test_local_torchvision_classifier_file_maps_fc6_fc7(tmp_path, vgg_fcn) -> None:
    state = _tv_vgg16_features(nan_classifier=False)
    torch.save(state, tmp_path / "vgg16-397923af.pth")
    W.load_weights(vgg_fcn, str(tmp_path / "vgg16-397923af.pth"))
    assert torch.equal(vgg_fcn.fc7.weight.flatten(1), state["classifier.3.weight"])
    assert vgg_fcn.preprocessing.name == "torchvision-imagenet"


def test_rgb_state_dict_initialises_an_rgbd_net(tmp_path) -> None:
    """An RGB net's weights into early-fusion RGB-D: conv1_1 widened (modality.load_rgb_weights)."""
    rgb, rgbd = nn.Module(), nn.Module()
    rgb.conv1_1, rgb.fc6 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
    rgbd.conv1_1, rgbd.fc6 = nn.Conv2d(4, 8, 3), nn.Conv2d(8, 4, 1)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    W.load_weights(rgbd, str(tmp_path / "rgb.pt"))
    torch.testing.assert_close(rgbd.conv1_1.weight[:, :3], rgb.conv1_1.weight)
    torch.testing.assert_close(rgbd.conv1_1.weight[:, 3], rgb.conv1_1.weight.mean(1))
    assert torch.equal(rgbd.fc6.weight, rgb.fc6.weight)


def test_trunk_weights_need_caffe_names() -> None:
    with pytest.raises(ValueError, match="Caffe parameter names.*has no conv1_1.weight"):
        W.load_weights(nn.Sequential(nn.Conv2d(3, 64, 3)), "vgg16-hed-bsds500")


def test_torchvision_resnet50_into_the_modern_fcn(offline_cache) -> None:
    from torchvision.models import resnet50

    tv = resnet50().state_dict()
    entry = W.get_weight_entry("resnet50-imagenet1k-v2")
    torch.save(tv, offline_cache / "torch" / "hub" / "checkpoints" / entry.file_name)
    model = fcnkit.create_model("fcn8s-resnet50", 2)
    report = W.load_weights(model, "resnet50-imagenet1k-v2")
    own = model.state_dict()
    assert all(
        torch.equal(own[f"backbone.{k}"], v) for k, v in tv.items() if not k.startswith("fc.")
    )
    assert report.notes == ["classifier tensors not used: ['fc.bias', 'fc.weight']"]
    assert model.preprocessing.name == "torchvision-imagenet"
