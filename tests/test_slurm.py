"""The pipeline on a real (single-node, localhost) SLURM cluster through workflow/profiles/slurm.

The cluster comes from tests/slurm/start.sh (Debian's munge, slurmctld, slurmd; no accounting) and
is torn down afterwards. Where SLURM is not installed or does not start, these tests skip — unless
LSQUEEZE_REQUIRE_SLURM=1 (CI, after installing it), where that is a failure.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, SNAKEMAKE, cell_dir, run_snakemake
from lsqueeze.plan.build import build_plan

pytestmark = pytest.mark.slow
HARNESS = REPO / "tests" / "slurm"

# The profile as users run it, with what this one CPU node needs instead: no GPUs (the profile
# asks for one per train/attack job, which would stay pending forever), small memory, at most the
# node's 2 cores, squeue polling (no slurmdbd) and quick first status checks. Threads equal the
# rules' own (read from the rule files), so the local run and the SLURM run compute with the same
# thread counts.
RULE_THREADS = {rule: int(n) for f in (REPO / "workflow" / "rules").glob("*.smk")
                for rule, n in re.findall(r"^rule (\w+):(?:\n(?!rule ).*)*?\n\s+threads: (\d+)",
                                          f.read_text(), flags=re.M)}
SLURM_ARGS = [
    "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
    "--jobs", "2", "--latency-wait", "5",
    "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-no-account", "--slurm-keep-successful-logs",
    "--default-resources", "mem_mb=1000", "runtime=20",
    "--set-resources", "train:gpu=0", "craft:gpu=0", "evaluate_white:gpu=0", "analyze:gpu=0",
    "landscape:gpu=0", "activations:gpu=0",
    "--set-threads", *(f"{r}={RULE_THREADS[r]}" for r in ("train", "craft", "evaluate_white", "analyze")),
]
VOLATILE = {"wall_time_s", "images_per_s", "code_version", "device"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Start the test cluster; yields the environment its clients need."""
    root = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(HARNESS / "start.sh"), str(root / "cluster")],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        msg = f"no SLURM test cluster (start.sh exit {proc.returncode}): {proc.stderr[-2000:]}"
        if os.environ.get("LSQUEEZE_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    cluster = proc.stdout.strip().splitlines()[-1]
    env = {"SLURM_CONF": f"{cluster}/slurm.conf",
           "PATH": f"{cluster}/bin:{os.environ['PATH']}"}
    yield env
    subprocess.run(["bash", str(HARNESS / "stop.sh"), cluster], timeout=120)
    assert not Path(cluster).exists()


def slurm_snakemake(workdir, configfile, env, *extra, check=True):
    return run_snakemake(workdir, *SLURM_ARGS, *extra, configfile=configfile, check=check, env=env)


def slurm_jobs(env):
    """{job id: (name, state)} of every job the controller still knows (MinJobAge=3600 s)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%j|%T"], capture_output=True,
                         text=True, env={**os.environ, **env}, check=True).stdout
    return {int(i): (n, s) for i, n, s in (line.split("|") for line in out.split())}


def _comparable(path: Path):
    """A result JSON without what legitimately differs between runs (timings, provenance, and
    file-byte hashes: torch.save embeds the random temp file name of the atomic write)."""
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items()
                    if k not in VOLATILE and not k.endswith("_hash")}
        return [strip(v) for v in d] if isinstance(d, list) else d
    return strip(json.loads(path.read_text()))


def _tensors_equal(a: Path, b: Path):
    """Weights / adversarial sets tensor by tensor (a stored source file hash excepted)."""
    x, y = (torch.load(p, weights_only=True) for p in (a, b))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_tensors_equal_obj(x[k], y[k]) for k in x
                                            if not k.endswith("_hash"))
    return _tensors_equal_obj(x, y)


def _tensors_equal_obj(x, y):
    if torch.is_tensor(x):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_tensors_equal_obj(x[k], y[k]) for k in x)
    return x == y


def test_tiny_preset_on_slurm_equals_local_run(slurm, tmp_path, tiny_config):
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    run_snakemake(local, configfile=tiny_config)
    proc = slurm_snakemake(cluster, tiny_config, slurm)
    log = proc.stdout + proc.stderr

    # Every non-local job went through SLURM: a plugin log per job and a COMPLETED record.
    submitted = [line for line in log.splitlines() if "has been submitted with SLURM jobid" in line]
    plugin_logs = sorted((cluster / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = {p.relative_to(cluster / ".snakemake" / "slurm_logs").parts[0] for p in plugin_logs}
    assert {"rule_data", "rule_train", "rule_craft", "rule_evaluate_white",
            "rule_analyze", "group_transfer_evaluate_black"} <= rules, rules
    assert len(plugin_logs) == len(submitted) >= 8
    jobs = slurm_jobs(slurm)
    ids = {int(p.stem) for p in plugin_logs}
    assert ids <= set(jobs), (ids, jobs)
    assert all(jobs[i][1] == "COMPLETED" for i in ids), jobs
    # The transfer evaluations of every target (each seed of a row is one) ran bundled in one
    # group job.
    n_black = len(list((local / "results" / "store").rglob("black/*/*.json")))
    assert n_black >= 2
    group_log = next(p for p in plugin_logs if p.parts[-2] == "group_transfer_evaluate_black")
    assert f"{n_black} of {n_black} steps (100%) done" in group_log.read_text()

    # Same seed, same thread counts, CPU: the same numbers as the local run (the model store and
    # the preset's own outputs).
    store_l, store_s = local / "results" / "store", cluster / "results" / "store"
    res_s = cluster / "results" / "tiny"
    results = sorted(p.relative_to(store_l) for p in store_l.rglob("*.json"))
    assert len(results) >= 8
    for rel in results:
        assert _comparable(store_l / rel) == _comparable(store_s / rel), rel
    tensors = sorted(p.relative_to(store_l) for p in store_l.rglob("*.pt"))
    assert any(p.name == "model.pt" for p in tensors) and any(
        p.parent.name.startswith("adv-") for p in tensors)
    for rel in tensors:
        assert _tensors_equal(store_l / rel, store_s / rel), rel
    for rel in ("tables/tables.md", "figures/summary.png"):
        assert (res_s / rel).stat().st_size > 0


def test_scancel_mid_training_resumes_from_saved_state(slurm, tmp_path, tiny_config):
    """scancel sends SIGTERM: training checkpoints and exits; Snakemake removes the job's declared
    outputs but not state.pt, resubmits (retries: 1) and the new SLURM job resumes from it."""
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["train"]["checkpoint_every"] = 10
    # Long enough that an idle 2-core machine is still training when scancel arrives (a tiny CNN
    # does ~250 steps/s there); a run that already finished would be retrained from step 0.
    cfg["cells"]["natural"]["steps"] = 3000
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(cfg))
    (cell,) = [c for c, v in build_plan(cfg).cells.items() if v["steps"] == 3000]
    out_dir = tmp_path / "wd" / cell_dir(cfg, cell)
    target = f"{cell_dir(cfg, cell)}/metrics.json"

    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "wd"),
           "--cores", "2", "--configfile", str(config), *SLURM_ARGS, "--retries", "1", target]
    env = {**os.environ, **slurm}
    with open(tmp_path / "snakemake.log", "w") as fh:
        runner = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while not (out_dir / "state.pt").exists():  # first periodic checkpoint written
                assert runner.poll() is None, (tmp_path / "snakemake.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "training never checkpointed"
                time.sleep(0.5)
            time.sleep(0.5)  # into training, far from step 3000
            running = [i for i, (_, s) in slurm_jobs(slurm).items() if s == "RUNNING"]
            assert len(running) == 1
            subprocess.run(["scancel", str(running[0])], env=env, check=True)
            rc = runner.wait(timeout=600)
        finally:
            if runner.poll() is None:
                runner.kill()
    log = (tmp_path / "snakemake.log").read_text()
    assert rc == 0, log[-4000:]
    assert "CANCELLED" in log  # the first job really was killed, and the retry is a new job
    assert log.count("has been submitted with SLURM jobid") == 3  # data, train, train again
    assert slurm_jobs(slurm)[running[0]][1] == "CANCELLED"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["steps_done"] == 3000
    assert 10 <= metrics["resumed_from"] < 3000, metrics["resumed_from"]
    assert not (out_dir / "state.pt").exists()  # removed once the model is complete
