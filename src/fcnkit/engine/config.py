"""Training configuration: typed sections, shipped recipes, command-line overrides.

A config is a YAML file with the sections below (``model``, ``data``, ``loss``, ``optim``,
``schedule``, ``train``). The package ships readable recipes (``fcnkit recipes``) for the
paper's experiments (Sec. 4.3 training, Sec. 4.2 staged 32s -> 16s -> 8s) and the reference
implementation's "heavy" variant. A file may build on others with a top-level ``_base_:``
(a recipe name, a path relative to the file, or a list of them): its own keys are deep-merged
over the bases' (mmsegmentation's convention; ``name`` and ``description`` are not inherited).
Every value can be overridden on the command line with ``--set section.key=value`` (applied
after the merge); values are parsed as YAML and checked against the field's type.

Errors name the source (file or ``--set``), the field and what was expected, e.g.
``voc.yaml: optim.lr: expected a number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import yaml

from fcnkit.data.base import IGNORE_INDEX

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class ConfigError(ValueError):
    """An invalid config: the message names the file, the field and what was expected."""


# ---------------------------------------------------------------------------------------------
# Sections. Field comments are the reference documentation of every key.


@dataclass
class ModelConfig:
    name: str = "fcn8s"  # a name from `fcnkit models`
    num_classes: int | None = None  # None: the training dataset's number of classes
    weights: str | None = None  # a known weight name or a local file (see `fcnkit weights`)
    options: dict = field(default_factory=dict)  # create_model options (model-specific)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # a name from `fcnkit data list`
    root: str | None = None  # folder holding the dataset's files (None for built-in data)
    split: str = "train"
    options: dict = field(default_factory=dict)  # create_dataset options
    val_dataset: str | None = None  # None: same as `dataset`
    val_root: str | None = None  # None: same as `root`
    val_split: str = "val"
    val_options: dict = field(default_factory=dict)  # empty: `options` (unless val_dataset)
    val_limit: int | None = None  # evaluate on the first N images only (None: all)
    augment: dict = field(default_factory=dict)  # build_transforms(train=True, ...) options
    batch_size: int = 1  # images per forward pass, per process
    val_batch_size: int = 1
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class LossConfig:
    # Pixelwise cross-entropy over labelled pixels (Sec. 3, 4.3).
    # normalize: true  -> mean over labelled pixels (use with lr ~1e-4 for VGG, SGD).
    # normalize: false -> summed over pixels, averaged over images (the reference "heavy"
    #   loss, Caffe `normalize: false`); its gradient is ~#pixels (~1e5 for 500x500) times
    #   larger, so it needs lr ~1e-10 .. 1e-14. Mixing the two up gives NaN within steps.
    normalize: bool = True
    # Loss sampling (Sec. 4.3, "patchwise training is loss sampling"): keep each loss term
    # with probability p (1: off). The unit drawn: "cell", the paper's final-layer cell (a
    # sample_cell x sample_cell block of output pixels, the grid anchored at the image
    # origin, see fcnkit.engine.loss), or "pixel" (independent pixels). sample_cell: the
    # net's output stride (32 for FCN-32s). sample_compensate: raise the images per step by
    # 1/p to keep the effective batch, as the paper does: each step accumulates
    # ceil(optim.accumulate / p) micro-batches (off: optim.accumulate, fewer labelled pixels).
    sample_prob: float = 1.0
    sample_unit: str = "cell"  # cell | pixel
    sample_cell: int = 32
    sample_compensate: bool = True
    # per-class weights: None (unweighted, as the paper), a list (one per class, e.g. the line
    # `fcnkit data stats` prints) or "median_frequency": Eigen & Fergus's median-frequency
    # balancing (fcnkit.data.stats.median_frequency_weights), computed from the training
    # split's raw labels when the run starts and kept in its checkpoints for resume
    class_weights: list[float] | str | None = None
    # the median-frequency weights raised to this power: 1 = Eigen & Fergus, 0.5 = tempered
    # (the rare classes gain less, so the frequent ones lose less pixel accuracy), 0 = none
    class_weight_power: float = 1.0
    ignore_index: int = IGNORE_INDEX
    head_weights: dict | None = None  # multi-head nets: {head: weight}; None sums all heads


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 1e-4
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    bias_lr_mult: float = 2.0  # the paper doubles the biases' learning rate
    bias_weight_decay: float = 0.0  # ... and does not decay them
    norm_weight_decay: float | None = None  # normalisation layers' weights (None: weight_decay)
    accumulate: int = 1  # micro-batches per step (Caffe iter_size); gradients are averaged
    grad_clip: float | None = None  # max gradient norm (None: no clipping)


@dataclass
class ScheduleConfig:
    name: str = "fixed"  # fixed | poly | step
    power: float = 0.9  # poly: lr * (1 - step / steps) ** power
    step_size: int = 1000  # step: lr * gamma ** (step // step_size)
    gamma: float = 0.1
    warmup_steps: int = 0  # linear warm-up from warmup_factor * lr
    warmup_factor: float = 0.001


@dataclass
class TrainConfig:
    steps: int = 1000  # optimiser steps (each = batch_size x accumulate x processes images)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # mixed precision: fp16 + loss scaling on CUDA; bf16 autocast on a CPU with native bf16
    # (AVX-512 BF16 / AMX: 1.4x the fp32 VGG16 step here); fp32 with a warning elsewhere
    amp: bool = False
    channels_last: bool = False  # NHWC weights and inputs: ~1.3x faster CPU steps (MobileNets)
    # staged training (Sec. 4.2): a run dir or checkpoint. NYUD late fusion (Sec. 5): the two
    # single-stream runs, {color: RUN, hha: RUN} (fcnkit.weights.staging.init_from_runs)
    init_from: str | dict | None = None
    log_every: int = 20
    eval_every: int = 1000  # also evaluated at the last step
    checkpoint_every: int = 1000  # checkpoints/last.pt; also at the last step
    best_metric: str = "mean_iu"  # checkpoints/best.pt keeps the highest
    num_sample_images: int = 4  # sample predictions written to TensorBoard
    zero_check_step: int = 100  # warn if zero-initialised score layers are still all zero
    time_limit: float | None = None  # seconds: stop early (evaluate, checkpoint) once exceeded
    # a step whose loss or gradients are NaN / inf: "stop" (save the last good state, raise)
    # or "skip" (no update, count it, go on; stops after 10 skips in a row)
    nonfinite: str = "stop"


@dataclass
class Config:
    name: str = "run"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: ``loss.class_weights`` computed from the training split (Eigen & Fergus, ICCV 2015)
MEDIAN_FREQUENCY = "median_frequency"

_CHOICES: dict[str, tuple[str, ...]] = {
    "optim.name": ("sgd", "adamw"),
    "loss.sample_unit": ("cell", "pixel"),
    "schedule.name": ("fixed", "poly", "step"),
    "train.nonfinite": ("stop", "skip"),
}


# ---------------------------------------------------------------------------------------------
# Recipes and inheritance (`_base_`)

#: top-level key naming the file(s) a config builds on
BASE_KEY = "_base_"
#: keys never inherited from a base: every file names and describes itself
NOT_INHERITED = ("name", "description")


def _recipes_folder() -> Traversable:
    return resources.files("fcnkit") / "recipes"


def _recipe_names(hidden: bool = False) -> list[str]:
    """Shipped recipe names; with ``hidden``, also the ``_*`` bases."""
    names = (
        p.name[: -len(".yaml")]
        for p in _recipes_folder().iterdir()
        if p.is_file() and p.name.endswith(".yaml")
    )
    return sorted(n for n in names if hidden or not n.startswith("_"))


def list_recipes() -> list[str]:
    """Names of the trainable recipes shipped in ``fcnkit/recipes``.

    Files named ``_*.yaml`` are bases for other recipes (``_base_: _name``), not listed.
    """
    return _recipe_names()


def _recipe_file(name: str, hidden: bool = False) -> Traversable:
    """The shipped file of recipe ``name``; an unknown name suggests close ones (``hidden``:
    bases too)."""
    path = _recipes_folder() / f"{name}.yaml"
    if "/" in name or "\\" in name or not _is_file(path):
        recipes = list_recipes()
        close = difflib.get_close_matches(name, _recipe_names(hidden), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown recipe {name!r}.{hint} Recipes: {', '.join(recipes)}")
    return path


def recipe_text(name: str) -> str:
    """The YAML text of a shipped recipe as written (``_base_`` not merged)."""
    return _recipe_file(name).read_text()


def recipe_description(name: str) -> str:
    """The first line of a recipe's own ``description`` (never inherited)."""
    data = yaml.safe_load(recipe_text(name)) or {}
    return str(data.get("description", "")).strip().splitlines()[0] if data else ""


