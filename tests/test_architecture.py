"""The package's import graph: no cycles, and the one-way arrows of docs/architecture.md.

Every ``import`` of ``src/fcnkit`` is read from the source (``ast``), those inside functions
included (a lazy import is still a dependency). Two graphs are checked: modules, and the
package's parts (``models``, ``weights``, ``data``, ``engine``, ``cli`` and the top-level
modules ``inference``, ``metrics``, ``surgery`` ...), with the root ``fcnkit/__init__.py`` (the
public facade that re-exports from the parts) left out of the part graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "fcnkit"

# part -> parts it must never import (docs/architecture.md, "the arrows")
FORBIDDEN = {
    "models": {"weights", "engine", "data", "inference", "cli", "surgery", "export", "demo"},
    "data": {"models", "engine", "weights", "inference", "cli"},
    "metrics": {"engine", "models", "weights", "inference", "cli"},
    "weights": {"engine", "cli", "inference"},
    "engine": {"cli"},
    "inference": {"engine", "cli"},
    "surgery": {"weights", "engine", "data", "cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The fcnkit modules ``name`` imports (``from a import b`` counts ``a.b`` when it is a
    module, else ``a``), relative imports resolved."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t == "fcnkit" or t.startswith("fcnkit.")}
    return out - {name}


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) & known for name, path in modules.items()}


def part(module: str) -> str | None:
    """``fcnkit.engine.train`` -> ``engine``; the root facade ``fcnkit`` -> ``None``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def part_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    edges: dict[str, set[str]] = defaultdict(set)
    witnesses: dict[tuple[str, str], list[str]] = defaultdict(list)
    for src, targets in graph().items():
        for dst in targets:
            a, b = part(src), part(dst)
            if a and b and a != b:
                edges[a].add(b)
                witnesses[a, b].append(f"{src} -> {dst}")
    return edges, witnesses


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The reader itself: an import inside a function counts."""
    g = graph()
    assert "fcnkit.weights.load" in g["fcnkit.weights.factory"]
    assert "fcnkit.inference" in g["fcnkit"]  # `Segmenter` is imported inside __getattr__
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules() -> None:
    assert find_cycles(graph()) == []


def test_no_import_cycle_between_parts() -> None:
    edges, witnesses = part_graph()
    cycles = find_cycles(edges)
    detail = {
        f"{a} -> {b}": witnesses[a, b] for c in cycles for a in c for b in c if (a, b) in witnesses
    }
    assert cycles == [], detail


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_forbidden_directions(source: str) -> None:
    edges, witnesses = part_graph()
    bad = sorted(edges.get(source, set()) & FORBIDDEN[source])
    assert bad == [], [w for b in bad for w in witnesses[source, b]]


# Public names that several modules define on purpose:
ALLOWED_TWICE = {
    "register": "every cli/<group>.py defines register(subparsers) (the CLI's discovery contract)",
    "run": "cli handlers",
    "LABEL_TABLE": "each dataset's own raw-value -> class table",
    "create_model": "models.registry keeps the older spelling for one release (weights.factory)",
}


def test_every_public_name_is_defined_once() -> None:
    """One owner for each constant and name (the whole package): a public module-level name
    (constant, function, class, alias) is bound by an assignment or definition in one module;
    the others import it."""
    owners: dict[str, list[str]] = defaultdict(list)
    for name, path in all_modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound = [node.name]
            elif isinstance(node, ast.Assign):
                bound = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                bound = [node.target.id]
            else:
                continue
            for n in bound:
                if not n.startswith("_") and n not in ALLOWED_TWICE:
                    owners[n].append(name)
    assert {n: m for n, m in owners.items() if len(m) > 1} == {}


def test_no_literal_ignore_index() -> None:
    """The ignore label is ``fcnkit.data.base.IGNORE_INDEX``: no parameter or field named
    ``ignore_index`` defaults to a literal number anywhere else."""
    literal = []
    for name, path in all_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults))
                every = defaults + node.args.defaults + node.args.kw_defaults
                pairs = zip(args, every, strict=True)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                pairs = [(node.target, node.value)]
            else:
                continue
            for arg, default in pairs:
                arg_name = getattr(arg, "arg", getattr(arg, "id", ""))
                number = isinstance(default, ast.Constant) and type(default.value) is int
                if arg_name in ("ignore", "ignore_index") and number:
                    literal.append(f"{name}: {arg_name} = {default.value}")
    assert literal == []


# docs/architecture.md, "The parts and the arrows": every import points to a lower layer.
LAYERS = {
    "preprocessing": 0, "coord_map": 0, "version": 0, "extras": 0,
    "models": 1, "data": 1,
    "surgery": 2, "metrics": 2, "export": 2,
    "weights": 3, "backends": 3,
    "inference": 4,
    "plots": 5, "analysis": 5, "heatmap": 5,
    "engine": 6,
    "demo": 7, "serve": 7, "bench": 7,
    "cli": 8, "__main__": 9,
    "caffe": 9,  # the one-release re-export of weights.caffe (fcnkit.caffe)
}  # fmt: skip


def test_every_import_points_down_the_documented_layers() -> None:
    edges, witnesses = part_graph()
    parts = set(edges) | {b for targets in edges.values() for b in targets}
    assert parts <= set(LAYERS), f"parts missing from LAYERS: {sorted(parts - set(LAYERS))}"
    upward = [
        w for a, targets in edges.items() for b in targets if LAYERS[b] >= LAYERS[a]
        for w in witnesses[a, b]
    ]  # fmt: skip
    assert upward == []
    documented = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    for part_name, layer in LAYERS.items():
        if layer < 9:
            assert f"{part_name}" in documented


def test_moved_names_keep_their_old_paths_for_one_release() -> None:
    """fcnkit.caffe, fcnkit.engine.checkpoint and the loading fcnkit.models.create_model are
    re-exports of fcnkit.weights (issue 11: moved public names keep a re-export)."""
    import fcnkit
    import fcnkit.caffe
    import fcnkit.engine.checkpoint as old_checkpoint
    import fcnkit.weights as weights
    from fcnkit.models import create_model as models_create_model
    from fcnkit.weights import caffe

    assert fcnkit.caffe.read_caffemodel is caffe.read_caffemodel
    for name in ("load_model", "load_checkpoint", "save_checkpoint", "load_any", "head_palette"):
        assert getattr(old_checkpoint, name) is getattr(weights, name)
    assert old_checkpoint.head_names is weights.head_classes
    assert fcnkit.create_model is weights.create_model
    model = models_create_model("fcn32s-efficientnet_lite0", 2, backbone_weights="imagenet")
    assert model.model_options == {"backbone_weights": "imagenet"}
    import torch

    packaged = torch.load(weights.lite0_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone._conv_stem.weight, packaged["_conv_stem.weight"])
