"""The project's own code: ruff, Snakemake's linter and snakefmt are clean, stage files hold
rules only, and every rule runs in the job environment (workflow/envs/lsqueeze.yaml)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_snakemake

BIN = Path(sys.executable).parent
RULES = REPO / "workflow" / "rules"


@pytest.mark.parametrize("preset", ["demo", "paper"])
def test_snakemake_lint_is_clean(tmp_path, preset):
    proc = run_snakemake(tmp_path, "--lint", configfile=REPO / "params" / f"{preset}.yaml",
                         check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-4000:]


def test_snakefmt_is_clean():
    snakefmt = BIN / "snakefmt"
    assert snakefmt.exists(), "snakefmt is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow/"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean():
    """The package, its tests and benchmarks pass the linter pyproject.toml configures."""
    ruff = BIN / "ruff"
    assert ruff.exists(), "ruff is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run([str(ruff), "check", "--no-cache", "src", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stage_files_hold_rules_only():
    """Globals, paths and input functions live in common.smk: a stage file reads as its rules."""
    for path in sorted(RULES.glob("*.smk")):
        if path.name == "common.smk":
            continue
        top = [line for line in path.read_text().splitlines()
               if line and not line.startswith((" ", "#", ")"))]
        assert all(re.match(r"(rule \w+:|if \w+:)$", line) for line in top), (path.name, top)


def test_every_rule_declares_the_job_environment():
    rules = [m for p in RULES.glob("*.smk") for m in re.findall(r"^\s*rule (\w+):", p.read_text(), re.M)]
    conda = sum(p.read_text().count("conda:\n") for p in RULES.glob("*.smk"))
    assert len(rules) >= 10 and conda == len(rules)
