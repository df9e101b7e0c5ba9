"""The house's layering: data flows one way. Every import inside `mama` (module level or inside
a function) goes to the same layer or a lower one, and no modules import each other in a
circle. The layers, lowest first:

    base        errors, io, cache, config, metrics, runtime
    ops         reference, ops, kernels/          the custom ops' three faces
    models      models/                           networks, scores, checkpoint files
    weights     weights                           where pretrained files are found
    features    features/                         flow and labels, the feature store
    data        data/                             datasets, clips, the synthetic set
    evaluate    evaluate/                         scoring, fusion, metrics reports, anomaly maps
    live        live/                             watching a camera: sources, events, drawing, sinks
    train       train/                            the two stages
    demo        demo
    cli         cli/                              the `mama` command
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import mama

LAYERS = [
    ("base", ("mama.errors", "mama.io", "mama.cache", "mama.config", "mama.metrics", "mama.runtime", "mama")),
    ("ops", ("mama.reference", "mama.ops", "mama._C", "mama.kernels")),
    ("models", ("mama.models",)),
    ("weights", ("mama.weights",)),
    ("features", ("mama.features",)),
    ("data", ("mama.data",)),
    ("evaluate", ("mama.evaluate",)),
    ("live", ("mama.live",)),
    ("train", ("mama.train",)),
    ("demo", ("mama.demo",)),
    ("cli", ("mama.cli",)),
]


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best is not None, f"{module} belongs to no layer; add it to LAYERS"
    return best[0]


def modules() -> dict[str, Path]:
    """Every module of the installed package (mama.cli and mama.kernels included), by name."""
    found = {"mama": Path(mama.__file__)}
    # cli/ and kernels/ live beside mama/ and are installed as mama.cli / mama.kernels.
    for package in (mama, importlib.import_module("mama.cli"), importlib.import_module("mama.kernels")):
        found[package.__name__] = Path(package.__file__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                found[info.name] = Path(spec.origin)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The mama modules `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import module` names a module; `from module import name` a name in it.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t == "mama" or t.startswith("mama."))
    return out - {name}


def test_every_import_goes_down_or_sideways_and_nothing_runs_in_a_circle():
    found = modules()
    assert {"mama.features.store", "mama.cli.app", "mama.kernels.warp", "mama.models.scores"} <= set(found)
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))

    # No circle of modules (depth-first search over the graph).
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_evaluation_needs_nothing_from_training():
    found = modules()
    for name, path in found.items():
        if name.startswith("mama.evaluate"):
            assert not [m for m in imports_of(name, path, set(found)) if m.startswith("mama.train")], name
