"""`lsqueeze rehearse`: a preset's real DAG at toy scale, in a directory of its own.

The rehearsal preset keeps every job of the real one (same cells, attacks, black-box sources,
analyses, figures), with steps, batch sizes and test images shrunk; the generated datasets go
through the real download, checksum and conversion path; every table, figure and claims file says
it is a rehearsal; a broken CIFAR-only path fails with one line naming the job and its log; the
real store and results are never touched.
"""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PRESETS, REPO, copy_checkout
from lsqueeze.plan.build import build_plan, load_config
from lsqueeze.plan.layout import Layout
from lsqueeze.plan.rehearsal import MIN_STEPS, rehearsal_preset, step_map
from lsqueeze.plan.schema import validate
from lsqueeze.runtime import rehearsal as run_options

PRESET = REPO / "tests" / "config" / "rehearsal.yaml"
TABLE_PRESETS = [p for p in PRESETS if re.fullmatch(r"(table\d+|paper)\.yaml", p.name)]


def _jobs(plan) -> dict:
    """The plan's jobs by kind, with the training steps taken out of the cell ids (the one part
    of an id the rehearsal changes)."""
    strip = lambda cid: re.sub(r"-k[0-9.]+[kM]?-", "-k-", cid)  # noqa: E731
    return {"cells": len(plan.cells), "attacks": sorted(plan.attacks),
            "white": len(plan.white), "black": len(plan.black),
            "analyses": len(plan.analyses), "figures": [f["kind"] for f in plan.figures],
            "sources": sorted({strip(s) for _, s, _ in plan.black})}


@pytest.mark.parametrize("preset", TABLE_PRESETS, ids=lambda p: p.stem)
def test_rehearsal_preset_keeps_every_job(preset):
    config = load_config(preset)
    fake = rehearsal_preset(config, str(preset), {"mnist": "http://127.0.0.1:1/"}, "sums.json")
    validate(fake)
    real, small = build_plan(config), build_plan(fake)
    assert _jobs(small) == _jobs(real)
    assert len(Layout(small).targets()["figures"]) == len(Layout(real).targets()["figures"])
    for cid, cell in small.cells.items():
        assert MIN_STEPS <= cell["steps"] < MIN_STEPS + 20, cid
        recipe, real_recipe = small.recipe(cell["dataset"]), real.recipe(cell["dataset"])
        assert recipe["batch_size"] == 2
        # every other recipe key, boundaries included, is the real one (fractions of the steps)
        assert {k: v for k, v in recipe.items() if k != "batch_size"} == \
               {k: v for k, v in real_recipe.items() if k != "batch_size"}
    assert small.attacks == real.attacks  # capped when they run, never in the preset
    assert fake["train"]["precision"] == config["train"]["precision"]
    assert fake["rehearsal"]["banner"] == run_options.BANNER
    # its paths are relative to the rehearsal's own directory (lsqueeze.rehearse runs it there)
    assert fake["store"] == "results/store" and fake["rehearsal"]["of"] == str(preset)


def test_steps_keep_cells_apart_and_cross_every_boundary():
    config = load_config(REPO / "params" / "table6.yaml")  # the k sweep
    steps = step_map(config)["mnist"]
    assert len(set(steps.values())) == len(steps)  # no two cells merge
    assert list(steps.values()) == sorted(steps.values())  # and their order is kept
    cifar = step_map(load_config(REPO / "params" / "table3.yaml"))["cifar10"]
    for s in cifar.values():  # lr boundaries at 0.5 and 0.75 of the steps: two distinct steps
        b = [round(f * s) for f in (0.5, 0.75)]
        assert 0 < b[0] < b[1] < s


def test_attack_caps_only_in_a_rehearsal(monkeypatch, capsys):
    record = {"id": "pgd", "paper": {"steps": 1000, "restarts": 10},
              "pixel": {"attack": "pgd", "steps": 1000, "restarts": 10, "eps": 0.03}}
    monkeypatch.delenv(run_options.ENV, raising=False)
    assert run_options.cap_attack(record) == record
    monkeypatch.setenv(run_options.ENV, json.dumps({"banner": "b", "attack_steps": 3,
                                                    "attack_restarts": 2}))
    capped = run_options.cap_attack(record)
    assert capped["pixel"] == {**record["pixel"], "steps": 3, "restarts": 2}
    assert capped["paper"] == record["paper"] and capped["id"] == "pgd"
    assert "steps 1000 -> 3" in capsys.readouterr().err


@pytest.mark.parametrize("dataset,shape", [("mnist", (20, 1, 28, 28)), ("cifar10", (20, 3, 32, 32)),
                                           ("cifar100", (20, 3, 32, 32))])
