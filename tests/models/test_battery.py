"""One test battery for every registered model (``list_models()``).

Forward, backward, output size == input size (a property over random sizes, including odd
and tiny ones), eval determinism, tracing, parameter counts and the ``fcnkit models`` CLI.
Heavy models (the pad-100 VGG16 nets) run on few, small inputs with few classes; the
cheap ones get a hypothesis property test.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fcnkit import create_model, list_models
from fcnkit.cli import main as cli_main

MODELS = list_models()
NUM_CLASSES = 3
HEAVY_PARAMS = 100_000_000  # above this a model gets a few fixed sizes, not a property test
HEAVY_SIZES = [(1, 1), (1, 37)]  # and the reference input, 13 x 7


def meta_model(name: str, num_classes: int | None = None) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def outputs(out: Tensor | dict[str, Tensor]) -> dict[str, Tensor]:
    return out if isinstance(out, dict) else {"out": out}


def channels(model: nn.Module) -> int:
    return getattr(model, "input_channels", 3)


HEAVY = [n for n in MODELS if count(meta_model(n, NUM_CLASSES)) > HEAVY_PARAMS]


class Built:
    """A model under test with a cached eval output on a reference input."""

    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.name = name
        self.model = create_model(name, NUM_CLASSES)
        self.heavy = name in HEAVY
        with torch.no_grad():  # zero-initialised layers would make every output 0
            for p in self.model.parameters():
                if p.numel() > 1 and (p == 0).all():
                    p.normal_(0, 0.01)
        self.x = torch.randn(1, channels(self.model), 13, 7)
        self.model.eval()
        with torch.no_grad():
            self.reference = outputs(self.model(self.x))


@pytest.fixture(scope="module", params=MODELS)
def built(request) -> Built:
    return Built(request.param)


def test_every_paper_model_is_registered():
    paper = {"fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "fcn32s-fixed", "fcn32s-alexnet"}
    paper |= {"fcn32s-googlenet", "fcn32s-siftflow", "fcn16s-siftflow", "fcn8s-siftflow"}
    paper |= {"fcn32s-nyud", "fcn16s-nyud"}
    assert paper <= set(MODELS)


def test_forward(built: Built):
    model = built.model
    assert model.model_name == built.name and model.num_classes == NUM_CLASSES
    assert model.preprocessing is not None
    if built.heavy:  # the cached output on the 1 x C x 13 x 7 reference input
        batch, size, out = 1, (13, 7), built.reference
    else:
        batch, size = 2, (11, 9)
        with torch.no_grad():
            out = outputs(model(torch.randn(batch, channels(model), *size)))
    primary = next(iter(out.values()))
    assert primary.shape == (batch, NUM_CLASSES, *size)  # the primary head comes first
    for y in out.values():
        assert y.shape[0] == batch and y.shape[2:] == size and y.dtype == torch.float32
        assert torch.isfinite(y).all()
    assert any(y.abs().max() > 0 for y in out.values())


def test_backward(built: Built):
    model = built.model
    saved = {k: b.clone() for k, b in model.named_buffers()}  # batch-norm statistics
    batch = 1 if built.heavy else 2  # batch norm needs more than one value per channel
    model.train()
    try:
        out = outputs(model(torch.randn(batch, channels(model), 9, 10)))
        loss = sum((y * torch.randn_like(y)).sum() for y in out.values())
        loss.backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"no gradient reached {name}"
                assert torch.isfinite(p.grad).all(), name
            else:
                assert p.grad is None, f"frozen {name} got a gradient"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])


def _check_size(model: nn.Module, h: int, w: int) -> None:
    with torch.no_grad():
        out = outputs(model(torch.randn(1, channels(model), h, w)))
    for y in out.values():
        assert y.shape[-2:] == (h, w), (h, w, tuple(y.shape))


def test_output_size_equals_input_size(built: Built):
    model = built.model.eval()
    if built.heavy:
        for h, w in HEAVY_SIZES:
            _check_size(model, h, w)
        return

    @settings(max_examples=12, deadline=None)
    @given(h=st.integers(1, 80), w=st.integers(1, 80))
    @example(1, 1)
    @example(1, 37)
    @example(37, 1)
    @example(2, 3)
    def check(h: int, w: int) -> None:
        _check_size(model, h, w)

    check()


@pytest.mark.parametrize("name", HEAVY)
def test_output_size_property_on_the_meta_device(name: str):
    """Shapes only (no arithmetic), so heavy models get many sizes, large ones included."""
    model = meta_model(name, NUM_CLASSES).eval()

    @settings(max_examples=50, deadline=None)
    @given(h=st.integers(1, 600), w=st.integers(1, 600))
    @example(1, 1)
    @example(1, 511)
    @example(500, 375)  # a typical PASCAL VOC image
    def check(h: int, w: int) -> None:
        out = outputs(model(torch.empty(1, channels(model), h, w, device="meta")))
        for y in out.values():
            assert y.shape[-2:] == (h, w), (h, w, tuple(y.shape))

    check()


def test_eval_is_deterministic(built: Built):
    with torch.no_grad():
        again = outputs(built.model.eval()(built.x))
    assert list(again) == list(built.reference)
    for key, y in again.items():
        assert torch.equal(y, built.reference[key])


def _trace(model: nn.Module, x: Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.trace(model, x, strict=False, check_trace=False)
        except Exception as trace_error:  # fall back on torch.export
            try:
                return torch.export.export(model, (x,)).module()
            except Exception as export_error:
                raise AssertionError(
                    f"neither jit.trace ({trace_error}) nor export ({export_error}) works"
                ) from export_error


def test_trace_or_export(built: Built):
    model = built.model.eval()
    with torch.no_grad():
        traced = _trace(model, built.x)
        out = outputs(traced(built.x))
        assert list(out) == list(built.reference)
        for key, y in out.items():
            torch.testing.assert_close(y, built.reference[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(name: str):
    model = meta_model(name)
    assert count(model) > 0
    assert all(p.is_meta for p in model.parameters())  # builders respect the device context


def test_fcn8s_reference_parameter_count():
    assert count(meta_model("fcn8s", 21)) == 134_489_759


def test_models_cli_lists_every_model(capsys):
    assert cli_main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip()}
    assert set(rows) == set(MODELS)
    assert rows["fcn8s"][1:3] == ["21", "134,489,759"]
    for name in MODELS:
        n = int(rows[name][2].replace(",", ""))
        assert n == count(meta_model(name)), name


def test_models_cli_tag_and_classes(capsys):
    assert cli_main(["models", "--tag", "paper", "--num-classes", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    names = [line.split()[0] for line in lines]
    assert names == list_models("paper") and "fcn8s" in names
    assert all(line.split()[1] == "5" for line in lines)


def test_models_cli_reports_a_model_that_cannot_be_built(capsys, monkeypatch):
    from fcnkit.models import registry

    def broken(num_classes: int) -> nn.Module:
        raise RuntimeError("no such layer")

    monkeypatch.setitem(
        registry._REGISTRY, "zz-broken", registry.ModelEntry("zz-broken", broken, "x")
    )
    assert cli_main(["models"]) == 1
    captured = capsys.readouterr()
    assert "zz-broken" in captured.out and "no such layer" in captured.out
    assert "fcn8s " in captured.out and "zz-broken" in captured.err
