"""The house's layering, read from the import graph with `ast`: the domain core at the bottom, the pure
transforms and libraries above it, the entry points (jobs/) on top, the lab beside the platform.

A layer may import the layers listed for it and nothing else, at module level or inside a function. The lab's
only way into the platform is two lazy imports named below, each taken only when the lab is what runs.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# package -> the packages it may import (its own is always allowed)
ALLOWED = {
    "core": set(),
    "features": {"core"},
    "training": {"core", "features"},
    "delivery": {"core"},
    "expectations": {"core", "features"},
    "jobs": {"core", "features", "training", "delivery", "expectations", "configcenter"},
    "configcenter": {"core", "features"},
    "dags": {"core", "jobs", "expectations"},     # tasks fail fast on the errors that do not fix themselves
    "lab": {"core", "features", "training", "delivery", "expectations", "jobs"},
}
OURS = set(ALLOWED) | {"tests", "bench", "infra"}
# The platform's only imports of the lab, both inside a function: the CLI's lab commands (simulate, evaluate),
# and the training job reading a simulated world's ground truth for the oracle AUC when that world has one.
LAB_DOORS = {"jobs/cli.py": "lab", "jobs/train.py": "lab.simulator.ground_truth"}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every absolute import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
    return out


def violations() -> list[str]:
    found = []
    for pkg, allowed in ALLOWED.items():
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for module, at_top in imports(path):
                root = module.split(".")[0]
                if root not in OURS or root == pkg or root in allowed:
                    continue
                door = LAB_DOORS.get(rel)
                if root == "lab" and not at_top and door and (module == door or module.startswith(door + ".")):
                    continue
                found.append(f"{rel} imports {module} ({pkg}/ may import {sorted(allowed) or 'nothing of ours'})")
    return found


def test_every_layer_imports_only_the_layers_below_it():
    assert violations() == []


def test_the_check_sees_an_import_that_climbs_back_up(tmp_path, monkeypatch):
    """The graph check itself: a transform that imports the entry points is caught, at top level or lazily."""
    for pkg in ALLOWED:
        (tmp_path / pkg).mkdir()
    (tmp_path / "features" / "bad.py").write_text("def f():\n    from jobs.tasks import STAGES\n    return STAGES\n")
    (tmp_path / "delivery" / "bad.py").write_text("from lab.simulator.market import simulate\n")
    (tmp_path / "jobs" / "cli.py").write_text("from lab import simulate\n")       # a door, but not at top level
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert sorted(v.split(" imports ")[0] for v in violations()) == ["delivery/bad.py", "features/bad.py",
                                                                      "jobs/cli.py"]


def test_jobs_holds_entry_points_only():
    """Every jobs/ module is an entry point: a stage or job with run()/main(), the CLI, the DAGs' task functions,
    or the two ways a stage is launched (in process, through spark-submit)."""
    launchers = {"cli.py", "tasks.py", "entry.py", "submit.py", "__init__.py"}
    folders = [p for p in (REPO / "jobs").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders == [], f"jobs/ has sub-packages {folders}: they belong in core/, lab/ or their own package"
    plain = []
    for path in sorted((REPO / "jobs").glob("*.py")):
        if path.name in launchers:
            continue
        names = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        if not names & {"run", "main"}:
            plain.append(path.name)
    assert plain == [], f"jobs/ modules that are not entry points: {plain}"
