"""Snakemake's view of DVC-restored outputs: `snapshot` after a run, `restore` after `dvc pull`.

Snakemake decides what to rerun from two things that `dvc pull` does not carry:
- file modification times: an output older than one of its inputs is stale. A pull writes files in
  arbitrary (parallel) order with fresh times, so checkpoints can come out "older" than their data
  and Snakemake would retrain them;
- its metadata in .snakemake/metadata: the params, input set and code each output was made with.
  Without it Snakemake cannot notice a changed rule parameter at all (missing metadata is only
  reported, never a reason to rerun), so a pulled workspace would silently keep stale results.

`snapshot` is the last command of the DVC stage, run before DVC caches the outs. It writes, inside
the preset's results directory (so it is cached, pushed and pulled together with the files it
describes), the modification time of every file of the stage's outs and Snakemake's metadata
record for each file that has one.

`restore` puts that state back in a clone: it writes the metadata records (absolute paths of the
original checkout re-anchored to this one) and gives the files new modification times in their
original order, ending just before now (after the git checkout, so git-tracked inputs such as
lsqueeze/data/paper_tables.csv stay older than what was made from them). It restores the state the
original workspace had when `snakemake` finished — no `--touch` that would bless whatever happens
to be on disk. It refuses while `dvc status` reports the stage changed (deps, params or outs differ
from dvc.lock), because then the pulled files are not the product of the workspace's inputs. Any
later edit — a cell's parameter, a rule's params, its code, its input set, an input file — is then
seen by Snakemake through the restored metadata and times exactly as in the original workspace.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from lsqueeze.plan.build import load_config
from lsqueeze.runtime.files import atomic_path

STATE_NAME = "snakemake-state.json"
FORMAT = 1
# Restored times are 1 ms apart: distinct on every common filesystem and in Snakemake's float
# mtimes, and a paper run's few thousand files still land within seconds before now.
STEP_NS = 1_000_000
# Record fields that may hold absolute paths of the checkout (e.g. an input under workflow.basedir);
# `input` and `params` are compared by Snakemake's rerun triggers, so they must match this clone.
_PATH_FIELDS = ("input", "log", "params", "shellcmd")


class RestoreError(RuntimeError):
    pass


def _persistence(root: Path):
    """Snakemake's own file-backed metadata store (the default backend): its encoding of keys."""
    from snakemake.persistence.file import FilePersistence

    return FilePersistence(nolock=True, path=root / ".snakemake")


def _files(root: Path, outs: list[str], exclude: Path) -> list[str]:
    found = set()
    for out in outs:
        base = root / out
        paths = [base] if base.is_file() else base.rglob("*")
        for p in paths:
            if p.is_file() and not p.is_symlink() and p.resolve() != exclude.resolve():
                found.add(p.relative_to(root).as_posix())
    return sorted(found)


def _covered(path: str, outs: list[str]) -> bool:
    p = Path(path)
    return any(p == Path(o) or Path(o) in p.parents for o in outs)


def state_path(config: dict, root: Path) -> Path:
    return root / config["results"].rstrip("/") / STATE_NAME


def snapshot(configfile, outs: list[str], root=".") -> Path:
    """Record mtimes + Snakemake metadata of every file under `outs` (the DVC stage's outs)."""
    import snakemake

    root = Path(root).resolve()
    config = load_config(configfile)  # strict: a duplicate key is an error, as in the workflow
    for key, default in (("results", None), ("data_dir", "results/data"),
                         ("store", "results/store")):
        path = config.get(key, default).rstrip("/")
        if not _covered(path, outs):
            # A directory outside the outs would be missing after a pull and be rebuilt from scratch.
            raise RestoreError(f"{configfile}: {key}={path!r} is not under the DVC outs {outs}")
    out = state_path(config, root)
    store = _persistence(root)
    files, records = {}, {}
    for rel in _files(root, outs, exclude=out):
        st = os.stat(root / rel)
        files[rel] = {"mtime_ns": st.st_mtime_ns, "size": st.st_size}
        rec = store._read_record(rel)
        if rec is not None and not rec.incomplete:
            records[rel] = rec.model_dump(mode="json")
    state = {"format": FORMAT, "root": str(root), "snakemake": snakemake.__version__,
             "outs": outs, "files": files, "records": records}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    return out


def _reanchor(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_reanchor(v, old, new) for v in value]
    if isinstance(value, dict):
        return {_reanchor(k, old, new): _reanchor(v, old, new) for k, v in value.items()}
    return value


def dvc_changes(root: Path, stage: str) -> dict:
    """`dvc status` of the stage: {} when deps, params and outs all match dvc.lock."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status(targets=[stage])


def restore(root=".", state_file=None, stage: str | None = "pipeline") -> dict:
    """Write back Snakemake's metadata and the outputs' time order recorded by `snapshot`."""
    from snakemake.persistence import MetadataRecord

    root = Path(root).resolve()
    if state_file is None:
        preset = yaml.safe_load((root / "params.yaml").read_text())["preset"]
        config = load_config(root / "params" / f"{preset}.yaml")
        state_file = state_path(config, root)
    state_file = Path(state_file)
    if not state_file.exists():
        raise RestoreError(f"{state_file} not found: run `dvc pull` first")
    if stage:
        changes = dvc_changes(root, stage)
        if changes:
            raise RestoreError(
                "dvc status: the workspace differs from dvc.lock, so the pulled outputs are not "
                f"what its inputs make; run `dvc pull` / `dvc repro` instead:\n"
                f"{json.dumps(changes, indent=1, default=str)}")
    state = json.loads(state_file.read_text())
    if state.get("format") != FORMAT:
        raise RestoreError(f"{state_file}: unknown format {state.get('format')!r}")

    # Only files that are present as recorded: a file that differs keeps its fresh time and loses
    # its record, so Snakemake treats it as changed rather than trusting a stale description.
    present = {rel: info for rel, info in state["files"].items()
               if (root / rel).is_file() and (root / rel).stat().st_size == info["size"]}
    old_root, new_root = state["root"].rstrip("/") + "/", str(root) + "/"
    store = _persistence(root)
    restored_records = 0
    for rel, rec in state["records"].items():
        if rel not in present:
            continue
        if old_root != new_root:
            rec = {k: _reanchor(v, old_root, new_root) if k in _PATH_FIELDS else v
                   for k, v in rec.items()}
            rec["input_checksums"] = _reanchor(rec.get("input_checksums") or {}, old_root, new_root)
        store._write_record(rel, MetadataRecord.model_validate(rec))
        store._unmark_incomplete(rel)
        restored_records += 1

    # Same order as the original run (ties stay ties), compressed to STEP_NS apart before now.
    ranks = {t: i for i, t in enumerate(sorted({info["mtime_ns"] for info in present.values()}))}
    now = time.time_ns()
    for rel, info in present.items():
        t = now - (len(ranks) - ranks[info["mtime_ns"]]) * STEP_NS
        os.utime(root / rel, ns=(t, t))
    return {"files": len(present), "records": restored_records,
            "skipped": sorted(set(state["files"]) - set(present))}
