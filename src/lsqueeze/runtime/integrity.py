"""Checks that a job reads what it thinks it reads, and runs where the preset says it should.

- A training checkpoint (state.pt) carries a key: the hash of the training spec (cell + recipe)
  and of the train stage's code. A checkpoint saved under another key is not resumed.
- A model (model.pt) is vouched for by the metrics.json its training job wrote beside it: the
  cell id and the file's sha256. Every reader checks both before using the weights, so a
  corrupted file, or a model copied in from another cell, is refused instead of evaluated.
- A black-box set records its source model's id and sha256 and a digest of its own tensors; a
  transfer checks them against the source model's metrics.json.
- A rebuilt dataset split goes into place only if it is the split recorded there (its sha256):
  the workflow reads splits as `ancient`, so a split that changed under finished models would go
  unnoticed by Snakemake.
- A GPU preset refuses to run on a CPU (`device: cuda`, the default) unless the preset says the
  CPU is fine (`device: auto` or `cpu`).

Every refusal is a JobError, which the CLI prints as one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from lsqueeze.runtime.files import (
    JobError,
    digest_path,
    file_digest,
    read_json,
    record_digest,
    recorded_digest,
    repair_hint,
)

DEVICE_POLICIES = ("cuda", "auto", "cpu")
DEFAULT_DEVICE_POLICY = "cuda"  # a preset that says nothing is a GPU preset


class IntegrityError(JobError):
    pass


class DeviceError(JobError):
    pass


def _json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_key(spec: dict, code: str) -> str:
    """What decides a checkpoint's numbers: the cell, the recipe and the training code. Run
    options (checkpoint interval, device, precision, ...) are left out: changing them between a
    kill and the rerun must still resume."""
    return _json_hash({"cell": spec["cell"], "recipe": spec["recipe"], "code": code})


def stale_reason(state: dict, key: str, device_type: str | None = None,
                 precision: str | None = None) -> str | None:
    """Why a loaded checkpoint must not be resumed (None: it may).

    device_type: where this run trains. A checkpoint saved on another kind of device is not
    resumed: its random stream (CUDA's Philox, the CPU's Mersenne Twister) cannot continue
    there, so the run would neither match an uninterrupted one nor load at all.
    precision: the precision this run trains in ("bf16"/"fp32", resolved on this machine). A
    checkpoint trained so far in the other one is not resumed either: the finished model would be
    neither, while its metrics.json names one (`auto` resolves per machine, so a rerun on another
    node of a cluster may differ)."""
    saved = state.get("key")
    if saved is None:
        return "it records no spec/code key (saved by an older version)"
    if saved != key:
        return (f"it was saved for another spec or code (key {saved[:12]}, this run "
                f"{key[:12]}: a recipe value, the architecture, the cell or the training code "
                "changed)")
    where = state.get("device_type")
    if device_type is not None and where is not None and where != device_type:
        return (f"it was saved on {where} and this run trains on {device_type} (the random "
                "stream of one cannot continue on the other)")
    trained = state.get("precision")
    if precision is not None and trained is not None and trained != precision:
        return (f"it was trained in {trained} and this run trains in {precision} (set "
                f"train.precision: {trained} to continue it)")
    return None


# --- models and their metrics.json ---------------------------------------------------------------

def metrics_beside(model_path) -> Path:
    return Path(model_path).with_name("metrics.json")


def model_record(model_path, cell_id) -> dict:
    """The keys a training job adds to metrics.json so that readers can check the model."""
    return {"id": cell_id, "model_sha256": file_digest(model_path)}


def _retrain(model_path) -> str:
    """The command that retrains a cell and reruns what was made from its model."""
    if Path(model_path).name != "model.pt":  # a black-box set whose source has no record
        return repair_hint(model_path)
    return (f"`snakemake --cores all --configfile <preset> --forcerun {model_path}` (deleting "
            "model.pt alone leaves Snakemake with nothing to do)")


def _read_metrics(path: Path, model_path) -> dict:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise IntegrityError(f"{model_path}: no metrics.json beside it, so nothing vouches for "
                             f"it; retrain the cell: {_retrain(model_path)}") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path}: unreadable ({exc}); retrain the cell: "
                             f"{_retrain(model_path)}") from None


def verify_model(model_path, cell_id: str) -> dict:
    """Check model.pt against the metrics.json beside it; return that metrics record.

    Refuses a model whose metrics.json names another cell (a model directory copied or moved), or
    whose bytes are not those its training job wrote (corrupted, or replaced by another file)."""
    model_path = Path(model_path)
    path = metrics_beside(model_path)
    metrics = _read_metrics(path, model_path)
    if metrics.get("id") != cell_id:
        raise IntegrityError(f"{model_path}: trained for cell {metrics.get('id')!r} according to "
                             f"{path}, not for {cell_id!r}; retrain the cell: {_retrain(model_path)}")
    expected = metrics.get("model_sha256")
    if not expected:
        raise IntegrityError(f"{model_path}: {path} records no model hash (written by an older "
                             f"version); retrain the cell: {_retrain(model_path)}")
    actual = file_digest(model_path)
    if actual != expected:
        raise IntegrityError(f"{model_path}: sha256 {actual[:16]} is not the {expected[:16]} its "
                             f"training recorded in {path} (corrupted or replaced); retrain the "
                             f"cell: {_retrain(model_path)}")
    return metrics


# --- black-box sets ------------------------------------------------------------------------------

def tensor_digest(*tensors) -> str:
    """sha256 over the tensors' bytes (CPU, contiguous): an adversarial set checks its own data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def verify_adv_set(blob: dict, adv_path, source_metrics_path=None, attack_id=None) -> None:
    """Check a black-box set's tensors against the digest crafted into it, that it was crafted
    with `attack_id` (when given: the column it is evaluated for) and, given the source model's
    metrics.json, that it was crafted on exactly that model."""
    if attack_id is not None and blob.get("attack_id") != attack_id:
        raise IntegrityError(f"{adv_path}: crafted with attack {blob.get('attack_id')!r}, not "
                             f"{attack_id!r} (a set moved or swapped); {repair_hint(adv_path)}")
    digest = blob.get("data_sha256")
    if digest is None:
        raise IntegrityError(f"{adv_path}: records no data digest (crafted by an older version); "
                             f"{repair_hint(adv_path)}")
    if tensor_digest(blob["x_adv"], blob["y"]) != digest:
        raise IntegrityError(f"{adv_path}: its images do not match the digest recorded when it was "
                             f"crafted (corrupted); {repair_hint(adv_path)}")
    if source_metrics_path is None:
        return
    source = _read_metrics(Path(source_metrics_path), adv_path)
    if blob.get("source_id") != source.get("id"):
        raise IntegrityError(f"{adv_path}: crafted on {blob.get('source_id')!r}, but the source "
                             f"model's {source_metrics_path} is {source.get('id')!r}; "
                             f"{repair_hint(adv_path)}")
    if blob.get("source_sha256") != source.get("model_sha256"):
        raise IntegrityError(f"{adv_path}: crafted on another version of {source.get('id')!r} "
                             f"than the model {source_metrics_path} describes (source sha256 "
                             f"{str(blob.get('source_sha256'))[:16]} vs "
                             f"{str(source.get('model_sha256'))[:16]}); {repair_hint(adv_path)}")


