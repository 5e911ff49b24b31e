"""``nonfinite_names``: exact, though its fast path looks at sums only."""

from __future__ import annotations

import torch

from fcnkit.engine.guards import nonfinite_names


def test_names_exactly_the_tensors_with_nan_or_inf() -> None:
    nan, inf = torch.ones(5), torch.ones(2, 3)
    nan[3], inf[1, 2] = float("nan"), -float("inf")
    named = {
        "ok": torch.randn(4, 4),
        "nan": nan,
        "inf": inf,
        "steps": torch.tensor([2**62, 2**62]),  # integers: never reported
        "big": torch.full((4,), 3.0e38),  # finite, but its fp32 sum overflows to inf
        "half": torch.full((3,), 60000.0, dtype=torch.float16),  # fp16 sum 180000 > 65504
        "nan-half": torch.tensor([1.0, float("nan")], dtype=torch.bfloat16),
    }
    assert nonfinite_names(iter(named.items())) == ["nan", "inf", "nan-half"]
    assert nonfinite_names(iter({"a": torch.zeros(3), "big": named["big"]}.items())) == []
    assert nonfinite_names(iter([])) == []