def test_generated_files_go_through_the_real_data_path(tmp_path, http_server, dataset, shape):
    from lsqueeze.rehearse import generate
    from lsqueeze.science.splits import load_split

    sums = generate([dataset], tmp_path / "mirror")
    (tmp_path / "sums.json").write_text(json.dumps(sums))
    if dataset == "mnist":  # the real format: IDX behind gzip
        blob = gzip.decompress((tmp_path / "mirror/mnist/t10k-images-idx3-ubyte.gz").read_bytes())
        assert blob[:4] == bytes([0, 0, 8, 3])
    cmd = [sys.executable, "-m", "lsqueeze", "data", "--dataset", dataset,
           "--out-dir", str(tmp_path / "out"), "--mirror", http_server(tmp_path / "mirror" / dataset),
           "--rehearsal-checksums", str(tmp_path / "sums.json")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop(run_options.ENV, None)
    if dataset == "cifar10":  # outside a rehearsal the override is refused, in one line
        refused = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert refused.returncode == 2 and "only a rehearsal" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    ok = subprocess.run(cmd, capture_output=True, text=True,
                        env={**env, run_options.ENV: json.dumps({"banner": "b"})})
    assert ok.returncode == 0, ok.stderr
    assert "not the official ones" in ok.stderr  # said in the job's log
    x, y = load_split(tmp_path / "out" / "train.pt")
    assert tuple(x.shape) == shape
    if dataset == "cifar10":  # and the official sums still stand: the generated files fail them
        official = subprocess.run(cmd[:-2], capture_output=True, text=True, env=env)
        assert official.returncode == 2 and "checksum mismatch (expected md5" in official.stderr


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rehearse(cwd, *args, pythonpath=REPO / "src"):
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    env.pop(run_options.ENV, None)
    return subprocess.run([sys.executable, "-m", "lsqueeze", "rehearse", str(PRESET), *args],
                          cwd=cwd, capture_output=True, text=True, env=env)


def test_rehearsal_runs_every_job_and_leaves_the_real_run_alone(tmp_path):
    # a working directory with a real store, real results and real data beside the rehearsal's
    for d in ("results/store/mnist", "results/rehearsal-test/tables", "results/data/mnist"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "keep.json").write_text("{}")
    before = _snapshot(tmp_path / "results")
    proc = _rehearse(tmp_path, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = {k: v for k, v in _snapshot(tmp_path / "results").items()
             if not k.startswith("rehearsal/")}
    assert after == before  # nothing outside results/rehearsal/ was written or touched
    root = tmp_path / "results" / "rehearsal" / "rehearsal"
    out = root / "results" / "rehearsal-test"
    # the summary: one line per rule, all passed, and the real run's cost
    lines = {ln.split()[0]: ln.split()[1:] for ln in proc.stdout.splitlines() if ln.strip()}
    for rule in ("data", "train", "evaluate_white", "craft", "evaluate_black", "analyze",
                 "aggregate", "claims", "figure", "figure_summary"):
        jobs, passed, failed, _ = lines[rule]
        assert jobs == passed and failed == "0", (rule, lines[rule])
    assert lines["data"][0] == "2" and lines["train"][0] == "5"
    assert "FAILED" not in proc.stdout and "Projected GPU-hours" in proc.stdout
    # every table, figure and claims file says what it is
    files = [p for p in (out / "tables").iterdir() if p.suffix in (".md", ".html", ".parquet")]
    files += list((out / "figures").glob("*.p[nd][gf]"))
    assert len(files) > 15
    for p in files:
        if p.suffix in (".md", ".html"):
            assert "REHEARSAL: THE NUMBERS ARE MEANINGLESS" in p.read_text()[:2000], p
        elif p.suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(p)
            assert schema.names[0] == "rehearsal" and b"rehearsal" in schema.metadata, p
        else:
            assert len(p.read_bytes()) > 1000
    assert (out / "figures" / "figure_1.png").exists()
    # the attacks ran capped, and said so in their logs
    logs = "".join(p.read_text() for p in (root / "results/store/logs/white").rglob("*.log"))
    assert "steps 40 -> 3" in logs and "restarts 5 -> 2" in logs


def test_broken_cifar_path_fails_in_one_line_naming_the_job(tmp_path):
    """A bug that only 3-channel input meets (as only CIFAR has) is found by the rehearsal, and
    reported as one line per failed job with its log."""
    checkout = copy_checkout(tmp_path / "checkout")
    attacks = checkout / "src" / "lsqueeze" / "science" / "attacks.py"
    text = attacks.read_text()
    # the dispatcher's body starts after its docstring: inject before its first statement
    body = "    run = load_function(kind_of(spec).run)\n"
    assert text.count(body) == 1 and "\ndef attack(model, x, y, spec" in text
    attacks.write_text(text.replace(body, "    if x.shape[1] == 3:\n"
                                    "        raise RuntimeError('injected: 3-channel input')\n" + body))
    proc = _rehearse(tmp_path, "--cores", "2", "--dir", str(tmp_path / "reh"),
                     pythonpath=checkout / "src")
    assert proc.returncode == 1
    failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 2, proc.stdout[-3000:]  # Table 3's two CIFAR-10 models, one attack
    for line in failed:
        assert re.match(r"FAILED evaluate_white \S*cifar10/\S+/white/pgd-cw-n20-\S+\.json: "
                        r"RuntimeError: injected: 3-channel input \(log: \S+\.log\)$", line), line
        assert Path(line.split("(log: ")[1].rstrip(")")).exists()
    # everything else (MNIST, CIFAR-10 training) still ran
    row = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("train "))
    assert row[1] == row[2] == "5"


@pytest.mark.parametrize("preset", TABLE_PRESETS, ids=lambda p: p.stem)
def test_subset_runs_every_job_kind_once(preset):
    """What CI rehearses of a preset: every dataset, architecture, kind of training (method, α,
    β, σ), attack configuration (white-box and black-box), black-box source, table, column and
    figure kind; fewer models."""
    from lsqueeze.plan.rehearsal import subset

    config = load_config(preset)
    real, small = build_plan(config), build_plan(subset(config))

    def kinds(plan):
        recipes = {c["dataset"]: json.dumps(plan.recipe(c["dataset"])["arch"], sort_keys=True)
                   for c in plan.cells.values()}
        return {"datasets": sorted(recipes), "archs": sorted(set(recipes.values())),
                "training": sorted({(c["dataset"], c["method"], c["alpha"] > 0, c["beta"] > 0,
                                     c["sigma"] > 0) for c in plan.cells.values()}),
                "white": sorted({a for _, a in plan.white}),
                "black": sorted({(s, a) for _, s, a in plan.black}),
                "tables": [t["id"] for t in plan.tables],
                "columns": [[c["name"] for c in t["columns"]] for t in plan.tables],
                "figure_kinds": sorted({f["kind"] for f in plan.figures})}

    assert kinds(small) == kinds(real)
    assert len(small.cells) <= len(real.cells)
    if len(real.cells) > 20:
        assert len(small.cells) < len(real.cells) / 2


SNAKEMAKE_LOG = """Job stats:
job      count
-----  -------
data         1
train        2
total        3

[Mon Dec  7 18:30:57 2026]
localrule data:
    output: results/data/mnist/train.pt, results/data/mnist/test.pt
    jobid: 4
[Mon Dec  7 18:31:02 2026]
Finished jobid: 4 (Rule: data)
[Mon Dec  7 18:31:02 2026]
rule train:
    output: results/store/mnist/r1/a/model.pt, results/store/mnist/r1/a/metrics.json
    log: results/store/logs/train/a.log
    jobid: 7
[Mon Dec  7 18:31:40 2026]
Finished jobid: 7 (Rule: train)
[Mon Dec  7 18:31:40 2026]
rule train:
    output: results/store/mnist/r1/b/model.pt, results/store/mnist/r1/b/metrics.json
    jobid: 8
[Mon Dec  7 18:31:45 2026]
Error in rule train:
    message: None
    jobid: 8
    output: results/store/mnist/r1/b/model.pt, results/store/mnist/r1/b/metrics.json
    log: results/store/logs/train/b.log (check log file(s) for error details)
"""


def test_summary_per_rule_and_one_line_per_failure(tmp_path):
    from lsqueeze.rehearse import failure_line, parse_log, summary

    parsed = parse_log(SNAKEMAKE_LOG)
    rows = {r["rule"]: r for r in summary(parsed)}
    assert rows["data"] == {"rule": "data", "jobs": 1, "passed": 1, "failed": 0, "seconds": 5.0}
    assert rows["train"] == {"rule": "train", "jobs": 2, "passed": 1, "failed": 1, "seconds": 38.0}
    (tmp_path / "results/store/logs/train").mkdir(parents=True)
    (tmp_path / "results/store/logs/train/b.log").write_text("Traceback ...\nValueError: bad\n\n")
    (line,) = [failure_line(f, tmp_path) for f in parsed["failed"]]
    assert line == (f"FAILED train results/store/mnist/r1/b/model.pt: ValueError: bad "
                    f"(log: {tmp_path}/results/store/logs/train/b.log)")


def test_banner_only_in_a_rehearsal(monkeypatch):
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2]})
    monkeypatch.delenv(run_options.ENV, raising=False)
    assert run_options.stamp_markdown("# T\n") == "# T\n"
    assert run_options.stamp_html("<html><body>x</body></html>") == "<html><body>x</body></html>"
    assert run_options.stamp_frame(frame) is frame
    monkeypatch.setenv(run_options.ENV, json.dumps({"banner": run_options.BANNER}))
    assert run_options.stamp_markdown("# T\n").startswith("# REHEARSAL: THE NUMBERS ARE MEANINGLESS")
    page = run_options.stamp_html('<html><body class="x">x</body></html>')
    assert page.startswith('<html><body class="x"><p') and "MEANINGLESS" in page
    stamped = run_options.stamp_frame(frame)
    assert list(stamped.columns) == ["rehearsal", "a"] and list(frame.columns) == ["a"]
