"""Incremental reruns (slow, end to end): an edited preset reruns exactly the jobs it affects.

The tiny preset runs once in a temp dir; then each edit is checked against Snakemake's own dry
run: one cell's σ -> that cell's training, its evaluations and the aggregation only; a table's
attack -> re-evaluation without retraining; a table title -> the aggregation only; no edit ->
nothing. Rules carry the full resolved spec as params, so Snakemake's params rerun-trigger is what
makes this precise; the tables plan, a rule output whose params are the plan, is rewritten only
when the tables' content changes. Code edits are made in a copy of the checkout, whose Snakefile
the whole module runs: the workflow fingerprints and runs its own checkout's code.
"""

import re
import shutil

import pytest
import yaml

from conftest import cell_dir, copy_checkout, run_snakemake

pytestmark = pytest.mark.slow
SMOOTH_OLD = "digits28/ls0.2-sq0-gn0.3-k60-s0"
SMOOTH_NEW = "digits28/ls0.2-sq0-gn0.4-k60-s0"
# the tables plan (when the tables change) and the consumers of every measurement
DOWNSTREAM = {"tables_plan", "aggregate", "claims", "figure_summary", "all"}


def dry_run(workdir, configfile, *args) -> list[dict]:
    """The jobs of a dry run of the copied checkout: [{rule, output, reason}]."""
    out = run_snakemake(workdir, "-n", *args, configfile=configfile,
                        snakefile=CHECKOUT["snakefile"]).stdout
    jobs = []
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            jobs.append({"rule": m.group(1), "output": "", "reason": ""})
        elif jobs and line.strip().startswith(("output:", "reason:")):
            key, value = line.strip().split(":", 1)
            jobs[-1][key] = value.strip()
    return jobs


def planned(workdir, configfile, *args) -> dict[str, list[str]]:
    """{rule: [outputs of each job]} from a dry run."""
    jobs: dict[str, list[str]] = {}
    for job in dry_run(workdir, configfile, *args):
        jobs.setdefault(job["rule"], []).append(job["output"])
    return jobs


CHECKOUT: dict = {}


def edit(path, fn):
    cfg = yaml.safe_load(path.read_text())
    fn(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_config):
    checkout = copy_checkout(tmp_path_factory.mktemp("checkout"))
    CHECKOUT.update(snakefile=checkout / "Snakefile", package=checkout / "src" / "lsqueeze")
    work = tmp_path_factory.mktemp("incremental")
    cfg = work / "preset.yaml"
    shutil.copy(tiny_config, cfg)
    run_snakemake(work, configfile=cfg, snakefile=CHECKOUT["snakefile"])
    return work, cfg


def test_noop_rerun_does_nothing(work):
    workdir, cfg = work
    assert planned(workdir, cfg) == {}
    plan_file = workdir / "results/tiny/plan/tables.json"
    before = plan_file.stat().st_mtime_ns
    # parsing again must not touch the plan file
    run_snakemake(workdir, "-n", configfile=cfg, snakefile=CHECKOUT["snakefile"])
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
    # Table 2's rows (the squeeze row with seeds 0 and 1), each under the new 7-step attack
    assert len(jobs["evaluate_white"]) == 3
    assert all("/white/pgd-xent-n7-" in o for o in jobs["evaluate_white"])


def test_an_added_attack_updates_the_worst_case_without_rerunning_the_others(work):
    workdir, cfg = work
    original = cfg.read_text()
    long_path = workdir / "results/tiny/tables/measurements.parquet"

    def add_cw(c):
        c["attacks"]["pgd_cw"] = {"attack": "pgd", "loss": "cw", "steps": 5, "eps": 0.3,
                                  "step_size": 0.1, "random_start": True}
        c["tables"][2]["columns"].insert(0, {"name": "white PGD CW", "threat": "white",
                                             "attack": "pgd_cw"})

    edit(cfg, add_cw)
    try:
        jobs = planned(workdir, cfg)
        assert set(jobs) == {"evaluate_white"} | DOWNSTREAM
        assert [o.split("/white/")[1] for o in jobs["evaluate_white"]] == \
            ["pgd-cw-n5-e0.3-a0.1-r1-rand.json"]
        run_snakemake(workdir, configfile=cfg, snakefile=CHECKOUT["snakefile"])
        import pandas as pd

        long = pd.read_parquet(long_path)
        worst = long[(long.threat == "worst") & (long.cell_id == "digits28/ls0-sq0.5-gn0.5-k60-s0")]
        assert "white:pgd-cw-n5-e0.3-a0.1-r1-rand" in worst.worst_of.iloc[0]
    finally:
        cfg.write_text(original)
        run_snakemake(workdir, configfile=cfg, snakefile=CHECKOUT["snakefile"])  # back as it was
    assert planned(workdir, cfg) == {}


