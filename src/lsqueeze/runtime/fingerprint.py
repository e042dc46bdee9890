"""Which package code a job's numbers depend on, as a short hash Snakemake can compare.

Every rule carries `code=fingerprint("<its module>")` as a param, so Snakemake's params
rerun-trigger reruns a job when the code that computes it changes (a fixed attack, a new loss),
not only when its config does: a table is never silently made of models from older code.

The hash covers the module and, transitively, the lsqueeze modules it imports, except the plumbing
that cannot change a number (file writing, GPU pinning, the CLI). It is taken over the syntax
tree with docstrings removed and written back as normalized source, so comments, docstrings and
formatting never retrain a model; any change to the code itself does. (The normalized source is
Python's `ast.unparse`, which a new Python minor version may spell differently: after such an
upgrade, check `snakemake -n` and use `--touch` if you trust the old results.)

`root` is the package directory whose code the jobs run: the workflow passes its own checkout's
src/lsqueeze and runs its jobs from there, so two checkouts sharing one virtual environment each
fingerprint, and run, their own code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# Modules by their dotted name in the package ("science.step"). fingerprint and integrity decide
# whether a job may run (checkpoint keys, file checks), never what it computes; schema and
# yamlfile read and check presets, whose values reach the jobs as params (a rerun trigger of
# their own); the rest write files, pin GPUs or parse the command line.
PLUMBING = frozenset({"__init__", "__main__", "cli", "commandline", "commands", "tools", "rehearse",
                      "report.dvc_metrics", "runtime.fingerprint", "runtime.pinning",
                      "runtime.integrity", "runtime.files", "runtime.rehearsal",
                      "jobs.paper_presets", "plan.restore", "plan.schema", "runtime.yamlfile"})
# The modules that call what a registry names as text, "lsqueeze.<module>:<function>" (attacks:
# an attack kind's runner; data: a dataset's converter; step: a regularizer's term or
# transform): a job that uses one depends on every function named, so an edit to a new kind's
# module reruns it; the tables, which read the same registry, do not.
DISPATCHERS = frozenset({"science.attacks", "jobs.data", "science.step"})


def _is_main_block(node) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and len(node.test.comparators) == 1 and isinstance(node.test.comparators[0], ast.Constant)
            and node.test.comparators[0].value == "__main__")


def _normalized(path: Path) -> tuple[str, set[str], set[str]]:
    """The module's code without comments, docstrings or formatting, the lsqueeze modules it
    imports, and those it names as runners."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # `python -m lsqueeze.<module>` code: a job imports the module and never runs it.
    tree.body = [node for node in tree.body if not _is_main_block(node)] or [ast.Pass()]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree), lsqueeze_imports(tree), runner_modules(tree)


def runner_modules(tree: ast.AST) -> set[str]:
    """The modules a registry names as text, "lsqueeze.<module>:<function>" (an attack kind's
    runner, lsqueeze.registries.attack_kinds)."""
    return {m.group(1) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for m in [re.fullmatch(r"lsqueeze\.([\w.]+):\w+", node.value)] if m}


def lsqueeze_imports(tree: ast.AST) -> set[str]:
    """The dotted names in the package ("science.step") a syntax tree imports, wherever the
    import statement sits (module level or inside a function). `from lsqueeze.x import y` gives
    both x and x.y: one of them is a module, the other a name or a subpackage, which the
    readers tell apart by the files that exist."""
    imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lsqueeze":
            base = node.module.split(".", 1)[1] if "." in node.module else ""
            if base:
                imports.add(base)
            imports |= {f"{base}.{a.name}" if base else a.name for a in node.names}
        elif isinstance(node, ast.Import):
            imports |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("lsqueeze.")}
    return imports


def module_path(name: str, root: Path = PACKAGE) -> Path:
    """The file of a dotted module name ("science.step" -> <root>/science/step.py)."""
    return Path(root).joinpath(*name.split(".")).with_suffix(".py")


def modules(module: str, root: Path = PACKAGE) -> dict[str, str]:
    """{module: normalized code} for `module` and what it imports, plumbing excluded."""
    code, todo, runners, seen = {}, [module], set(), set()
    while todo:
        name = todo.pop()
        path = module_path(name, root)
        if name not in seen and name not in PLUMBING and path.exists():  # else a name, not a module
            code[name], imported, named = _normalized(path)
            runners |= named
            todo.extend(sorted(imported))
        seen.add(name)
        if not todo and DISPATCHERS & code.keys():  # a job that runs what the registry names
            todo.extend(sorted(runners - seen))
    if module not in code:
        raise ValueError(f"fingerprint: no module {module!r} in {root}")
    return code


@functools.cache
def fingerprint(module: str, root: Path = PACKAGE) -> str:
    h = hashlib.sha256()
    for name, code in sorted(modules(module, root).items()):
        h.update(f"{name}\0{code}\0".encode())
    return h.hexdigest()[:16]
