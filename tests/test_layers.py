"""The architecture as a test: imports point one way, and only `calm.model` touches the anchor bank.

Layers, bottom to top: errors, config, metrics, io, clock and the registry; data and model (which know
nothing of each other); engine; reports; toy_clip; experiments; demo and the Python API; search;
the command line. Inside `engine` the evaluation functions sit below the task objects, and the
drivers and the training loop above them. Imports inside functions count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

PACKAGE_RANK = {
    "errors": 0, "machine": 0, "config": 0, "metrics": 0, "io": 0, "clock": 0, "registry": 0, "calm": 0,
    "data": 1, "model": 1,
    "engine": 2, "reports": 3, "toy_clip": 4, "experiments": 5, "demo": 6, "api": 6,
    "search": 7, "cli": 8, "__main__": 9,
}
ENGINE_RANK = {
    "calm.engine": 0, "calm.engine.runtime": 0, "calm.engine.distributed": 0,
    "calm.engine.sampler": 0, "calm.engine.runlog": 0, "calm.engine.optim": 0,
    "calm.engine.inputs": 0, "calm.engine.state": 0, "calm.engine.checkpoint": 0,
    "calm.engine.models": 1, "calm.engine.evaluation": 1, "calm.engine.evaluation.sharded": 1,
    "calm.engine.evaluation.gallery": 1,
    "calm.engine.evaluation.retrieval": 2, "calm.engine.evaluation.captioning": 2,
    "calm.engine.evaluation.anchors": 3, "calm.engine.evaluation.uncertainty": 3,
    "calm.engine.tasks": 4, "calm.engine.train": 5, "calm.engine.drivers": 5,
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in (SRC / "calm").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "calm":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "calm")
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "calm"


def test_every_package_has_a_layer():
    assert {_package(m) for m in _modules()} <= set(PACKAGE_RANK)
    engine = {m for m in _modules() if _package(m) == "engine"}
    assert engine <= set(ENGINE_RANK), sorted(engine - set(ENGINE_RANK))


def test_no_import_runs_upward():
    upward = []
    for module, tree in _modules().items():
        for target in _imports(tree):
            a, b = _package(module), _package(target)
            if a != b and PACKAGE_RANK[b] > PACKAGE_RANK[a]:
                upward.append(f"{module} -> {target}")
            if a == b == "engine" and ENGINE_RANK[target] > ENGINE_RANK[module]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_data_and_model_know_nothing_of_each_other():
    crossing = [f"{m} -> {t}" for m, tree in _modules().items() for t in _imports(tree)
                if {_package(m), _package(t)} == {"data", "model"}]
    assert not crossing, crossing


def test_real_benchmark_evaluation_never_imports_the_generator():
    """The synthetic benchmark's ground truth reaches evaluation through its annotations
    (`calm.data.truth`), so evaluating MSR-VTT loads none of the 400-line world generator."""
    for module in ("calm.engine.tasks", "calm.engine.evaluation.anchors",
                   "calm.engine.evaluation.uncertainty", "calm.engine.drivers"):
        targets = _imports(_modules()[module])
        assert not any(t.startswith("calm.data.synthetic") for t in targets), (module, targets)


def _receiver_is_a_model(node: ast.Attribute) -> bool:
    value = node.value
    root = value
    while isinstance(root, ast.Attribute):
        root = root.value
    if isinstance(value, ast.Name):
        return value.id in ("model", "net", "core", "best")
    return (isinstance(value, ast.Attribute) and value.attr == "model"
            and not (isinstance(root, ast.Name) and "cfg" in root.id))


def test_only_the_model_reaches_into_the_anchor_bank_and_the_vae():
    """Outside `calm.model` the anchor branch is used through its hooks and methods
    (`calm.model.anchor_branch`), never through `model.anchors` or `model.vae`."""
    reaching = []
    for module, tree in _modules().items():
        if _package(module) == "model":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("anchors", "vae")
                    and _receiver_is_a_model(node)):
                reaching.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not reaching, reaching
