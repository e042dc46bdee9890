"""What a change to a finished run reruns: nothing unless a number could change; and the command
Snakemake prints for a job reruns it by hand.

Settings that only trade memory or speed (the evaluation batch, the device) must rerun no job;
a kind whose result depends on how images are grouped (the reference AutoAttack draws its random
state per call) runs in its own fixed batch, so the evaluation batch cannot change its number.
"""

import json
import os
import shutil
import subprocess
import sys

import torch
import yaml

from conftest import REPO, cell_dir, run_snakemake
from lsqueeze.jobs import evaluate
from lsqueeze.registries.attack_kinds import AUTOATTACK_BATCH, kind_of

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: CPU reductions stay bitwise equal


def test_a_changed_evaluation_batch_reruns_nothing(tiny_run, tiny_config, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)  # copy2: mtimes kept, as in a moved run
    cfg = yaml.safe_load(tiny_config.read_text())
    assert cfg["eval"]["batch_size"] != 7
    cfg["eval"]["batch_size"] = 7
    preset = tmp_path / "tiny-bs7.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake(work, "-n", "-p", configfile=preset)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    # ...and a job that does run uses the new batch
    forced = run_snakemake(work, "-n", "-p", "--forceall", configfile=preset)
    commands = [line for line in forced.stdout.splitlines() if "lsqueeze evaluate " in line]
    assert commands and all("--batch-size 7 " in line for line in commands)


def _batches(monkeypatch, spec, batch_size, n=1_200):
    """The batch lengths evaluate.run_attack hands the attack for n images."""
    seen = []

    def fake_attack(model, x, y, spec, seed=0, index=None, batched_restarts=False, breakdown=False):
        seen.append(len(y))
        return x, torch.ones(len(y), dtype=torch.bool), None

    monkeypatch.setattr(evaluate.attacks, "attack", fake_attack)
    x, y = torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.long)
    evaluate.run_attack(None, x, y, spec, batch_size, breakdown=True)
    return seen


def test_autoattack_runs_in_its_own_fixed_batch_whatever_the_evaluation_batch(monkeypatch):
    aa = {"attack": "autoattack", "eps": 0.3, "version": "standard"}
    assert kind_of(aa).batch == AUTOATTACK_BATCH == 500  # the batch every kept record was made with
    for batch_size in (7, 500, 4096):
        assert _batches(monkeypatch, aa, batch_size) == [500, 500, 200]
    # PGD's random starts are fixed per image (test_attacks): it follows the evaluation batch
    pgd = {"attack": "pgd", "loss": "xent", "eps": 0.3, "steps": 5, "step_size": 0.1,
           "random_start": True, "restarts": 1}
    assert kind_of(pgd).batch is None
    assert _batches(monkeypatch, pgd, 700) == [700, 500]


# --- a GPU preset on a machine without a GPU, and the commands Snakemake prints -----------------

def test_snakemake_gpu_preset_fails_fast_and_device_override_reruns_nothing(tmp_path, tiny_config):
    """A GPU preset on this CPU machine: the training job fails at once with the reason in its
    log. `--config device=auto` (a run option) runs it on the CPU; the black-box job is given the
    source model's metrics.json; switching `device` afterwards reruns nothing."""
    from lsqueeze.plan.build import build_plan

    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["device"] = "cuda"
    preset = tmp_path / "gpu.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    plan = build_plan(cfg)
    target, source, attack = sorted(plan.black)[0]
    model_dir = tmp_path / cell_dir(cfg, source)
    # targets before --configfile, which takes every following word
    proc = run_snakemake(tmp_path, f"{cell_dir(cfg, source)}/metrics.json",
                         "--configfile", preset, check=False)
    assert proc.returncode != 0 and not (model_dir / "model.pt").exists()
    # results/store/<dataset>/<recipe>/<tag> -> results/store/logs/train/<dataset>/<recipe>/<tag>.log
    store, rest = cell_dir(cfg, source).split("/", 2)[1:]
    log = (tmp_path / "results" / store / "logs/train" / f"{rest}.log").read_text()
    assert "no CUDA GPU is visible" in log and "`device: cuda`" in log and "Traceback" not in log

    black = f"{cell_dir(cfg, target)}/eval-n100/black/{source.split('/')[1]}/{attack}.json"
    run_snakemake(tmp_path, black, "--configfile", preset, "--config", "device=auto")
    rec = json.loads((tmp_path / black).read_text())
    assert rec["source_id"] == source and rec["kind"] == "black"
    for device in ("cpu", "auto"):
        dry = run_snakemake(tmp_path, black, "-n", "--configfile", preset, "--config",
                            f"device={device}")
        assert "Nothing to be done" in dry.stdout + dry.stderr


def test_the_command_snakemake_prints_reruns_the_job_by_hand(tiny_run, tiny_config, tmp_path):
    """`snakemake -p` shows a job's command without the variables the workflow exports: the
    command carries the preset's device and run options as defaults, so it runs as printed."""
    target = f"{cell_dir(tiny_config, 'digits28/ls0-sq0-gn0-k60-s0')}/model.pt"
    dry = run_snakemake(tiny_run, "-n", "-p", "--forcerun", target, configfile=tiny_config)
    (cmd,) = [line.split("Shell command: ", 1)[1] for line in dry.stdout.splitlines()
              if line.startswith("Shell command: ") and "lsqueeze train" in line]
    assert '--device "${LSQUEEZE_DEVICE:-auto}"' in cmd
    assert '"${LSQUEEZE_TRAIN_OPTIONS:-{\\"checkpoint_every\\": 50\\}}"' in cmd
    shutil.copytree(tiny_run / "results/data/digits28", tmp_path / "results/data/digits28")
    store, rest = target.removesuffix("/model.pt").split("/", 2)[1:]  # results/store/<ds>/<r>/<tag>
    log = tmp_path / "results" / store / "logs/train" / f"{rest}.log"
    log.parent.mkdir(parents=True)
    env = {k: v for k, v in ENV.items() if not k.startswith("LSQUEEZE_")}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    log = log.read_text()
    assert done.returncode == 0, log
    assert (tmp_path / target).exists() and "Traceback" not in log
