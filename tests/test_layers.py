"""Imports point down, subpackage by subpackage, with no cycle:

    runtime -> registries -> plan | science -> jobs | report -> the CLI

The package's folders are its layers: runtime (files, checks, devices), registries (one per kind a
preset names), plan (preset -> ids, jobs, paths), science (models, step, attacks, analyses), jobs
(the CLI's commands that compute), report (tables, claims, figures). A job never imports another
job, so an edit to one job's code never reruns another's (lsqueeze/runtime/fingerprint.py follows
the imports); the report never imports a job or torch, so tables, figures and claims load in a
fraction of a second; registries and plan load without torch too. A new module goes into the
folder of its layer, and these tests place it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import lsqueeze
from lsqueeze.runtime.fingerprint import lsqueeze_imports, module_path

PACKAGE = Path(lsqueeze.__file__).resolve().parent
# the package's top level: the CLI, the rehearsal it runs, and the export, which puts a trained
# model (science), its measurements and masking checks (report) and its card together
ENTRY = {"__init__", "__main__", "cli", "commandline", "commands", "tools", "rehearse", "export",
         "card"}
MAY_IMPORT = {
    "runtime": {"runtime"},
    "registries": {"runtime", "registries"},
    "plan": {"runtime", "registries", "plan"},
    "science": {"runtime", "registries", "science"},
    "jobs": {"runtime", "registries", "plan", "science"},  # never another job
    "report": {"runtime", "registries", "plan", "report"},
    "entry": {"runtime", "registries", "plan", "science", "jobs", "report", "entry"},
}
NO_TORCH = ("registries", "plan", "report")


def imports(path: Path) -> set[str]:
    """The modules of the package a file imports, wherever the import statement sits (the parser
    the fingerprints use): the dotted names that are files."""
    names = lsqueeze_imports(ast.parse(path.read_text(), filename=str(path)))
    return {n for n in names if n != "__init__" and module_path(n, PACKAGE).is_file()}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def graph() -> dict[str, set[str]]:
    """{dotted module: the modules it imports}; a subpackage's __init__ holds only its docstring."""
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))
            if p.name != "__init__.py" or p.parent == PACKAGE}


def layer_of(module: str) -> str:
    return module.split(".")[0] if "." in module else "entry"


def test_every_module_sits_in_a_layer():
    assert {layer_of(m) for m in graph()} == set(MAY_IMPORT)
    assert {m for m in graph() if layer_of(m) == "entry"} == ENTRY
    for sub in set(MAY_IMPORT) - {"entry"}:  # a subpackage's __init__ is a docstring, no code
        tree = ast.parse((PACKAGE / sub / "__init__.py").read_text())
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), sub


def test_imports_point_down():
    g = graph()
    upward = [f"{m} imports {dep}" for m, deps in g.items() for dep in sorted(deps)
              if layer_of(dep) not in MAY_IMPORT[layer_of(m)]]
    jobs = [f"{m} imports {dep}" for m, deps in g.items() for dep in sorted(deps)
            if layer_of(m) == layer_of(dep) == "jobs"]
    assert upward == [] and jobs == []


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
    for module, dep, words in (("report.tables", "jobs.train", "report.tables imports jobs.train"),
                               ("jobs.cost", "jobs.train", "jobs.cost imports jobs.train"),
                               ("plan.build", "science.models", "plan.build imports science.models")):
        monkeypatch.setitem(globals(), "graph", lambda m=module, d=dep: {**real, m: real[m] | {d}})
        try:
            test_imports_point_down()
        except AssertionError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{words}: unnoticed")
    cyclic = {**real, "runtime.files": real["runtime.files"] | {"runtime.integrity"}}
    monkeypatch.setitem(globals(), "graph", lambda: cyclic)
    try:
        test_no_import_cycle()
    except AssertionError as exc:
        assert "runtime.files -> runtime.integrity -> runtime.files" in str(exc)
    else:
        raise AssertionError("a cycle went unnoticed")


def test_registries_plan_and_report_load_without_torch():
    modules = ", ".join(f"lsqueeze.{m}" for m in sorted(graph()) if layer_of(m) in NO_TORCH)
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_jobs_load_without_torchvision():
    # torchvision costs seconds to import and only the data job needs it (to download and convert
    # a dataset); every other job of a run pays its import time again.
    jobs = sorted(m for m in graph() if layer_of(m) == "jobs"
                  and m not in ("jobs.paper_presets", "jobs.remote", "jobs.cost"))
    code = ("import sys; " + "; ".join(f"import lsqueeze.{m}" for m in jobs)
            + "; print(sorted(m for m in ('torchvision', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
