"""DVC around Snakemake, end to end and offline, on the tiny preset in throwaway git repos.

Repo A: `dvc repro` runs the pipeline, `dvc push` to the default local remote (a directory beside
the clone). Repo B, a fresh `git clone` of A: `dvc pull` + `lsqueeze restore`, then Snakemake has
nothing to do and the tables are byte-identical. Editing one cell and `dvc repro` retrains that cell
only, and `dvc params diff` / `dvc metrics diff` show the edit and what it did.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
NOTHING = "Nothing to be done"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
       # DVC must not phone home (the repo's .dvc/config also sets core.analytics = false)
       "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def sh(cwd, *cmd, check=True, timeout=1200):
    proc = subprocess.run(list(cmd), cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def _copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked, minus ignored): what a commit of the
    current work would contain, so the test checks uncommitted edits too and runs on a fresh clone."""
    files = sh(REPO, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for rel in filter(None, files.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _dry_run(repo: Path):
    return sh(repo, "snakemake", "-n", "--cores", "1", "--configfile", "params/tiny.yaml")


def _jobs_in_last_log(repo: Path) -> list[tuple[str, str]]:
    """(rule, output) of every job in Snakemake's newest log file."""
    log = max((repo / ".snakemake" / "log").glob("*.snakemake.log"), key=os.path.getmtime)
    text = log.read_text()
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", text, re.M)


def test_repro_push_pull_restore_and_one_cell_edit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    _copy_tree(a)
    shutil.copy(REPO / "tests" / "config" / "tiny.yaml", a / "params" / "tiny.yaml")
    (a / "params.yaml").write_text("preset: tiny\n")
    for rel in ("dvc.lock", "metrics"):  # a committed demo run is not part of this run
        shutil.rmtree(a / rel, ignore_errors=True) if (a / rel).is_dir() else (a / rel).unlink(
            missing_ok=True)
    sh(a, "git", "init", "-q")
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "tree under test, tiny preset")

    # --- A: versioned run ---------------------------------------------------------------------
    sh(a, "dvc", "repro")
    assert NOTHING in _dry_run(a).stdout, "DVC's commit of the outs disturbed Snakemake's state"
    metrics_a = json.loads((a / "metrics" / "tiny.json").read_text())
    assert metrics_a["tables"]["2"]["values"]["smooth"]["Test"] is not None
    assert (a / "metrics" / "tiny_compare.csv").read_text().startswith("table,cell,column,")
    sh(a, "git", "add", "dvc.lock", "metrics")
    sh(a, "git", "commit", "-qm", "tiny run")
    sh(a, "dvc", "push")  # default remote: ../lsqueeze-dvc-remote beside the clone
    assert (tmp_path / "lsqueeze-dvc-remote").is_dir()

    # --- B: fresh clone, pull, restore --------------------------------------------------------
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    sh(b, "dvc", "pull")
    out = sh(b, sys.executable, "-m", "lsqueeze", "restore").stdout
    assert "restored Snakemake metadata" in out
    dry = _dry_run(b)
    assert NOTHING in dry.stdout, dry.stdout[-3000:]
    tables_a, tables_b = _files(a / "results/tiny/tables"), _files(b / "results/tiny/tables")
    assert tables_a and tables_a == tables_b

    # The restored metadata is what lets Snakemake see a rule-param edit that changes no path:
    # without it a pulled workspace would call these stale evaluations up to date.
    preset = b / "params" / "tiny.yaml"
    original = preset.read_text()
    preset.write_text(original.replace("n_test: 100, batch_size", "n_test: 90, batch_size"))
    dry = _dry_run(b)
    assert NOTHING not in dry.stdout and "evaluate_white" in dry.stdout, dry.stdout[-3000:]
    preset.write_text(original)
    assert NOTHING in _dry_run(b).stdout

    # --- B: one cell's parameter changes; only that cell retrains ------------------------------
    cfg = yaml.safe_load(original)
    assert cfg["cells"]["smooth"]["alpha"] == 0.2
    preset.write_text(original.replace("smooth: {dataset: digits28, alpha: 0.2,",
                                       "smooth: {dataset: digits28, alpha: 0.1,"))
    models = b / "results/tiny/models/digits28"
    before = {p.parent.name: p.stat().st_mtime_ns for p in models.glob("*/model.pt")}
    params_diff = sh(b, "dvc", "params", "diff").stdout
    assert "cells.smooth.alpha" in params_diff and "0.1" in params_diff, params_diff
    sh(b, "dvc", "repro")

    jobs = _jobs_in_last_log(b)
    trained = [o for rule, o in jobs if rule == "train"]
    assert len(trained) == 1 and "/ls0.1-" in trained[0], jobs
    assert {rule for rule, _ in jobs} >= {"train", "evaluate_white", "aggregate"}
    after = {p.parent.name: p.stat().st_mtime_ns for p in models.glob("*/model.pt")}
    assert {k: after[k] for k in before if "ls0.2" not in k} == {
        k: v for k, v in before.items() if "ls0.2" not in k}, "another cell was retrained"
    assert any(k.startswith("ls0.1-") for k in after)

    diff = json.loads(sh(b, "dvc", "metrics", "diff", "--json").stdout)
    values = {k for f in diff.values() for k, v in f.items() if v.get("diff") and ".values." in k}
    assert values and all(".values.smooth." in k for k in values), diff
