"""Modality conversions of pretrained weights (paper Sec. 5, NYUDv2): HHA trunk filters,
RGB -> RGB-D widening of ``conv1_1``, and two single-stream nets -> one late-fusion net.

They change *weights* to fit a network built for another input, so they live with the
loaders (:mod:`fcnkit.weights.load`, :mod:`fcnkit.weights.caffe`), not with the models.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

# HHA input-channel convention. fcnkit feeds HHA in *file order* to the late-fusion trunk
# (``caffe-nyud-color-hha`` swaps only the colour channels to BGR), while the reference
# reversed the channels of every PNG it read (its BGR swap), HHA included, and so does
# fcnkit's single-trunk ``hha`` modality (``caffe-nyud-hha``, BGR). Weights trained on
# reversed channels -- the reference's HHA nets, and any BGR-trained trunk used for HHA
# (VGG_ILSVRC_16_layers, HED), which the reference fed reversed HHA -- therefore enter a
# late-fusion HHA trunk with their input channels reversed, through
# :func:`hha_trunk_filters` only (fcnkit.weights.caffe, fcnkit.weights.load and
# :func:`late_fusion_state_dict` all call it). RGB-trained weights (torchvision) pair the
# HHA channels in file order with the R, G, B filters: exactly the pairing the reversal
# gives for BGR weights, so they are copied unchanged.

HHA_TRUNK_FIRST_CONV = "conv1_1hha.weight"


def hha_trunk_filters(weight: Tensor, channel_order: str = "BGR") -> Tensor:
    """``conv1_1`` filters for the late-fusion HHA trunk (``conv1_1hha``), which reads HHA in
    file order, from filters trained on ``channel_order`` input.

    ``"BGR"`` (Caffe-convention weights, the reference's reversed HHA): input channels are
    reversed. ``"RGB"`` (torchvision): unchanged. See the convention above.
    """
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected [out, 3, kh, kw] HHA filters, got {tuple(weight.shape)}")
    return weight.flip(1) if channel_order == "BGR" else weight


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
    color: Mapping[str, Tensor], hha: Mapping[str, Tensor], *, hha_channel_order: str = "BGR"
) -> dict[str, Tensor]:
    """Two single-trunk state dicts -> one for the late-fusion ``rgb+hha`` net.

    Trunk and score layers get the ``color``/``hha`` suffix (``conv1_1color.weight``,
    ``score_frhha.weight``); the shared upsamplers (``upscore*``) come from ``color``.
    ``hha_channel_order`` is the order the ``hha`` net saw its input in (``"BGR"`` for the
    ``hha`` modality's ``caffe-nyud-hha`` and the reference): its ``conv1_1`` goes through
    :func:`hha_trunk_filters`, since the late-fusion net reads HHA in file order.
    """
    fused: dict[str, Tensor] = {}
    for suffix, state in (("color", color), ("hha", hha)):
        for key, value in state.items():
            layer, _, param = key.partition(".")
            if layer.startswith("upscore"):
                fused.setdefault(key, value)
            else:
                fused[f"{layer}{suffix}.{param}"] = value
    key = HHA_TRUNK_FIRST_CONV
    if key in fused:
        fused[key] = hha_trunk_filters(fused[key], hha_channel_order)
    return fused
