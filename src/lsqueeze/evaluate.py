"""White-box evaluation, black-box crafting (once per source × attack) and transfer evaluation.

Every command writes one self-describing JSON fragment (cell, attack, n, accuracy, provenance),
which the aggregation turns into the long-form table.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lsqueeze import attacks
from lsqueeze.data import load_split, to_float
from lsqueeze.integrity import tensor_digest, verify_adv_set, verify_model
from lsqueeze.io import code_version, device_name, file_digest, load_torch, save_json, save_torch
from lsqueeze.models import build_model
from lsqueeze.progress import Ticker
from lsqueeze.train import pick_device


def file_hash(path) -> str:
    """Short provenance hash of a model or adversarial set."""
    return file_digest(path)[:16]


def test_subset(data_dir, n: int | None, device):
    """The first n test images (the whole split for n=None): the same subset for every model."""
    x, y = load_split(Path(data_dir) / "test.pt", device)
    if n:
        x, y = x[:n], y[:n]
    return to_float(x), y


def run_attack(model, x, y, spec: dict, batch_size: int, seed: int = 0, label: str = "attack"):
    """Attack in batches; return (x_adv, robust mask) for the whole set. Logs a line per batch
    (stderr: the job's log), since one batch of a strong attack can take minutes.

    With R random restarts, each forward carries batch_size // R images × R restarts, so memory
    stays that of one batch while the restarts share a forward pass. Random starts are fixed by
    (seed, restart, the example's position in x), so neither the batch size nor R changes them:
    the restart columns are nested (robust to R+1 restarts implies robust to the first R).
    """
    n_restarts = attacks.restarts_of(spec)
    batched = n_restarts > 1
    if batched:
        batch_size = max(1, batch_size // n_restarts)
    advs, robust = [], []
    ticker = Ticker(label, -(-len(y) // batch_size), unit="batch", every=0)
    for i in range(0, len(y), batch_size):
        j = min(i + batch_size, len(y))
        xa, r = attacks.attack(model, x[i:j], y[i:j], spec, seed=seed, index=torch.arange(i, j),
                               batched_restarts=batched)
        advs.append(xa)
        robust.append(r)
        ticker.tick(len(robust), batch_size,
                    robust=f"{sum(int(b.sum()) for b in robust)}/{sum(len(b) for b in robust)}")
    return torch.cat(advs), torch.cat(robust)


def _record(kind, spec, attack, n, correct, t0, device, **extra):
    return {"kind": kind, "cell_id": spec["id"], "cell": spec["cell"], "attack": attack,
            "n": n, "correct": correct, "accuracy": correct / max(n, 1),
            "wall_time_s": time.perf_counter() - t0, "device": device_name(device),
            "code_version": code_version(), **extra}


def load_model(spec: dict, model_path, image_shape, device="cpu"):
    """A trained model in eval mode, NHWC like in training: attacks run 1.2-1.3x faster on a CPU
    (only float rounding differs, as between any two convolution algorithms).

    The file must be the one the cell's training wrote (integrity.verify_model): a corrupted or
    swapped model.pt would otherwise be evaluated and reported as the cell's numbers."""
    verify_model(model_path, spec["id"])
    model = build_model(spec["recipe"], image_shape)
    model.load_state_dict(load_torch(model_path, map_location=device))
    return model.to(device).to(memory_format=torch.channels_last).eval()


def _model(spec, model_path, x, device):
    return load_model(spec, model_path, tuple(x.shape[1:]), device)


def white_box(spec, model_path, data_dir, attack: dict, out, n=None, batch_size=500, device="auto"):
    """Accuracy of one model under one attack computed on the model itself."""
    device = pick_device(device)
    t0 = time.perf_counter()
    x, y = test_subset(data_dir, n, device)
    model = _model(spec, model_path, x, device)
    _, robust = run_attack(model, x, y, attack["pixel"], batch_size, seed=spec["cell"]["seed"],
                           label=f"{spec['id']} {attack['id']}")
    rec = _record("white", spec, attack, len(y), int(robust.sum()), t0, device,
                  model_hash=file_hash(model_path))
    save_json(rec, out)
    return rec


def craft(spec, model_path, data_dir, attack: dict, out, n=None, batch_size=500, device="auto"):
    """Craft a black-box set on a source model and store it, with the source's hash."""
    device = pick_device(device)
    x, y = test_subset(data_dir, n, device)
    model = _model(spec, model_path, x, device)
    x_adv, robust = run_attack(model, x, y, attack["pixel"], batch_size, seed=spec["cell"]["seed"],
                               label=f"craft {spec['id']} {attack['id']}")
    # The source's full hash and a digest of the images: a transfer checks both (verify_adv_set).
    x_cpu, y_cpu = x_adv.cpu(), y.cpu()
    save_torch({"x_adv": x_cpu, "y": y_cpu, "source_id": spec["id"],
                "source_hash": file_hash(model_path), "source_sha256": file_digest(model_path),
                "data_sha256": tensor_digest(x_cpu, y_cpu), "attack_id": attack["id"],
                "source_accuracy": float(robust.float().mean())}, out)
    return x_adv


def transfer(spec, model_path, adv_set, out, batch_size=1000, source_id=None, attack=None,
             device="auto", source_metrics=None):
    """Accuracy of a target model on a stored black-box set (never recrafted).

    The set must be intact and, given the source model's metrics.json, crafted on that model."""
    device = pick_device(device)
    t0 = time.perf_counter()
    blob = load_torch(adv_set)
    verify_adv_set(blob, adv_set, source_metrics)
    x, y = blob["x_adv"].to(device), blob["y"].to(device)
    model = _model(spec, model_path, x, device)
    correct = int((attacks.predict(model, x, batch_size) == y).sum())
    rec = _record("black", spec, attack or {"id": blob["attack_id"]}, len(y), correct, t0, device,
                  source_id=blob["source_id"], source_hash=blob["source_hash"],
                  adv_set_hash=file_hash(adv_set), model_hash=file_hash(model_path))
    save_json(rec, out)
    return rec


def model_frame(spec, model_path, data_dir, out, compute, n=None, device="auto"):
    """Run `compute(model, x, y) -> DataFrame` on the first n test images; save it as Parquet."""
    from lsqueeze.io import save_parquet

    device = pick_device(device)
    x, y = test_subset(data_dir, n, device)
    frame = compute(_model(spec, model_path, x, device), x, y)
    frame.insert(0, "cell_id", spec["id"])
    save_parquet(frame, out)
    return frame
