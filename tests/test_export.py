"""ONNX export with dynamic H, W, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from fcnkit.export import check_onnx, export_onnx
from fcnkit.models import create_model
from fcnkit.preprocessing import get_preprocessing


def crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    h, w = like.shape[-2:]
    return x[:, :, offset : offset + h, offset : offset + w]


class TinyCaffeFCN(nn.Module):
    """The paper's pattern at toy scale: big padding, pooling, a transposed-conv upsampler
    and a crop back to the input (offset 5 here: conv pad 6, pool /2, deconv k4 s2)."""

    def __init__(self, num_classes: int = 3, two_heads: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=6)
        self.score = nn.Conv2d(6, num_classes, 1)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
        self.geo = nn.Conv2d(6, 2, 1) if two_heads else None
        self.up_geo = nn.ConvTranspose2d(2, 2, 4, stride=2, bias=False) if two_heads else None
        self.preprocessing = get_preprocessing("caffe-voc")
        self.model_name = "tiny-caffe-fcn"

    def forward(self, x: torch.Tensor):
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2, ceil_mode=True)
        sem = crop(self.up(self.score(y)), 5, x)
        if self.geo is None:
            return sem
        return {"sem": sem, "geo": crop(self.up_geo(self.geo(y)), 5, x)}


def test_transposed_conv_and_crop_export_with_dynamic_sizes(tmp_path) -> None:
    model = TinyCaffeFCN()
    info = export_onnx(model, tmp_path / "tiny.onnx", example_size=(32, 32))
    assert info["outputs"] == ["scores"] and info["max_abs_diff"] < 1e-4
    # Sizes other than the example's (odd, non-square) run and match.
    session = ort.InferenceSession(str(tmp_path / "tiny.onnx"))
    for h, w in [(17, 45), (50, 9)]:
        x = torch.randn(2, 3, h, w)
        (out,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(out, model(x).numpy(), atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "tiny.onnx")).metadata_props}
    assert json.loads(meta["preprocessing"])["name"] == "caffe-voc"
    assert meta["model_name"] == "tiny-caffe-fcn"


def test_multi_head_models_export_one_output_per_head(tmp_path) -> None:
    model = TinyCaffeFCN(two_heads=True)
    info = export_onnx(model, tmp_path / "two.onnx", example_size=(24, 24))
    assert info["outputs"] == ["scores_sem", "scores_geo"]
    outs = ort.InferenceSession(str(tmp_path / "two.onnx")).run(
        None, {"input": np.zeros((1, 3, 11, 13), np.float32)}
    )
    assert [o.shape for o in outs] == [(1, 3, 11, 13), (1, 2, 11, 13)]


def test_dynamo_exporter_also_works(tmp_path) -> None:
    info = export_onnx(TinyCaffeFCN(), tmp_path / "d.onnx", example_size=(32, 32), dynamo=True)
    assert info["max_abs_diff"] < 1e-4


def test_check_detects_a_mismatch(tmp_path) -> None:
    model = TinyCaffeFCN()
    export_onnx(model, tmp_path / "tiny.onnx", example_size=(32, 32), check=False)
    with torch.no_grad():
        model.score.bias.add_(1.0)  # the file no longer matches the model
    with pytest.raises(AssertionError, match="differs"):
        check_onnx(tmp_path / "tiny.onnx", model, [(20, 20)])


@pytest.mark.parametrize("name", ["fcn8s-mobilenet_v3_large", "fcn8s-efficientnet_lite0"])
def test_registered_model_exports(tmp_path, name) -> None:
    # EfficientNet's TF "SAME" padding depends on the input's parity: the check sizes mix odd
    # and even sizes, so a padding frozen at trace time would fail here
    torch.manual_seed(0)
    model = create_model(name, 4)
    with torch.no_grad():  # score layers start at zero: randomise so the check means something
        for p in model.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0, 0.01)
    info = export_onnx(
        model,
        tmp_path / "m.onnx",
        example_size=(64, 64),
        check_sizes=[(64, 80), (97, 71), (33, 130)],
    )
    assert info["max_abs_diff"] < 1e-3


class TwoTrunks(nn.Module):
    """Late fusion at toy scale: 6 input channels split between two 3-channel trunks (the
    first convolution takes 3 channels, the model 6), as fcn*-nyud modality rgb+hha."""

    input_channels = 6

    def __init__(self) -> None:
        super().__init__()
        self.color = nn.Conv2d(3, 2, 3, padding=1)
        self.hha = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 6:
            raise ValueError(f"expected input N x 6 x H x W, got {tuple(x.shape)}")
        rgb, hha = x.split(3, 1)
        return 0.5 * self.color(rgb) + 0.5 * self.hha(hha)


def test_late_fusion_models_export_with_all_their_input_channels(tmp_path) -> None:
    from fcnkit.export import _in_channels

    with torch.device("meta"):
        fused = create_model("fcn32s-nyud", 2, modality="rgb+hha")
        rgbd = create_model("fcn32s-nyud", 2, modality="rgbd")
    assert fused.conv1_1color.in_channels == 3 and _in_channels(fused) == 6
    assert _in_channels(rgbd) == 4 and _in_channels(TinyCaffeFCN()) == 3
    info = export_onnx(TwoTrunks(), tmp_path / "fused.onnx", example_size=(16, 16))
    assert info["max_abs_diff"] < 1e-4
    (inp,) = ort.InferenceSession(str(tmp_path / "fused.onnx")).get_inputs()
    assert inp.shape[1] == 6


class BatchNormNet(nn.Module):
    """A conv + BatchNorm net whose running statistics differ from any batch's, so a BN left
    in train mode (batch statistics) visibly changes the scores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.score = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.bn.running_mean.fill_(3.0)
            self.bn.running_var.fill_(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(torch.relu(self.bn(self.conv(x))))


@pytest.mark.parametrize("check", [False, True])
def test_export_leaves_an_eval_model_in_eval_mode(tmp_path, check) -> None:
    # the reported bug: export_onnx(model, path, check=False) put the wrapper module in train
    # mode around the exporter, which restored *train* mode on every submodule: the Lite0 FCN's
    # 49 BatchNorm layers then used batch statistics and its scores shifted by up to 4.3
    torch.manual_seed(0)
    model = create_model("fcn32s-efficientnet_lite0", 3).eval()
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        before = model(x)
    export_onnx(model, tmp_path / "m.onnx", example_size=(32, 32), check=check)
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_export_restores_each_submodule_mode_and_exports_inference_batchnorm(tmp_path) -> None:
    model = BatchNormNet().train()
    model.score.eval()  # a mixed state (a frozen part) must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    export_onnx(model, tmp_path / "bn.onnx", example_size=(8, 8), check=False)
    assert {name: m.training for name, m in model.named_modules()} == modes
    # the file holds inference BatchNorm (running statistics), as in eval mode
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    (got,) = ort.InferenceSession(str(tmp_path / "bn.onnx")).run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
