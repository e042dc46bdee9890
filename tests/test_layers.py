"""Imports point down: primitives -> jobs | aggregation -> the CLI, with no cycle.

A job (an entry point of the CLI that computes numbers) never imports another job, so an edit to
one job's code never reruns another's (lsqueeze/fingerprint.py follows the imports); the
aggregation never imports a job or torch, so tables, figures and claims load in a fraction of a
second. The layer of every module is listed here: a new module must be placed in one.
"""

import ast
import subprocess
import sys
from pathlib import Path

import lsqueeze
from lsqueeze.fingerprint import lsqueeze_imports

PACKAGE = Path(lsqueeze.__file__).resolve().parent

LAYERS = {
    # what the jobs are built from; may import each other (no cycle)
    "primitives": {"activations", "attack_kinds", "attacks", "autoattack", "config", "data",
                   "datasets", "device", "fast", "figure_kinds", "fingerprint", "gpu", "inputs",
                   "integrity", "io", "landscape", "layout", "models", "pgd", "perexample",
                   "progress", "registry", "regularizers", "restore", "schema", "splits", "step",
                   "values", "yamlfile"},
    # the CLI's commands that compute or fetch something; import primitives only
    "jobs": {"analysis", "cost", "evaluate", "export", "migrate", "presets", "remote", "train"},
    # tables, figures and claims from the jobs' files; import primitives and each other, no torch
    "aggregation": {"agreement", "claims", "claims_report", "dvc_metrics", "figures", "masking",
                    "tablemeta", "tables"},
    "entry": {"__init__", "__main__", "cli", "commands"},
}
MAY_IMPORT = {
    "primitives": {"primitives"},
    "jobs": {"primitives"},
    "aggregation": {"primitives", "aggregation"},
    "entry": {"primitives", "jobs", "aggregation", "entry"},
}


def imports(path: Path) -> set[str]:
    """The lsqueeze modules a file imports, wherever the import statement sits (the parser the
    fingerprints use)."""
    return lsqueeze_imports(ast.parse(path.read_text(), filename=str(path))) - {"__version__"}


def graph() -> dict[str, set[str]]:
    return {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def layer_of(module: str) -> str:
    (layer,) = [name for name, members in LAYERS.items() if module in members]
    return layer


def test_every_module_has_one_layer():
    placed = [m for members in LAYERS.values() for m in members]
    assert len(placed) == len(set(placed))
    assert set(graph()) == set(placed)


def test_imports_point_down():
    upward = [f"{m} ({layer_of(m)}) imports {dep} ({layer_of(dep)})"
              for m, deps in graph().items() for dep in sorted(deps)
              if layer_of(dep) not in MAY_IMPORT[layer_of(m)]]
    assert upward == []


def test_no_import_cycle():
    g, state, cycles = graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for dep in sorted(g.get(m, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checks_catch_an_upward_import_and_a_cycle(monkeypatch):
    real = graph()
    monkeypatch.setitem(globals(), "graph", lambda: {**real, "tables": real["tables"] | {"train"}})
    try:
        test_imports_point_down()
    except AssertionError as exc:
        assert "tables (aggregation) imports train (jobs)" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")
    monkeypatch.setitem(globals(), "graph", lambda: {**real, "io": real["io"] | {"integrity"}})
    try:
        test_no_import_cycle()
    except AssertionError as exc:
        assert "integrity -> io -> integrity" in str(exc)
    else:
        raise AssertionError("a cycle went unnoticed")


def test_aggregation_loads_without_torch():
    modules = ", ".join(f"lsqueeze.{m}" for m in sorted(LAYERS["aggregation"]))
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_jobs_load_without_torchvision():
    # torchvision costs seconds to import and only the data job needs it (to download and convert
    # a dataset); every other job of a run pays its import time again.
    jobs = sorted(LAYERS["jobs"] - {"presets", "remote", "cost"})
    code = ("import sys; " + "; ".join(f"import lsqueeze.{m}" for m in jobs)
            + "; print(sorted(m for m in ('torchvision', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
