import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
# MNIST's four .gz files (LSQUEEZE_MNIST_MIRROR, else bench/mnist/), served
# on 127.0.0.1 by the benchmarks' helper.
from common import MIRROR, serve_directory  # noqa: E402  (bench/ joins the path above)

MNIST_COPY = MIRROR

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
# The committed presets: every YAML file of params/.
PRESETS = sorted((REPO / "params").glob("*.yaml"))
# A Madry CNN small enough to train a few hundred steps in seconds, for the fault trials.
SMALL_ARCH = {"name": "madry_cnn", "conv1": 4, "conv2": 8, "fc": 16}


def tiny_spec(steps=600, **recipe):
    """A digits28 cell with noise on SMALL_ARCH, as a training job receives it."""
    from lsqueeze.plan import build as C

    cell = C.resolve_cell({}, {"dataset": "digits28", "steps": steps, "sigma": 0.3})
    return {"id": C.cell_id(cell), "cell": cell,
            "recipe": {**C.RECIPES["digits28"], "arch": SMALL_ARCH, **recipe}}


def cell_dir(config, cell: str) -> str:
    """A cell's folder in the model store (lsqueeze.plan.build.Plan.store_dir), relative to the run's
    working directory, for a preset given as a dict or a YAML file."""
    import yaml

    from lsqueeze.plan.build import build_plan

    cfg = config if isinstance(config, dict) else yaml.safe_load(Path(config).read_text())
    return f"{cfg.get('store', 'results/store')}/{build_plan(cfg).store_dir(cell)}"


@pytest.fixture
def http_server():
    """Serve a directory on 127.0.0.1 (a local dataset mirror); yields start(directory) -> URL."""
    with contextlib.ExitStack() as stack:
        yield lambda directory: stack.enter_context(serve_directory(directory))


def run_snakemake(workdir, *args, configfile=None, check=True, env=None, snakefile=None):
    """Run the repository's Snakefile (or `snakefile`, e.g. a copied checkout's) with `workdir` as
    working directory (outputs land there)."""
    snakefile = snakefile or REPO / "Snakefile"
    cmd = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "--cores", "2"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def copy_checkout(dest) -> Path:
    """The files a workflow run reads from its checkout (Snakefile, workflow/, params/, src/),
    copied to `dest`: its code can be edited without touching the repository."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for name in ("workflow", "params", "src"):
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared machine: one intra-op thread is ~10x faster than contending for two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's digits as the digits28 splits (train.pt, test.pt), prepared by the package."""
    from lsqueeze.jobs.data import prepare

    out = tmp_path_factory.mktemp("digits28")
    prepare("digits28", out)
    return out


@pytest.fixture(scope="session")
def tiny_config():
    return REPO / "tests" / "config" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config):
    """The tiny preset run once through Snakemake, shared read-only by the tests of its outputs
    (tables, claims): a test that changes the run makes its own."""
    work = tmp_path_factory.mktemp("tiny")
    run_snakemake(work, configfile=tiny_config)
    return work