# --- dataset splits ------------------------------------------------------------------------------

def rebuild_splits(build, out_dir) -> dict:
    """Build a dataset's splits (`build(folder)` writes them there and returns {split: file}) in a
    folder beside `out_dir`, then move them in through install_splits."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = tempfile.mkdtemp(dir=out_dir, prefix=".rebuild-")
    try:
        return install_splits(build(stage), out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def install_splits(staged: dict, out_dir) -> dict:
    """Move freshly built splits ({split: staged file}) into `out_dir`, unless one differs from the
    split recorded there.

    The workflow reads a split as `ancient`: a split edited on disk must not make Snakemake
    rerun, and so delete, every model made from it. The other side of that is that a rebuild
    must give the recorded split back: one that differs (another converter, another source) is
    refused before anything is moved, instead of going silently under models trained on the old
    one. A recorded digest that still holds is left as it is."""
    out_dir = Path(out_dir)
    new = {s: file_digest(f) for s, f in staged.items()}
    for s, sha in new.items():
        path = out_dir / f"{s}.pt"
        old = recorded_digest(path)
        if old is not None and old != sha:
            raise IntegrityError(
                f"{path}: the rebuilt split differs from the one recorded in {digest_path(path).name}"
                f" (sha256 {sha[:16]} vs {old[:16]}), from which the models and evaluations of this "
                f"dataset were made; to replace it and rerun all of them, delete {out_dir} and rerun")
    paths = {}
    for s, sha in new.items():
        paths[s] = out_dir / f"{s}.pt"
        os.replace(staged[s], paths[s])
        if recorded_digest(paths[s]) != sha:
            record_digest(paths[s], sha)
    return paths


# --- the device a preset asks for ----------------------------------------------------------------

def no_gpu_message(policy: str) -> str:
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
    return (f"no CUDA GPU is visible (PyTorch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}{where}), and the preset says `device: {policy}`: this job "
            "would run on the CPU. Check the driver (nvidia-smi) and the job's GPU request, or "
            "set `device: auto` in the preset (or `--config device=auto`) to run on the CPU")
