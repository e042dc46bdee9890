"""The package as a user installs it: a wheel, installed outside the checkout, run from another
directory. What it reads at run time (schema, step times, published numbers, claims) ships inside
it, so `validate`, `cost`, `load_model` and `export` work with no checkout in sight.

The wheel goes into a folder of its own (`pip install --no-deps --target`) that is put first on
PYTHONPATH: the dependencies are those of the environment that runs the tests, nothing is
downloaded, and the checkout's src/ is not on the path. The pipeline's tools (the `workflow` extra)
are hidden from it, as in a core install: these commands must not need them.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

MODEL = REPO / "reproduced" / "mnist_100k_cpu" / "models" / "ls0-sq0-gn0-k10k-s0"
MEASUREMENTS = REPO / "reproduced" / "mnist_100k_cpu" / "measurements.parquet"
DATA = {"schema.json", "step_times.csv", "paper_tables.csv", "claims.yaml", "paper_figures.yaml"}


def _run(args, cwd, env=None, check=True):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder holding the installed wheel, the wheel, an environment that imports it)."""
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp / "wheels"
    # No build isolation: the environment's setuptools builds it, with no download.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", wheels, source], cwd=tmp)
    wheel = next(wheels.glob("lsqueeze-*.whl"))
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site,
          wheel], cwd=tmp)
    hidden = tmp / "hidden"  # an import of a workflow tool fails, as where it is not installed
    for tool in ("snakemake", "dvc", "dvc_objects"):
        (hidden / tool).mkdir(parents=True)
        (hidden / tool / "__init__.py").write_text(f"raise ImportError('{tool} is not installed')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(hidden)])
    return site, wheel, env


def test_wheel_holds_the_package_data(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"lsqueeze/data/{n}" for n in DATA} <= names, sorted(names)


def test_installed_package_runs_outside_the_checkout(installed, tmp_path):
    site, _, env = installed
    where = _run([sys.executable, "-c", "import lsqueeze; print(lsqueeze.__file__)"], tmp_path, env)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # not the checkout's src/
    preset = tmp_path / "demo.yaml"
    shutil.copy(REPO / "params" / "demo.yaml", preset)

    valid = _run([site / "bin" / "lsqueeze", "validate", preset.name], tmp_path, env)
    assert "demo.yaml" in valid.stdout + valid.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(preset.read_text().replace("cells:", "cellz:", 1))
    refused = _run([sys.executable, "-m", "lsqueeze", "validate", broken.name], tmp_path, env, check=False)
    assert refused.returncode != 0 and "cellz" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr

    cost = _run([sys.executable, "-m", "lsqueeze", "cost", preset.name], tmp_path, env)
    assert "GPU-hours" in cost.stdout, cost.stdout

    loaded = _run([sys.executable, "-c", "import sys, torch, lsqueeze\n"
                   "m = lsqueeze.load_model(sys.argv[1])\n"
                   "print(tuple(m(torch.zeros(2, 1, 28, 28)).shape))", MODEL], tmp_path, env)
    assert loaded.stdout.strip() == "(2, 10)", loaded.stdout

    out = tmp_path / "export"
    _run([sys.executable, "-m", "lsqueeze", "export", MODEL, "--out", out,
          "--measurements", MEASUREMENTS], tmp_path, env)
    files = [p for p in out.rglob("*") if p.is_file()]  # RobustBench's <dataset>/Linf/<name>.*
    assert {p.suffix for p in files} >= {".pt", ".pt2", ".sha256", ".md", ".json"}, files
    assert all(p.parent == out / "mnist" / "Linf" for p in files), files
