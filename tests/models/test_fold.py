"""``fold_batchnorm_`` against the unfolded model itself, for every registered model with
BatchNorm: the folded copy's scores equal the original's (eval mode, non-trivial running
statistics) up to fp32 rounding, and no BatchNorm is left running."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fcnkit import create_model, list_models
from fcnkit.backends import build_runner
from fcnkit.models.fold import fold_batchnorm_
from fcnkit.models.outputs import SINGLE_HEAD, heads

WITH_BATCHNORM = [
    name
    for name in list_models()
    if any(isinstance(m, nn.BatchNorm2d) for m in create_model(name, 3).modules())
]


def with_statistics(name: str) -> nn.Module:
    """The model with random running statistics and affine terms, and non-zero scores."""
    torch.manual_seed(0)
    model = create_model(name, 3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for p in model.parameters():
            if p.numel() > 1 and (p == 0).all():  # zero-initialised score layers
                p.normal_(0, 0.01)
    return model.eval()


def test_some_models_have_batchnorm() -> None:
    assert "fcn8s-efficientnet_lite0" in WITH_BATCHNORM


@pytest.mark.parametrize("name", WITH_BATCHNORM)
def test_folded_model_gives_the_same_scores(name: str) -> None:
    model = with_statistics(name)
    folded = copy.deepcopy(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm_(folded) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, getattr(model, "input_channels", 3), 67, 45)
    with torch.no_grad():
        want, got = heads(model(x)), heads(folded(x))
    for key in want:
        scale = want[key].abs().max()
        assert scale > 0
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-4 * float(scale))


def test_fold_refuses_a_model_in_training_mode() -> None:
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm_(create_model("fcn8s-efficientnet_lite0", 3).train())


def test_fast_runner_folds_a_copy_and_faithful_runner_does_not() -> None:
    model = with_statistics("fcn8s-efficientnet_lite0")
    faithful = build_runner(model)
    assert faithful.model is model
    fast = build_runner(model, channels_last=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's: kept
    x = torch.randn(1, 3, 64, 64)
    want, got = faithful(x)[SINGLE_HEAD], fast(x)[SINGLE_HEAD]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))
