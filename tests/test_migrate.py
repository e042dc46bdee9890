"""`lsqueeze migrate`: a run made before the shared model store (results/<preset>/models, adv,
eval) moves into it and the next run does nothing; models of another recipe stay behind."""

import shutil

import pytest
import yaml

from conftest import run_snakemake
from lsqueeze.cli import main
from lsqueeze.jobs.migrate import migrate
from lsqueeze.plan.build import build_plan

pytestmark = pytest.mark.slow


def _move(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".sha256"):
        if src.with_name(src.name + suffix).exists():
            src.with_name(src.name + suffix).rename(dst.with_name(dst.name + suffix))


def old_layout(work, cfg):
    """Put a finished run's store files where versions before the store kept them."""
    plan, res, store = build_plan(cfg), work / "results/tiny", work / "results/store"
    for cid, aid in plan.white:
        _move(store / plan.store_dir(cid) / "eval-n100/white" / f"{aid}.json",
              res / "eval" / cid / "white" / f"{aid}.json")
    for target, source, aid in plan.black:
        tag = source.split("/")[1]
        _move(store / plan.store_dir(target) / "eval-n100/black" / tag / f"{aid}.json",
              res / "eval" / target / "black" / tag / f"{aid}.json")
        if (store / plan.store_dir(source) / "adv-n100" / f"{aid}.pt").exists():
            _move(store / plan.store_dir(source) / "adv-n100" / f"{aid}.pt",
                  res / "adv" / source / f"{aid}.pt")
    for cid in plan.cells:
        for f in sorted((store / plan.store_dir(cid)).glob("*")):
            if f.is_file() and not f.name.endswith(".sha256"):
                _move(f, res / "models" / cid / f.name)
    shutil.rmtree(store)
    shutil.rmtree(work / ".snakemake")  # an old run's metadata names the old paths


def test_migrate_moves_an_old_run_into_the_store(tiny_run, tiny_config, tmp_path, capsys):
    work = tmp_path / "old"
    shutil.copytree(tiny_run, work, symlinks=True)
    cfg = yaml.safe_load(tiny_config.read_text())
    old_layout(work, cfg)
    n_models = len(list((work / "results/tiny/models").glob("*/*/model.pt")))
    assert n_models == len(build_plan(cfg).cells)

    # Under an edited recipe nothing is what the store's address would claim: nothing moves.
    edited = migrate({**cfg, "recipes": {"digits28": {"lr": 0.5}}}, root=work)
    assert edited["moved"] == [] and len(edited["skipped"]) == n_models
    assert all("another recipe" in s for s in edited["skipped"])

    assert main(["migrate", str(tiny_config), "--root", str(work)]) in (0, None)
    plan, store = build_plan(cfg), work / "results/store"
    assert len(list(store.glob("*/*/*/model.pt"))) == n_models
    assert len(list(store.glob("*/*/*/eval-n100/**/*.json"))) == len(plan.white) + len(plan.black)
    assert "files moved into the model store" in capsys.readouterr().out
    assert not list((work / "results/tiny/models").glob("*/*/model.pt"))
    dry = run_snakemake(work, "-n", configfile=tiny_config)
    assert "Nothing to be done" in dry.stdout, dry.stdout[-3000:]
    assert migrate(cfg, root=work) == {"moved": [], "kept": [], "skipped": []}  # once is enough
