"""Parameter groups (bias lr x2, no decay; frozen and fixed upsamplers excluded), schedules."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from fcnkit import create_model
from fcnkit.engine.config import OptimConfig, ScheduleConfig
from fcnkit.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.score_fr = nn.Conv2d(4, 2, 1)
        self.frozen = nn.Conv2d(2, 2, 1)
        self.frozen.requires_grad_(False)
        self.upscore = nn.ConvTranspose2d(2, 2, 4, 2, bias=False)
        self.upscore.weight.requires_grad_(False)  # fixed bilinear upsampler


def _names(groups: list[dict], kind: str) -> list[str]:
    return [n for g in groups if g["kind"] == kind for n in g["names"]]


def test_bias_double_lr_no_decay() -> None:
    cfg = OptimConfig(lr=1e-4, weight_decay=5e-4)
    groups = {g["kind"]: g for g in param_groups(Net(), cfg)}
    assert groups["bias"]["lr"] == pytest.approx(2e-4)
    assert groups["bias"]["weight_decay"] == 0.0
    assert set(groups["bias"]["names"]) == {"conv.bias", "bn.bias", "score_fr.bias"}
    assert groups["weight"]["lr"] == pytest.approx(1e-4)
    assert groups["weight"]["weight_decay"] == 5e-4
    assert set(groups["weight"]["names"]) == {"conv.weight", "score_fr.weight"}
    assert groups["norm"]["names"] == ["bn.weight"]
    no_norm_decay = param_groups(Net(), OptimConfig(norm_weight_decay=0.0))
    assert {g["kind"]: g for g in no_norm_decay}["norm"]["weight_decay"] == 0.0


def test_frozen_and_fixed_upsampler_are_excluded() -> None:
    net = Net()
    groups = param_groups(net, OptimConfig())
    names = [n for g in groups for n in g["names"]]
    assert "upscore.weight" not in names
    assert not any(n.startswith("frozen.") for n in names)
    optimizer = build_optimizer(net, OptimConfig(lr=0.1))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(net.upscore.weight) not in in_optimizer
    assert id(net.frozen.weight) not in in_optimizer


def test_sgd_update_uses_group_rates() -> None:
    net = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(1.0)
    opt = build_optimizer(net, OptimConfig(lr=0.1, momentum=0.0, weight_decay=0.5))
    net.weight.grad = torch.ones_like(net.weight)
    net.bias.grad = torch.ones_like(net.bias)
    opt.step()
    # weight: 1 - 0.1 * (1 + 0.5 * 1); bias: 1 - 0.2 * 1 (x2 lr, no decay)
    assert net.weight.item() == pytest.approx(1 - 0.1 * 1.5)
    assert net.bias.item() == pytest.approx(1 - 0.2)


def test_fused_sgd_makes_the_momentum_update() -> None:
    """The fused kernel (used on the CPU) against the update written out: ``v = m v + g + wd w``,
    ``w -= lr v`` (PyTorch's SGD; Caffe's differs only in where lr enters, the same while lr
    is fixed), three steps with different gradients, in float64 by hand."""
    torch.manual_seed(0)
    net = nn.Conv2d(2, 3, 1)
    opt = build_optimizer(net, OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.01))
    assert all(g["fused"] for g in opt.param_groups)
    w, b = net.weight.detach().double().clone(), net.bias.detach().double().clone()
    vw, vb = torch.zeros_like(w), torch.zeros_like(b)
    for _ in range(3):
        gw, gb = torch.randn_like(net.weight), torch.randn_like(net.bias)
        net.weight.grad, net.bias.grad = gw.clone(), gb.clone()
        opt.step()
        vw = 0.9 * vw + gw.double() + 0.01 * w
        vb = 0.9 * vb + gb.double()  # biases: no decay, twice the rate
        w, b = w - 0.1 * vw, b - 0.2 * vb
    torch.testing.assert_close(net.weight.detach().double(), w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(net.bias.detach().double(), b, rtol=1e-6, atol=1e-7)
    with torch.device("meta"):  # no fused kernel there: the per-tensor loop
        assert not build_optimizer(nn.Conv2d(1, 1, 1), OptimConfig()).param_groups[0]["fused"]


def test_paper_model_fixed_upsampler_excluded() -> None:
    """fcn32s's final upsampler is fixed bilinear: not optimised (Sec. 3.3, reference lr 0)."""
    with torch.device("meta"):
        model = create_model("fcn32s", 21)
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any("upscore" in n for n in fixed)
    names = {n for g in param_groups(model, OptimConfig()) for n in g["names"]}
    assert not names & fixed
    assert {"score_fr.weight", "score_fr.bias", "fc6.weight"} <= names
    assert "score_fr.bias" in _names(param_groups(model, OptimConfig()), "bias")


def test_adamw_and_errors() -> None:
    opt = build_optimizer(Net(), OptimConfig(name="adamw", lr=1e-3, betas=[0.8, 0.99]))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.8, 0.99)
    frozen = nn.Conv2d(1, 1, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(frozen, OptimConfig())


def test_schedules() -> None:
    fixed = lr_factor(ScheduleConfig(name="fixed"), 100)
    assert fixed(0) == fixed(99) == 1.0
    poly = lr_factor(ScheduleConfig(name="poly", power=0.9), 100)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9) and poly(100) == 0.0
    step = lr_factor(ScheduleConfig(name="step", step_size=10, gamma=0.1), 100)
    assert step(9) == 1.0 and step(10) == pytest.approx(0.1) and step(25) == pytest.approx(0.01)
    warm = lr_factor(ScheduleConfig(name="fixed", warmup_steps=10, warmup_factor=0.1), 100)
    assert warm(0) == pytest.approx(0.1) and warm(5) == pytest.approx(0.55) and warm(10) == 1.0


def test_scheduler_steps_every_group_and_saves_weights_only() -> None:
    net = Net()
    opt = build_optimizer(net, OptimConfig(lr=1.0))
    sched = build_scheduler(opt, ScheduleConfig(name="poly", power=1.0), total_steps=4)
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g["kind"]: g["lr"] for g in opt.param_groups}
    assert lrs["weight"] == pytest.approx(0.5) and lrs["bias"] == pytest.approx(1.0)  # x2 kept
    buf = io.BytesIO()
    torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = build_scheduler(build_optimizer(Net(), OptimConfig(lr=1.0)), ScheduleConfig(), 4)
    fresh.load_state_dict(state["scheduler"])
    assert fresh.last_epoch == 2
