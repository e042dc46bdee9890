"""Incremental reruns (slow, end to end): an edited preset reruns exactly the jobs it affects.

The tiny preset runs once in a temp dir; then each edit is checked against Snakemake's own dry
run: one cell's σ -> that cell's training, its evaluations and the aggregation only; a table's
attack -> re-evaluation without retraining; a table title -> the aggregation only; no edit ->
nothing. Rules carry the full resolved spec as params, so Snakemake's params rerun-trigger is what
makes this precise; the tables plan, a rule output whose params are the plan, is rewritten only
when the tables' content changes.
"""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_snakemake

pytestmark = pytest.mark.slow
SMOOTH_OLD = "digits28/ls0.2-sq0-gn0.3-k60-s0"
SMOOTH_NEW = "digits28/ls0.2-sq0-gn0.4-k60-s0"
# the tables plan (when the tables change) and the consumers of every measurement
DOWNSTREAM = {"tables_plan", "aggregate", "claims", "figure_summary", "all"}


def planned(workdir, configfile, env=None) -> dict[str, list[str]]:
    """{rule: [outputs of each job]} from a dry run."""
    out = run_snakemake(workdir, "-n", configfile=configfile, env=env).stdout
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("output:"):
            jobs[rule].append(line.split("output:", 1)[1].strip())
    return jobs


def edit(path, fn):
    cfg = yaml.safe_load(path.read_text())
    fn(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_config):
    work = tmp_path_factory.mktemp("incremental")
    cfg = work / "preset.yaml"
    shutil.copy(tiny_config, cfg)
    run_snakemake(work, configfile=cfg)
    return work, cfg


def test_noop_rerun_does_nothing(work):
    workdir, cfg = work
    assert planned(workdir, cfg) == {}
    plan_file = workdir / "results/tiny/plan/tables.json"
    before = plan_file.stat().st_mtime_ns
    run_snakemake(workdir, "-n", configfile=cfg)  # parsing again must not touch the plan file
    assert plan_file.stat().st_mtime_ns == before


def test_table_title_edit_only_reaggregates(work):
    workdir, cfg = work
    original = cfg.read_text()
    edit(cfg, lambda c: c["tables"][1].update(title="Table 2, renamed"))
    try:
        assert set(planned(workdir, cfg)) == DOWNSTREAM
    finally:
        cfg.write_text(original)
    # A dry run writes nothing (not even the plan), so after reverting nothing is left to do.
    assert planned(workdir, cfg) == {}


def test_attack_edit_reevaluates_without_retraining(work):
    workdir, cfg = work
    original = cfg.read_text()
    edit(cfg, lambda c: c["attacks"]["pgd_xent"].update(steps=7))
    try:
        jobs = planned(workdir, cfg)
    finally:
        cfg.write_text(original)
    assert set(jobs) == {"evaluate_white"} | DOWNSTREAM
    # Table 2's two rows, each under the new 7-step attack
    assert len(jobs["evaluate_white"]) == 2
    assert all("/white/pgd-xent-n7-" in o for o in jobs["evaluate_white"])


def test_code_edits_rerun_their_stage_only(work, tmp_path):
    """The package imported from an edited copy: a comment reruns nothing, a change to the
    aggregation code re-aggregates only, a change to an attack re-evaluates without retraining."""
    import lsqueeze

    workdir, cfg = work
    pkg = tmp_path / "lsqueeze"
    shutil.copytree(Path(lsqueeze.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(tmp_path)}

    def jobs_after(path, old, new):
        text = (pkg / path).read_text()
        assert old in text
        (pkg / path).write_text(text.replace(old, new, 1))
        return planned(workdir, cfg, env)

    assert jobs_after("train.py", "def regularized_loss(", "# a comment\ndef regularized_loss(") == {}
    jobs = jobs_after("tables.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    assert "aggregate" in jobs and set(jobs) <= DOWNSTREAM
    jobs = jobs_after("evaluate.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    assert {"evaluate_white", "evaluate_black"} <= set(jobs) and "train" not in jobs


def test_sigma_edit_reruns_only_that_cell(work):
    workdir, cfg = work
    edit(cfg, lambda c: c["cells"]["smooth"].update(sigma=0.4))
    jobs = planned(workdir, cfg)
    assert set(jobs) == {"train", "evaluate_white", "evaluate_black"} | DOWNSTREAM
    assert len(jobs["train"]) == 1 and f"models/{SMOOTH_NEW}/model.pt" in jobs["train"][0]
    for rule in ("evaluate_white", "evaluate_black"):
        assert len(jobs[rule]) == 1 and f"eval/{SMOOTH_NEW}/" in jobs[rule][0]
    run_snakemake(workdir, configfile=cfg)
    assert planned(workdir, cfg) == {}
    untouched = workdir / f"results/tiny/models/{SMOOTH_OLD}/model.pt"
    assert untouched.exists()  # the old cell's model is kept, not retrained or deleted
    md = (workdir / "results/tiny/tables/tables.md").read_text()
    assert "| 0.2 | 0 | 0.4 | 60 |" in md and "| 0.2 | 0 | 0.3 | 60 |" not in md