@dataclass(frozen=True)
class _Source:
    label: str  # how messages name it: "recipe voc-fcn32s", a path, "<dict>"
    key: str  # identity, to find cycles
    folder: Path | Traversable  # where its relative `_base_` paths resolve
    file: Path | Traversable | None = None  # None: a dict given in memory


def _file_source(path: Path | Traversable) -> _Source:
    key = str(path.resolve()) if isinstance(path, Path) else str(path)
    return _Source(str(path), key, path.parent, path)


def _recipe_source(name: str, hidden: bool = False) -> _Source:
    path = _recipe_file(name, hidden)
    key = str(path.resolve()) if isinstance(path, Path) else str(path)
    return _Source(f"recipe {name}", key, _recipes_folder(), path)


@dataclass
class ResolvedSource:
    """A config source with its ``_base_`` chain merged (not yet validated)."""

    data: dict[str, Any]  # the merged mapping, without `_base_`
    label: str  # the source as messages name it
    files: list[str] = field(default_factory=list)  # every file merged, bases first
    origins: dict[str, str] = field(default_factory=dict)  # dotted key -> file that set it


def resolve_source(source: str | Path | dict) -> ResolvedSource:
    """Read a recipe name, YAML file or dict and deep-merge its ``_base_`` files under it.

    ``_base_`` (top level) is a recipe name, a path (relative to the including file's folder;
    for a dict, the working directory) or a list of them, later ones overriding earlier ones.
    Mappings merge key by key, lists and scalars replace; ``name`` and ``description`` are
    never inherited. Bases may have bases; a cycle or a missing base is a ConfigError.
    """
    if isinstance(source, dict):
        _check_size(source, "<dict>")
        top, data = _Source("<dict>", "<dict>", Path(".")), _deep_copy(source)
    else:
        path = Path(source)
        if _is_file(path):
            top, data = _file_source(path), None
        elif path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise ConfigError(f"no config file at {path} (and it is not a recipe name)")
        else:
            top, data = _recipe_source(str(source)), None
    files: list[str] = []
    merged, origins = _resolve(top, data, [], files)
    return ResolvedSource(merged, top.label, files, origins)


