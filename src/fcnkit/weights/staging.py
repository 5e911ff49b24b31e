"""Staged initialisation from trained runs: 32s -> 16s -> 8s (paper Sec. 4.2), and the NYUDv2
late-fusion net from its two single-stream runs (Sec. 5; reference
``nyud-fcn32s-color-hha/solve.py``).

``train.init_from`` is a run directory or checkpoint, or for late fusion a mapping
``{color: RUN, hha: RUN}``; :func:`init_from_run` takes either.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fcnkit.preprocessing import CAFFE_NYUD_COLOR_HHA, Preprocessing
from fcnkit.surgery import init_from
from fcnkit.weights.checkpoint import load_model
from fcnkit.weights.load import model_modality
from fcnkit.weights.modality import late_fusion_state_dict

#: the sources of a late-fusion init, and the modality each run must have been trained on
LATE_FUSION_SOURCES = {"color": "rgb", "hha": "hha"}

InitSource = str | os.PathLike | Mapping[str, str | os.PathLike]


def init_from_run(model: nn.Module, source: InitSource) -> dict[str, Any]:
    """Initialise ``model`` from an earlier stage's run directory or checkpoint.

    Uses :func:`fcnkit.surgery.init_from`: shared layers are copied by name; the layers the
    new net adds keep the paper's initialisation (score layers zero, upsamplers bilinear),
    so the 16s net starts out computing (nearly) the FCN-32s output (exactly on pixels more
    than 8 px from every stride-32 cell centre, see ``init_from``). ``model.preprocessing``
    becomes the parent's: the child keeps seeing the inputs the parent was trained on.
    A mapping ``{color: RUN, hha: RUN}`` initialises a late-fusion net: :func:`init_from_runs`.
    Returns a report (source, copied / reshaped / skipped counts, the new layers).
    """
    if isinstance(source, Mapping):
        return init_from_runs(model, source)
    parent, meta = load_model(source)
    report = init_from(parent, model)
    if not report.loaded:
        raise ValueError(f"init_from {source}: no parameter names match {model.model_name}")
    model.preprocessing = parent.preprocessing
    return {
        "source": meta["path"],
        "source_model": meta.get("model_name"),
        "preprocessing": getattr(parent.preprocessing, "name", None),
        "copied": len(report.copied),
        "reshaped": len(report.reshaped),
        "skipped": report.skipped,
        "new_layers": report.missing,  # initialised by init_from: zero score layers, bilinear
    }


def init_sources(source: InitSource) -> list[Path]:
    """The run directories or checkpoints ``source`` names (one, or one per late-fusion
    stream), for checking that they exist before a run starts."""
    if isinstance(source, Mapping):
        return [Path(p) for p in source.values()]
    return [Path(source)]


def missing_init_sources(source: InitSource) -> list[str]:
    """The sources of ``source`` that do not exist (empty when all do)."""
    return [str(p) for p in init_sources(source) if not p.exists()]


def init_from_runs(model: nn.Module, sources: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """The late-fusion ``rgb+hha`` net from a colour run and an HHA run (paper Sec. 5).

    As the reference's ``nyud-fcn32s-color-hha/solve.py``: the two single-stream nets are
    trained first (``nyud-fcn32s-color``, ``nyud-fcn32s-hha``), then their trunks and score
    layers are transplanted under the ``color`` / ``hha`` suffixes
    (:func:`fcnkit.weights.modality.late_fusion_state_dict`) and the fusion is fine-tuned.
    Layers the fused net has and the runs lack (a 16s fusion from 32s runs: ``score_pool4*``,
    ``upscore2``) get the paper's initialisation (:func:`fcnkit.surgery.init_from`).
    ``model.preprocessing`` becomes the runs' own inputs side by side (colour, then HHA in
    file order): ``caffe-nyud-color-hha`` for runs made with the NYUD presets.
    """
    keys = set(sources)
    if keys != set(LATE_FUSION_SOURCES):
        raise ValueError(
            f"init_from for late fusion names the two single-stream runs as "
            f"{{color: RUN, hha: RUN}}; got keys {sorted(keys)}"
        )
    modality = model_modality(model)
    if modality != "rgb+hha":
        raise ValueError(
            f"init_from {{color, hha}} initialises a late-fusion net (modality='rgb+hha'); "
            f"{getattr(model, 'model_name', type(model).__name__)} has modality={modality!r}"
        )
    parents, metas = {}, {}
    for key, wanted in LATE_FUSION_SOURCES.items():
        parent, meta = load_model(sources[key])
        found = model_modality(parent)
        if found != wanted:
            raise ValueError(
                f"init_from {key}: {meta['path']} is a {meta.get('model_name')} run with "
                f"modality={found!r}; the {key} stream needs a modality={wanted!r} run"
            )
        if getattr(parent, "num_classes", None) != getattr(model, "num_classes", None):
            raise ValueError(
                f"init_from {key}: {meta['path']} has {parent.num_classes} classes, "
                f"the model {model.num_classes}"
            )
        parents[key], metas[key] = parent, meta
    hha_prep = parents["hha"].preprocessing
    # a run trained on reversed HHA (fcnkit before it fed HHA as the reference does)
    hha_reversed = hha_prep.channel_order == "BGR"
    fused = late_fusion_state_dict(
        parents["color"].state_dict(), parents["hha"].state_dict(), hha_reversed=hha_reversed
    )
    report = init_from(fused, model)  # type: ignore[arg-type]  # transplant takes a mapping
    if not report.loaded:
        raise ValueError(f"init_from {dict(sources)}: no parameter names match {model.model_name}")
    model.preprocessing = fused_preprocessing(parents["color"].preprocessing, hha_prep)
    return {
        "source": {k: m["path"] for k, m in metas.items()},
        "source_model": {k: m.get("model_name") for k, m in metas.items()},
        "preprocessing": model.preprocessing.name,
        "hha_reversed": hha_reversed,
        "copied": len(report.copied),
        "reshaped": len(report.reshaped),
        "skipped": report.skipped,
        "new_layers": report.missing,
    }


def fused_preprocessing(color: Preprocessing, hha: Preprocessing) -> Preprocessing:
    """The 6-channel input of a late-fusion net made of nets trained on ``color`` and ``hha``:
    colour as its net saw it, then HHA in file order with its net's mean and std (reversed
    back from a ``"BGR"`` HHA preprocessing, as :func:`init_from_runs` reverses its filters).
    The ``caffe-nyud-color-hha`` preset when it is that."""
    if color.scale != hha.scale:
        raise ValueError(
            f"the colour run's input ({color.name}, 0..{color.scale:g}) and the HHA run's "
            f"({hha.name}, 0..{hha.scale:g}) differ in scale: one net cannot take both"
        )
    hha_mean, hha_std = tuple(hha.mean[:3]), tuple(hha.std[:3])
    if hha.channel_order == "BGR":
        hha_mean, hha_std = hha_mean[::-1], hha_std[::-1]
    fused = Preprocessing(
        f"{color.name}+{hha.name}",
        color.channel_order,
        color.scale,
        tuple(color.mean[:3]) + hha_mean,
        tuple(color.std[:3]) + hha_std,
    )
    preset = CAFFE_NYUD_COLOR_HHA
    if dataclasses.replace(fused, name=preset.name) == preset:
        return preset
    return fused