@pytest.fixture
def code_edit(work):
    """Edit a module of the copied checkout's package; every edit is undone after the test."""
    originals = {}

    def apply(module, old, new):
        path = CHECKOUT["package"] / module
        text = originals.setdefault(path, path.read_text())
        assert old in text, f"{old!r} not in {module}"
        path.write_text(text.replace(old, new, 1))

    yield apply
    for path, text in originals.items():
        path.write_text(text)


def test_code_edits_rerun_their_stage_only(work, code_edit):
    """A comment reruns nothing; the aggregation code re-aggregates only; the evaluation code
    re-evaluates without retraining. The repository's own package (installed in the venv) is
    unchanged: the workflow hashes the code of the checkout its Snakefile sits in."""
    workdir, cfg = work
    code_edit("science/step.py", "def regularized_loss(", "# a comment\ndef regularized_loss(")
    assert planned(workdir, cfg) == {}
    code_edit("report/tables.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    jobs = planned(workdir, cfg)
    assert "aggregate" in jobs and set(jobs) <= DOWNSTREAM
    code_edit("jobs/evaluate.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    jobs = planned(workdir, cfg)
    assert {"evaluate_white", "evaluate_black"} <= set(jobs) and "train" not in jobs


@pytest.mark.parametrize("module, old, new", [
    ("science/attacks.py", "run = load_function(kind_of(spec).run)",
     "run = 1 and load_function(kind_of(spec).run)"),  # the dispatcher
    ("science/autoattack.py", "x, y = x.detach().clone()", "x, y = x.detach().clone() + 0"),
])
def test_evaluation_attack_edit_retrains_nothing(work, code_edit, module, old, new):
    workdir, cfg = work
    code_edit(module, old, new)
    jobs = planned(workdir, cfg)
    assert "train" not in jobs and "analyze" not in jobs
    assert {"evaluate_white", "evaluate_black"} <= set(jobs)
    # every evaluation and black-box set reruns, because every one ran the edited code
    assert set(jobs) <= {"evaluate_white", "evaluate_black", "craft"} | DOWNSTREAM


def test_training_loss_edit_reevaluates_only_through_the_retrained_models(work, code_edit):
    """The loss is training code: every model retrains, and the evaluations rerun because their
    model changed, never because the evaluation code did."""
    workdir, cfg = work
    code_edit("science/step.py", 'return torch.linalg.matrix_norm(z, ord="fro")',
              'return 1.0 * torch.linalg.matrix_norm(z, ord="fro")')
    jobs = dry_run(workdir, cfg)
    rules = {j["rule"] for j in jobs}
    assert "train" in rules and {"evaluate_white", "evaluate_black"} <= rules
    n_cells = len(list((workdir / "results/store").glob("*/*/*/model.pt")))
    assert len([j for j in jobs if j["rule"] == "train"]) == n_cells
    for job in jobs:
        if job["rule"] in {"evaluate_white", "evaluate_black", "craft", "analyze"}:
            assert job["reason"].startswith("Input files updated by another job"), job
            assert "Params have changed" not in job["reason"], job
            assert "Code has changed" not in job["reason"], job


def test_sigma_edit_reruns_only_that_cell(work):
    workdir, cfg = work
    edit(cfg, lambda c: c["cells"]["smooth"].update(sigma=0.4))
    jobs = planned(workdir, cfg)
    assert set(jobs) == {"train", "evaluate_white", "evaluate_black"} | DOWNSTREAM
    new = cell_dir(cfg, SMOOTH_NEW)
    assert len(jobs["train"]) == 1 and f"{new}/model.pt" in jobs["train"][0]
    for rule in ("evaluate_white", "evaluate_black"):
        assert len(jobs[rule]) == 1 and f"{new}/eval-n100/" in jobs[rule][0]
    run_snakemake(workdir, configfile=cfg, snakefile=CHECKOUT["snakefile"])
    assert planned(workdir, cfg) == {}
    untouched = workdir / cell_dir(cfg, SMOOTH_OLD) / "model.pt"
    assert untouched.exists()  # the old cell's model is kept, not retrained or deleted
    md = (workdir / "results/tiny/tables/tables.md").read_text()
    assert "| 0.2 | 0 | 0.4 | 60 |" in md and "| 0.2 | 0 | 0.3 | 60 |" not in md


def test_the_documented_repair_of_a_corrupt_model(work):
    """README, "A corrupted, replaced or moved file": --forcerun on the file the error names
    retrains that cell and reruns what was made from it, and nothing else."""
    from lsqueeze.runtime.integrity import verify_model

    workdir, cfg = work
    cell = "digits28/ls0-sq0.5-gn0.5-k60-s1"
    target = f"{cell_dir(cfg, cell)}/model.pt"  # as the README writes it: from the run dir
    model = workdir / target
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    jobs = planned(workdir, cfg, "--forcerun", target)
    assert len(jobs["train"]) == 1 and cell_dir(cfg, cell) in jobs["train"][0]
    assert jobs["evaluate_white"] and all(cell_dir(cfg, cell) in o for o in jobs["evaluate_white"])
    assert set(jobs) <= {"train", "evaluate_white", "evaluate_black"} | DOWNSTREAM
    run_snakemake(workdir, "--forcerun", target, configfile=cfg, snakefile=CHECKOUT["snakefile"])
    verify_model(model, cell)
    assert planned(workdir, cfg) == {}


def test_after_snakemake_itself_is_killed_unlock_then_rerun_incomplete(work):
    """README, "A killed job": `--unlock`, then the same command with `--rerun-incomplete`."""
    import os
    import signal
    import subprocess
    import time

    from conftest import SNAKEMAKE

    workdir, cfg = work
    cell = "digits28/ls0-sq0.5-gn0.5-k60-s1"  # in the preset whatever the tests before edited
    model = f"{cell_dir(cfg, cell)}/model.pt"
    base = [SNAKEMAKE, "-s", str(CHECKOUT["snakefile"]), "--directory", str(workdir),
            "--cores", "2", "--configfile", str(cfg)]
    out = workdir / "killed-snakemake.log"
    proc = subprocess.Popen(base + ["--forcerun", model], stdout=open(out, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    # Kill as soon as the forced job has started: Snakemake has then taken its lock and marked
    # the model incomplete (waiting a fixed time instead races a fast machine to the job's end).
    incomplete = workdir / ".snakemake" / "incomplete"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if incomplete.is_dir() and any(f.name != "migration_underway"
                                       for f in incomplete.rglob("*") if f.is_file()):
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the forced job ended before it could be killed:\n{out.read_text()}"
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its jobs, as a lost terminal would
    proc.wait(timeout=60)
    stuck = run_snakemake(workdir, configfile=cfg, snakefile=CHECKOUT["snakefile"], check=False)
    assert stuck.returncode != 0 and "cannot be locked" in stuck.stdout + stuck.stderr
    run_snakemake(workdir, "--unlock", configfile=cfg, snakefile=CHECKOUT["snakefile"])
    # the same command again, with --rerun-incomplete (here it forced the model: without the
    # --forcerun, Snakemake would leave the missing model be, its evaluations being complete)
    run_snakemake(workdir, "--forcerun", model, "--rerun-incomplete", configfile=cfg,
                  snakefile=CHECKOUT["snakefile"])
    assert (workdir / model).is_file() and planned(workdir, cfg) == {}


def test_a_second_preset_finds_the_models_the_first_trained(work):
    """One table today, the whole paper tomorrow: a second preset (its own results folder) naming
    cells the first trained plans no training, crafting or evaluation for them, only for its one
    new cell and its own tables. An edited recipe key gives its dataset's cells a new address in
    the store: exactly those cells retrain, and the first preset's run stays complete."""
    workdir, cfg = work
    tiny = yaml.safe_load(cfg.read_text())
    table2 = next(t for t in tiny["tables"] if t["id"] == "2")
    table2["rows"][0]["seeds"] = [0, 1, 2]  # one new cell: a third seed
    second = {**tiny, "preset": "second", "results": "results/second", "tables": [table2]}
    path = workdir / "second.yaml"
    path.write_text(yaml.safe_dump(second, sort_keys=False))
    new = cell_dir(second, "digits28/ls0-sq0.5-gn0.5-k60-s2")
    jobs = planned(workdir, path)
    assert set(jobs) == {"train", "evaluate_white", "evaluate_black"} | DOWNSTREAM, jobs
    assert len(jobs["train"]) == 1 and jobs["train"][0].startswith(f"{new}/model.pt")
    assert all(o.startswith(f"{new}/") for r in ("evaluate_white", "evaluate_black")
               for o in jobs[r]), jobs
    run_snakemake(workdir, configfile=path, snakefile=CHECKOUT["snakefile"])
    assert (workdir / "results/second/tables/table_2.parquet").is_file()
    assert planned(workdir, path) == {} and planned(workdir, cfg) == {}

    from lsqueeze.plan.build import build_plan

    recipe = {"digits28": {"lr": 0.002}}
    edit(path, lambda c: c.update(recipes=recipe))
    trained = {o.split(",")[0] for o in planned(workdir, path)["train"]}
    edited = {**second, "recipes": recipe}
    assert trained == {f"{cell_dir(edited, c)}/model.pt" for c in build_plan(second).cells}
    assert cell_dir(edited, "digits28/x").rsplit("/", 1)[0] != new.rsplit("/", 1)[0]
    assert planned(workdir, cfg) == {}
