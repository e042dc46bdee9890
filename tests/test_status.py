"""`lsqueeze status`: how far a preset's run got, read from its model store: trained models,
checkpoints and whether today's code on this machine resumes them, evaluations on disk."""

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO
from lsqueeze.jobs.status import render, run_status
from lsqueeze.plan.build import build_plan
from lsqueeze.plan.layout import Layout
from lsqueeze.runtime.files import save_json, save_torch
from lsqueeze.runtime.fingerprint import fingerprint
from lsqueeze.runtime.integrity import checkpoint_key

TINY = REPO / "tests" / "config" / "tiny.yaml"


def _store(tmp_path, precision="fp32"):
    """The tiny preset's store with one model of each kind: trained (one evaluation written),
    stopped at a checkpoint of today's code, of older code, of the other precision; one not
    started. Returns (config, {kind: cell id})."""
    config = {**yaml.safe_load(TINY.read_text()), "store": str(tmp_path / "store")}
    plan = build_plan(config)
    layout = Layout(plan)
    ids = sorted(plan.cells)
    assert len(ids) >= 3
    trained, current, other_code = ids[:3]
    save_torch({"w": 1}, Path(layout.model(trained)))
    save_json({"steps_done": 60, "test_accuracy": 0.9, "diverged": False}, layout.metrics(trained))
    aid = next(a for c, a in sorted(plan.white) if c == trained)  # one of its evaluations is done
    save_json({"accuracy": 0.5}, layout.white(trained, aid))
    code = fingerprint("jobs.train")
    for cell, key, step in ((current, checkpoint_key(plan.train_spec(current), code), 50),
                            (other_code, checkpoint_key(plan.train_spec(other_code), "old"), 40)):
        save_torch({"key": key, "step": step, "device_type": "cpu", "precision": precision},
                   Path(layout.cell_dir(cell)) / "state.pt")
    return config, {"trained": trained, "current": current, "other_code": other_code}


def test_status_says_what_is_trained_what_resumes_and_what_restarts(tmp_path):
    config, ids = _store(tmp_path)
    entries = {e["id"]: e for e in run_status(config, "cpu", "fp32")}
    assert entries[ids["trained"]]["state"] == "trained" and entries[ids["trained"]]["step"] == 60
    planned = {c: sum(w == c for w, _ in build_plan(config).white)
               + sum(t == c for t, _, _ in build_plan(config).black) for c in entries}
    assert all(e["evals"] == planned[c] for c, e in entries.items())
    assert entries[ids["trained"]]["evals_done"] == 1
    resumes, restarts = entries[ids["current"]], entries[ids["other_code"]]
    assert resumes["state"] == restarts["state"] == "checkpoint"
    assert (resumes["step"], resumes["resumes"]) == (50, True)
    assert (restarts["step"], restarts["resumes"]) == (40, False)
    assert "training code changed" in restarts["why"]
    others = [e for e in entries.values() if e["id"] not in ids.values()]
    assert all(e["state"] == "not started" and e["evals_done"] == 0 for e in others)
    # the same checkpoint, on a machine that trains in bf16: not resumed
    bf16 = {e["id"]: e for e in run_status(config, "cpu", "bf16")}[ids["current"]]
    assert not bf16["resumes"] and "trained in fp32 and this run trains in bf16" in bf16["why"]
    text = render(list(entries.values()), "tiny", config["store"])
    assert f"1 of {len(entries)} models trained" in text
    assert f"| {ids['current']} | checkpoint at step 50 of 60 (83%): resumes |" in text
    assert "checkpoint at step 40 of 60 (67%): will train from step 0 (it was saved for another" in text


def test_status_reads_only_checked_files(tmp_path):
    config, ids = _store(tmp_path)
    state = Path(Layout(build_plan(config)).cell_dir(ids["current"])) / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # no longer the file its digest names
    state.write_bytes(bytes(data))
    entry = {e["id"]: e for e in run_status(config, "cpu", "fp32")}[ids["current"]]
    assert entry["step"] is None and not entry["resumes"] and str(state) in entry["why"]


def test_status_command_takes_the_runs_overrides(tmp_path):
    import torch

    from lsqueeze.jobs.train import resolve_precision

    # checkpoints in the precision this machine trains the preset in (`auto`: bf16 or fp32)
    config, ids = _store(tmp_path, resolve_precision(torch.device("cpu"), "auto"))
    run = subprocess.run([sys.executable, "-m", "lsqueeze", "status", str(TINY), "--config",
                          f"store={config['store']}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"tiny: 1 of {len(build_plan(config).cells)} models trained")
    assert f"| {ids['current']} | checkpoint at step 50 of 60 (83%): resumes |" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "lsqueeze", "status", str(TINY), "--config", "store"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
    assert "--config 'store': expected KEY=VALUE" in bad.stderr
