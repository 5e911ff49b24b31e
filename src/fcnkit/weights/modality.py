"""Modality conversions of pretrained weights (paper Sec. 5, NYUDv2): HHA trunk filters,
RGB -> RGB-D widening of ``conv1_1``, and two single-stream nets -> one late-fusion net.

They change *weights* to fit a network built for another input, so they live with the
loaders (:mod:`fcnkit.weights.load`, :mod:`fcnkit.weights.caffe`), not with the models.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

# HHA input-channel convention: the reference's. Its data layer (nyud_layers.py, load_hha)
# feeds HHA in the PNG's own channel order minus (132.431, 94.076, 118.477); only colour is
# reversed to BGR. fcnkit feeds HHA the same way to every HHA trunk: the single-stream ``hha``
# net (``caffe-nyud-hha``) and the late-fusion ``conv1_1hha`` (``caffe-nyud-color-hha``).
# Hence:
# - the reference's HHA nets (nyud-fcn32s-hha-heavy, the hha trunk of
#   nyud-fcn32s-color-hha-heavy) were trained on this input and load unchanged;
# - an ImageNet trunk initialising an HHA net meets HHA as the reference's did: the reference
#   copies VGG_ILSVRC_16_layers (BGR-trained) as it is (nyud-fcn32s-hha/solve.py), so HHA
#   channel k meets the filter of BGR channel k. BGR-trained weights (Caffe VGG16, HED)
#   therefore load unchanged; RGB-trained weights (torchvision) get their input channels
#   reversed into that same pairing (:func:`hha_trunk_filters`, called by
#   fcnkit.weights.load for ``conv1_1hha`` and the ``hha`` net's ``conv1_1``);
# - a single-stream HHA run and the late-fusion HHA trunk read the same input, so
#   :func:`late_fusion_state_dict` copies the HHA net's conv1_1 as it is.

HHA_TRUNK_FIRST_CONV = "conv1_1hha.weight"


def hha_trunk_filters(weight: Tensor, channel_order: str = "BGR") -> Tensor:
    """``conv1_1`` filters of an ImageNet trunk trained on ``channel_order`` input, for an HHA
    trunk (HHA in file order), paired as the reference pairs them: HHA channel ``k`` meets the
    filter of BGR channel ``k`` (the reference copies the BGR-trained VGG16 as it is).

    ``"BGR"`` (Caffe VGG16, HED): unchanged. ``"RGB"`` (torchvision): input channels
    reversed, R, G, B -> B, G, R. See the convention above.
    """
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected [out, 3, kh, kw] HHA filters, got {tuple(weight.shape)}")
    return weight.flip(1) if channel_order == "RGB" else weight


def expand_input_filters(weight: Tensor, in_channels: int) -> Tensor:
    """Widen a ``[out, 3, k, k]`` filter bank to ``in_channels`` inputs.

    The new input filters are the mean of the RGB filters, as the reference initialises
    the depth filter of early-fusion RGB-D ``conv1_1`` from a colour net.
    """
    extra = in_channels - weight.shape[1]
    if extra < 0:
        raise ValueError(f"cannot shrink {weight.shape[1]} input channels to {in_channels}")
    mean = weight[:, :3].mean(dim=1, keepdim=True)
    return torch.cat([weight, mean.expand(-1, extra, -1, -1)], dim=1)


def load_rgb_weights(model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True):
    """Load 3-channel weights into a model whose ``conv1_1`` takes more channels (RGB-D).

    ``conv1_1.weight`` is widened with :func:`expand_input_filters`; the rest loads as is.
    Returns ``load_state_dict``'s result.
    """
    state = dict(state_dict)
    target = model.conv1_1.weight
    if "conv1_1.weight" in state and state["conv1_1.weight"].shape[1] < target.shape[1]:
        state["conv1_1.weight"] = expand_input_filters(state["conv1_1.weight"], target.shape[1])
    return model.load_state_dict(state, strict=strict)


def late_fusion_state_dict(
    color: Mapping[str, Tensor], hha: Mapping[str, Tensor], *, hha_reversed: bool = False
) -> dict[str, Tensor]:
    """Two single-trunk state dicts -> one for the late-fusion ``rgb+hha`` net.

    Trunk and score layers get the ``color``/``hha`` suffix (``conv1_1color.weight``,
    ``score_frhha.weight``); the shared upsamplers (``upscore*``) come from ``color``. This
    is the reference's ``surgery.transplant(..., suffix='color' / 'hha')`` of
    ``nyud-fcn32s-color-hha/solve.py``: every tensor is copied as it is, since the HHA net
    read HHA in file order as the late-fusion trunk does (see the convention above).

    ``hha_reversed``: the HHA net was trained on HHA with its channels reversed (fcnkit runs
    made before fcnkit followed the reference here: their preprocessing reads ``"BGR"``). Its
    ``conv1_1`` input channels are then reversed, so the trunk computes on file-order HHA
    exactly what the net computed on reversed HHA.
    """
    fused: dict[str, Tensor] = {}
    for suffix, state in (("color", color), ("hha", hha)):
        for key, value in state.items():
            layer, _, param = key.partition(".")
            if layer.startswith("upscore"):
                fused.setdefault(key, value)
            else:
                fused[f"{layer}{suffix}.{param}"] = value
    if hha_reversed and HHA_TRUNK_FIRST_CONV in fused:
        fused[HHA_TRUNK_FIRST_CONV] = fused[HHA_TRUNK_FIRST_CONV].flip(1)
    return fused