def _is_file(path: Path | Traversable) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system: not a file
        return False


#: values a config may hold once YAML aliases are expanded (merging, messages and the run's
#: config.yaml expand them): shipped recipes hold a few hundred
MAX_CONFIG_VALUES = 100_000


def _check_size(data: Any, where: str) -> None:
    """ConfigError unless ``data`` expands to at most :data:`MAX_CONFIG_VALUES` values and
    holds no value inside itself: YAML aliases can repeat an anchor exponentially ("billion
    laughs") or refer to their own anchor. Linear in the distinct values (shared ones once)."""
    sizes: dict[int, int] = {}
    inside: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in inside:
            raise ConfigError(f"{where}: a YAML alias refers to itself (a recursive value)")
        inside.add(id(node))
        total = 1
        for child in node.values() if isinstance(node, dict) else node:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError(
                    f"{where}: the config expands to more than {MAX_CONFIG_VALUES:,} values "
                    "(YAML aliases repeating anchors?)"
                )
        inside.discard(id(node))
        sizes[id(node)] = total
        return total

    try:
        size(data)
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply") from None


def _safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` with its failures (syntax, nesting too deep) as ConfigError."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from err
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: values nested too deeply") from None
    _check_size(data, where)
    return data


def _read(source: _Source) -> dict:
    assert source.file is not None
    try:
        text = source.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source.label}: cannot read the config file: {err}") from err
    data = _safe_load(text, source.label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.label}: expected a mapping of sections, got {type(data).__name__}"
        )
    return data


def _resolve(
    source: _Source, data: dict | None, stack: list[_Source], files: list[str]
) -> tuple[dict, dict[str, str]]:
    """``source`` merged over its bases, and the file that set each dotted key."""
    keys = [s.key for s in stack]
    if source.key in keys:
        cycle = [*stack[keys.index(source.key) :], source]
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(s.label for s in cycle)}")
    own = _read(source) if data is None else data
    refs = own.pop(BASE_KEY, None)
    refs = [] if refs is None else [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not all(isinstance(r, str) and r.strip() for r in refs):
        raise ConfigError(
            f"{source.label}: {BASE_KEY}: expected a recipe name, a path or a list of them, "
            f"got {refs!r}"
        )
    merged: dict = {}
    origins: dict[str, str] = {}
    for ref in refs:
        base = _locate(ref.strip(), source)
        base_data, base_origins = _resolve(base, None, [*stack, source], files)
        for key in NOT_INHERITED:
            base_data.pop(key, None)
            base_origins.pop(key, None)
        _merge(merged, origins, base_data, base_origins)
    own_origins: dict[str, str] = {}
    _record(own, source.label, "", own_origins)
    _merge(merged, origins, own, own_origins)
    files.append(source.label)
    return merged, origins


def _locate(ref: str, including: _Source) -> _Source:
    """The source a ``_base_`` entry names: a path if it looks like one, else a recipe."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref or "\\" in ref:
        if Path(ref).is_absolute():
            path: Path | Traversable = Path(ref)
        elif isinstance(including.folder, Path):
            path = Path(os.path.normpath(including.folder / ref))
        else:
            path = including.folder / ref
        if not _is_file(path):
            raise ConfigError(f"{including.label}: {BASE_KEY}: no file {ref!r} (looked for {path})")
        return _file_source(path)
    try:
        return _recipe_source(ref, hidden=True)
    except ConfigError as err:
        hint = ""
        if isinstance(including.folder, Path) and (including.folder / f"{ref}.yaml").is_file():
            hint = f" (for the file next to it, write {ref}.yaml)"
        raise ConfigError(f"{including.label}: {BASE_KEY}: {err}{hint}") from None


def _record(data: dict, label: str, prefix: str, origins: dict[str, str]) -> None:
    for key, value in data.items():
        origins[f"{prefix}{key}"] = label
        if isinstance(value, dict):
            _record(value, label, f"{prefix}{key}.", origins)


def _merge(
    target: dict,
    origins: dict[str, str],
    update: dict,
    update_origins: dict[str, str],
    prefix: str = "",
) -> None:
    """Deep-merge ``update`` into ``target`` (mappings merge, the rest replaces), with origins."""
    for key, value in update.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], origins, value, update_origins, f"{path}.")
            origins[path] = update_origins[path]
        else:
            for stale in [k for k in origins if k.startswith(f"{path}.")]:
                del origins[stale]
            target[key] = value
            origins.update(
                {k: v for k, v in update_origins.items() if k == path or k.startswith(f"{path}.")}
            )


# ---------------------------------------------------------------------------------------------
# Loading, overriding, validating


def load_config(source: str | Path | dict, overrides: list[str] | None = None) -> Config:
    """A validated :class:`Config` from a recipe name, a YAML file or a dict, plus overrides.

    ``_base_`` files are merged first (see :func:`resolve_source`); ``overrides`` are
    ``"section.key=value"`` strings (value parsed as YAML), applied after the merge.
    """
    resolved = resolve_source(source)
    data, top = resolved.data, resolved.label
    key_origins = {
        key: f"{label} (via {top})" for key, label in resolved.origins.items() if label != top
    }
    for item in overrides or []:
        key = apply_override(data, item)
        key_origins[key] = f"--set {item}"
    return from_dict(data, top, key_origins)


def apply_override(data: dict, item: str) -> str:
    """Apply one ``a.b.c=value`` override to a nested dict (key checked); returns the key."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    _check_key(parts, origin=f"--set {item}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item}: cannot parse value {text!r}: {err}") from err
    except RecursionError:
        raise ConfigError(f"--set {key}=...: value nested too deeply") from None
    _check_size(value, f"--set {key}=...")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    return key


def _check_key(parts: list[str], origin: str) -> None:
    """Reject a dotted key that names no config field (free-form ``dict`` fields accept any)."""
    cls: Any = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if _is_free_dict(cls):
                return
            prefix = ".".join(parts[:i])
            raise ConfigError(f"{origin}: {prefix!r} is a value, not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            prefix = ".".join(parts[:i])
            valid = list(hints)
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f" (did you mean {'.'.join([*parts[:i], close[0]])!r}?)" if close else ""
            where = f"in {prefix!r}" if prefix else "at the top level"
            raise ConfigError(
                f"{origin}: unknown config key {'.'.join(parts[: i + 1])!r}{hint}; "
                f"valid keys {where}: {', '.join(valid)}"
            )
        cls = hints[part]


def _is_free_dict(tp: Any) -> bool:
    return tp is dict or dict in _union_args(tp)


def _union_args(tp: Any) -> tuple:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def from_dict(
    data: dict, origin: str = "<dict>", key_origins: dict[str, str] | None = None
) -> Config:
    """Build and validate a :class:`Config`; unknown keys and wrong types raise ConfigError.

    ``key_origins`` maps dotted keys to where their value came from (``--set ...``), for
    error messages.
    """
    key_origins = key_origins or {}
    config = _build(Config, data, origin, "", key_origins)
    validate(config, origin, key_origins)
    return config


def _build(cls: Any, data: Any, origin: str, prefix: str, key_origins: dict[str, str]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{key_origins.get(prefix.rstrip('.'), origin)}: {prefix.rstrip('.') or 'config'}: "
            "expected a mapping, "
            f"got {type(data).__name__} {data!r}"
        )
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(hints), n=1)
        hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
        where = f"in {prefix.rstrip('.')!r}" if prefix else "at the top level"
        raise ConfigError(
            f"{key_origins.get(prefix + str(key), origin)}: unknown config key "
            f"{prefix + str(key)!r}{hint}; "
            f"valid keys {where}: {', '.join(hints)}"
        )
    kwargs = {}
    for name, tp in hints.items():
        if name not in data:
            continue
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name] or {}, origin, f"{prefix}{name}.", key_origins)
        else:
            key = prefix + name
            kwargs[name] = _coerce(data[name], tp, key_origins.get(key, origin), key)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}
    names |= {dict: "a mapping", type(None): "null"}
    parts = []
    for arg in _union_args(tp):
        if typing.get_origin(arg) is list:
            (inner,) = typing.get_args(arg) or (Any,)
            parts.append(f"a list of {names.get(inner, 'values').split(' ', 1)[-1]}s")
        else:
            parts.append(names.get(arg, getattr(arg, "__name__", str(arg))))
    return " or ".join(parts)


def _coerce(value: Any, tp: Any, origin: str, key: str) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str, dict, list[X], optional), or raise."""
    args = _union_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{origin}: {key}: expected {_type_name(tp)}, got null")
    for arg in args:
        if arg is type(None):
            continue
        ok, converted = _try(value, arg)
        if ok:
            return converted
    raise ConfigError(f"{origin}: {key}: expected {_type_name(tp)}, got {value!r}")


def _try(value: Any, tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False, None
        items = [_try(v, inner) for v in value]
        return (all(ok for ok, _ in items), [v for _, v in items])
    if tp is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)  # 1e5 -> 100000
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return False, None
            return (True, int(f)) if f.is_integer() else (False, None)
        return False, None
    if tp is float:  # finite numbers only: NaN / inf would reach the weights
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:  # YAML 1.1 reads "1e-4" (no dot) as a string
                number = float(value)
            except (ValueError, OverflowError):  # OverflowError: an int beyond any float
                return False, None
            return (True, number) if math.isfinite(number) else (False, None)
        return False, None
    if tp is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    if tp is dict:
        return (True, dict(value)) if isinstance(value, dict) else (False, None)
    return (True, value) if isinstance(value, tp) else (False, None)


def validate(
    config: Config, origin: str = "<config>", key_origins: dict[str, str] | None = None
) -> None:
    """Range and choice checks beyond types."""

    def fail(key: str, expected: str, value: Any) -> None:
        where = (key_origins or {}).get(key, origin)
        raise ConfigError(f"{where}: {key}: expected {expected}, got {value!r}")

    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in choices:
            fail(key, "one of " + ", ".join(choices), value)
    positive = {
        "data.batch_size": config.data.batch_size,
        "data.val_batch_size": config.data.val_batch_size,
        "optim.accumulate": config.optim.accumulate,
        "loss.sample_cell": config.loss.sample_cell,
        "train.steps": config.train.steps,
        "train.log_every": config.train.log_every,
        "train.eval_every": config.train.eval_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "schedule.step_size": config.schedule.step_size,
    }
    for key, value in positive.items():
        if value < 1:
            fail(key, "an integer >= 1", value)
    if not config.optim.lr > 0:
        fail("optim.lr", "a number > 0", config.optim.lr)
    if not 0 < config.loss.sample_prob <= 1:
        fail("loss.sample_prob", "a probability in (0, 1]", config.loss.sample_prob)
    if config.optim.weight_decay < 0:
        fail("optim.weight_decay", "a number >= 0", config.optim.weight_decay)
    if config.data.num_workers < 0:
        fail("data.num_workers", "an integer >= 0", config.data.num_workers)
    if config.schedule.warmup_steps < 0:
        fail("schedule.warmup_steps", "an integer >= 0", config.schedule.warmup_steps)
    if len(config.optim.betas) != 2:
        fail("optim.betas", "a list of 2 numbers", config.optim.betas)
    weights = config.loss.class_weights
    if isinstance(weights, str) and weights != MEDIAN_FREQUENCY:
        close = difflib.get_close_matches(weights, [MEDIAN_FREQUENCY], n=1, cutoff=0.5)
        hint = f" (did you mean {MEDIAN_FREQUENCY!r}?)" if close else ""
        where = (key_origins or {}).get("loss.class_weights", origin)
        raise ConfigError(
            f"{where}: loss.class_weights: expected a list of numbers (one per class) or "
            f"{MEDIAN_FREQUENCY!r}, got {weights!r}{hint}"
        )
    power = config.loss.class_weight_power
    if not isinstance(power, (int, float)) or power < 0:
        fail("loss.class_weight_power", "a number >= 0", power)
    if power != 1.0 and weights != MEDIAN_FREQUENCY:
        fail(
            "loss.class_weight_power", f"1 unless loss.class_weights is {MEDIAN_FREQUENCY!r}", power
        )
    if isinstance(weights, list):
        if any(w < 0 for w in weights):
            fail("loss.class_weights", "non-negative numbers", weights)
        n = config.model.num_classes
        if n is not None and len(weights) != n:
            fail("loss.class_weights", f"{n} numbers (model.num_classes)", weights)
    if config.model.num_classes is not None and config.model.num_classes < 1:
        fail("model.num_classes", "an integer >= 1 or null", config.model.num_classes)
    init = config.train.init_from
    if isinstance(init, dict) and (
        sorted(init) != ["color", "hha"] or not all(isinstance(v, str) for v in init.values())
    ):
        fail("train.init_from", "a run directory, or {color: RUN, hha: RUN} (late fusion)", init)


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` lines for every dotted key whose value differs (sorted)."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict) and a and b:
            lines += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return lines


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
