"""What the environment is made of: every import a declared dependency, the core install free of
the pipeline's tools, and requirements.lock (every package pinned and hashed) consistent with
pyproject.toml, with the environments built from it, and with the one running these tests."""

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# The modules that run the pipeline's tools, imported only by the commands that need them
# (`lsqueeze pull`, `lsqueeze restore`): they may use the `workflow` extra.
WORKFLOW_MODULES = {"jobs/remote.py", "plan/restore.py"}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: \\)?$")


def requirements(specs) -> dict:
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


CORE = requirements(PROJECT["dependencies"])
WORKFLOW = requirements(EXTRAS["workflow"])
TEST = requirements(EXTRAS["test"])
CROSSCHECK = requirements(EXTRAS["crosscheck"])


def lock(path) -> dict:
    """{canonical name: version} of a lock; every entry pinned with == and hashed."""
    lines = path.read_text().splitlines()
    pins = {}
    for i, line in enumerate(lines):
        if not line or line[0] in "# ":
            continue
        m = ENTRY.match(line)
        assert m, f"{path.name}:{i + 1}: not a pinned requirement: {line}"
        assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{path.name}:{i + 1}: no hash"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


LOCK = lock(REPO / "requirements.lock")


def third_party_imports(path) -> set[str]:
    """Top-level modules a Python file, or a Snakefile's import lines, import (not relative ones)."""
    text = path.read_text()
    if path.suffix != ".py":  # Snakemake's language: its import statements are Python's
        text = "\n".join(line.strip() for line in text.splitlines()
                         if re.match(r"\s*(import|from)\s+\w", line))
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"lsqueeze"}


DISTRIBUTIONS = md.packages_distributions()  # {top-level module: the distributions that install it}


def undeclared(files, declared: dict, local=frozenset()) -> list[str]:
    problems = []
    for path in files:
        for module in sorted(third_party_imports(path) - set(local)):
            names = {canonicalize_name(d) for d in DISTRIBUTIONS.get(module, [])}
            if not names & set(declared):
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                problems.append(f"{where}: {module} ({', '.join(names) or 'not installed'})")
    return problems


def test_the_package_imports_only_declared_dependencies_and_its_core_only_the_core():
    package = REPO / "src" / "lsqueeze"
    core = [p for p in sorted(package.rglob("*.py")) if str(p.relative_to(package)) not in WORKFLOW_MODULES]
    assert not undeclared(core, CORE), undeclared(core, CORE)
    pipeline = [package / m for m in sorted(WORKFLOW_MODULES)]
    pipeline += [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]
    assert not undeclared(pipeline, CORE | WORKFLOW), undeclared(pipeline, CORE | WORKFLOW)


def test_tests_and_benchmarks_import_only_declared_dependencies():
    files = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "bench").rglob("*.py"))
    local = {p.stem for p in files}
    everything = CORE | WORKFLOW | TEST | CROSSCHECK
    assert not undeclared(files, everything, local), undeclared(files, everything, local)


def test_a_module_the_core_install_lacks_fails_the_check(tmp_path):
    """The check above can fail: an import of a workflow tool in a core module is caught."""
    module = tmp_path / "probe.py"
    module.write_text("import snakemake\nimport numpy\nfrom .x import y\n")
    assert undeclared([module], CORE) == ["probe.py: snakemake (snakemake)"]


def test_loading_and_attacking_a_model_imports_no_workflow_tool():
    code = ("import sys, lsqueeze, lsqueeze.cli, lsqueeze.commands, lsqueeze.jobs.evaluate, "
            "lsqueeze.export, lsqueeze.science.attacks, lsqueeze.report.tables\n"
            "lsqueeze.load_model\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'snakemake', 'dvc', 'dvc_objects'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_lock_holds_every_declared_dependency_at_an_allowed_version():
    for name, req in (CORE | WORKFLOW | TEST).items():
        assert name in LOCK, f"requirements.lock lacks {req} (make lock)"
        assert req.specifier.contains(LOCK[name], prereleases=True), \
            f"requirements.lock has {name}=={LOCK[name]}, pyproject.toml asks {req} (make lock)"
    crosscheck = lock(REPO / "requirements-crosscheck.lock")
    assert crosscheck.keys() == CROSSCHECK.keys() and all(
        CROSSCHECK[n].specifier.contains(v) for n, v in crosscheck.items()), crosscheck


def test_lock_check_fails_on_a_version_pyproject_does_not_allow():
    req = CORE["pandas"]
    assert not Requirement(f"pandas{req.specifier},<1").specifier.contains(LOCK["pandas"])


def test_every_environment_installs_the_lock():
    make = (REPO / "Makefile").read_text()
    assert "pip install -q --require-hashes --no-deps -r requirements.lock" in make
    assert "pip install -q --require-hashes --no-deps -r requirements-crosscheck.lock" in make
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements.lock"]


def test_job_environment_is_the_locked_core():
    """workflow/envs/lsqueeze.yaml (Snakemake's --sdm conda cannot read a second file): the core
    dependencies and what they need, each at the lock's version."""
    env = yaml.safe_load((REPO / "workflow" / "envs" / "lsqueeze.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = dict(p.split("==") for p in pip)
    assert {canonicalize_name(n) for n in pins} >= set(CORE)
    assert not {canonicalize_name(n) for n in pins} & set(WORKFLOW), pins  # no job runs them
    wrong = {n: v for n, v in pins.items() if LOCK.get(canonicalize_name(n)) != v}
    assert not wrong, f"not the lock's versions (make lock): {wrong}"
    python = re.search(r"python=(\S+)", (REPO / "environment.yml").read_text()).group(1)
    assert f"python={python}" in env["dependencies"]


def test_this_environment_is_the_lock():
    """The suite runs in what `make venv` built: every locked package at its locked version."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in LOCK.items() if installed.get(n) != v}
    assert not wrong, f"(locked, installed) differ; rebuild with `rm -r .venv && make venv`: {wrong}"
