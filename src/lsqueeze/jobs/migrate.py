"""Move a preset's models, black-box sets and evaluations from the per-preset layout of older
versions (results/<preset>/models, adv, eval) into the shared model store (README, "One model
store for every preset"): `python -m lsqueeze migrate params/<preset>.yaml`.

A file moves only where it is what the store's address says: a model whose metrics.json records
another recipe than the preset's (the preset was edited since) stays where it is, and so does
anything made from it. A file the store already holds is left in place (the store's copy wins).
Each file moves with its `.sha256` sidecar, so the readers' checks hold after the move. Moved
files carry no Snakemake metadata, so the next run judges them by time alone and reruns nothing
that is up to date.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsqueeze.plan.build import build_plan, subset_key
from lsqueeze.runtime.files import JobError, read_json

SIDECARS = ("", ".sha256")


def _move(old: Path, new: Path, done: dict) -> None:
    if not old.is_file():
        return
    if new.exists():
        done["kept"].append(str(old))
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SIDECARS:
        src = old.with_name(old.name + suffix)
        if src.is_file():
            os.replace(src, new.with_name(new.name + suffix))
    done["moved"].append(str(new))


def _model_files(old_dir: Path) -> list[str]:
    return sorted(p.name for p in old_dir.iterdir() if p.is_file() and not p.name.endswith(".sha256"))


def migrate(config: dict, root=".") -> dict:
    """Move what the preset's plan names; returns {moved, kept, skipped} lists of paths."""
    root = Path(root)
    plan = build_plan(config)
    res = root / config["results"].rstrip("/")
    store = root / config.get("store", "results/store").rstrip("/")
    part = subset_key(config.get("eval", {}).get("n_test"))
    evals, sets = f"eval-{part}", f"adv-{part}"
    done = {"moved": [], "kept": [], "skipped": []}
    usable = set()
    for cid in sorted(plan.cells):
        old_dir = res / "models" / cid
        if not (old_dir / "metrics.json").is_file():
            continue
        try:
            recorded = read_json(old_dir / "metrics.json")["spec"]
        except (JobError, KeyError) as exc:
            done["skipped"].append(f"{old_dir}: {exc}")
            continue
        if recorded != plan.train_spec(cid):
            done["skipped"].append(f"{old_dir}: trained under another recipe or cell than the "
                                   "preset's now; it stays, and the next run trains the cell")
            continue
        usable.add(cid)
        new_dir = store / plan.store_dir(cid)
        for name in _model_files(old_dir):
            _move(old_dir / name, new_dir / name, done)
    for cid, aid in sorted(plan.white):
        if cid in usable:
            _move(res / "eval" / cid / "white" / f"{aid}.json",
                  store / plan.store_dir(cid) / evals / "white" / f"{aid}.json", done)
    for target, source, aid in sorted(plan.black):
        if target in usable and source in usable:
            tag = source.split("/", 1)[1]
            _move(res / "adv" / source / f"{aid}.pt",
                  store / plan.store_dir(source) / sets / f"{aid}.pt", done)
            _move(res / "eval" / target / "black" / tag / f"{aid}.json",
                  store / plan.store_dir(target) / evals / "black" / tag / f"{aid}.json", done)
    return done
