"""What a change to a finished run reruns: nothing unless a number could change.

Settings that only trade memory or speed (the evaluation batch, the device) must rerun no job;
a kind whose result depends on how images are grouped (the reference AutoAttack draws its random
state per call) runs in its own fixed batch, so the evaluation batch cannot change its number.
"""

import shutil

import torch
import yaml

from conftest import run_snakemake
from lsqueeze.jobs import evaluate
from lsqueeze.registries.attack_kinds import AUTOATTACK_BATCH, kind_of


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
