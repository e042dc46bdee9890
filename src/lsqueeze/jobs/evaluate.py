"""White-box evaluation, black-box crafting (once per source × attack) and transfer evaluation.

Every command writes one self-describing JSON fragment (cell, attack, n, accuracy, provenance,
and which test images survived: lsqueeze.plan.perexample), which the aggregation turns into the
long-form table and the worst case over attacks.
"""

from __future__ import annotations

import time

import torch

from lsqueeze.plan.perexample import pack, pack_members
from lsqueeze.registries.attack_kinds import kind_of
from lsqueeze.runtime.devices import pick_device
from lsqueeze.runtime.files import code_version, device_name, file_digest, load_torch, save_json, save_torch
from lsqueeze.runtime.integrity import tensor_digest, verify_adv_set
from lsqueeze.runtime.progress import Ticker
from lsqueeze.science import attacks
from lsqueeze.science.inputs import load_model, test_subset


def file_hash(path) -> str:
    """Short provenance hash of a model or adversarial set."""
    return file_digest(path)[:16]


def run_attack(model, x, y, spec: dict, batch_size: int, seed: int = 0, label: str = "attack",
               breakdown: bool = False):
    """Attack in batches; return (x_adv, robust mask) for the whole set, and with breakdown=True
    the runner's per-example breakdown over the whole set (None for a kind without one). Logs a
    line per batch (stderr: the job's log), since one batch of a strong attack can take minutes.

    With R random restarts, each forward carries batch_size // R images × R restarts, so memory
    stays that of one batch while the restarts share a forward pass. Random starts are fixed by
    (seed, restart, the example's position in x), so neither the batch size nor R changes them:
    the restart columns are nested (robust to R+1 restarts implies robust to the first R).
    A kind whose result depends on the grouping (AutoAttack) runs in its own fixed batch, so
    batch_size never changes a number.
    """
    batch_size = kind_of(spec).batch or batch_size
    n_restarts = attacks.restarts_of(spec)
    batched = n_restarts > 1
    if batched:
        batch_size = max(1, batch_size // n_restarts)
    advs, robust, parts = [], [], []
    ticker = Ticker(label, -(-len(y) // batch_size), unit="batch", every=0)
    for i in range(0, len(y), batch_size):
        j = min(i + batch_size, len(y))
        xa, r, part = attacks.attack(model, x[i:j], y[i:j], spec, seed=seed,
                                     index=torch.arange(i, j), batched_restarts=batched,
                                     breakdown=True)
        advs.append(xa)
        robust.append(r)
        parts.append(part)
        ticker.tick(len(robust), batch_size,
                    robust=f"{sum(int(b.sum()) for b in robust)}/{sum(len(b) for b in robust)}")
    x_adv, robust = torch.cat(advs), torch.cat(robust)
    if not breakdown:
        return x_adv, robust
    if any(p is None for p in parts):
        return x_adv, robust, None
    return x_adv, robust, {"members": parts[0]["members"],
                           "first_broken_by": torch.cat([p["first_broken_by"] for p in parts])}


def _record(kind, spec, attack, survived, t0, device, version, **extra):
    """The record of one evaluation: `survived` is the per-example correctness of test images
    0..n-1 (the evaluated set is always the first n). `version`: the checkout's commit when the
    job started, the code it imported (a commit made while a long attack ran is not it)."""
    n, correct = len(survived), int(survived.sum())
    return {"kind": kind, "cell_id": spec["id"], "cell": spec["cell"], "attack": attack,
            "n": n, "correct": correct, "accuracy": correct / max(n, 1),
            "per_example": pack(survived),
            "wall_time_s": time.perf_counter() - t0, "device": device_name(device),
            "code_version": version, **extra}


def white_box(spec, model_path, data_dir, attack: dict, out, n=None, batch_size=500, device="auto"):
    """Accuracy of one model under one attack computed on the model itself."""
    device = pick_device(device)
    t0, version = time.perf_counter(), code_version()
    x, y = test_subset(data_dir, n, device)
    model = load_model(spec, model_path, tuple(x.shape[1:]), device)
    # Clean correctness of the same images: the worst case counts an image only if the model
    # gets it right clean and under every attack.
    clean = attacks.predict(model, x, batch_size) == y
    _, robust, parts = run_attack(model, x, y, attack["pixel"], batch_size,
                                  seed=spec["cell"]["seed"], label=f"{spec['id']} {attack['id']}",
                                  breakdown=True)
    extra = {"members": pack_members(parts["first_broken_by"], parts["members"])} if parts else {}
    rec = _record("white", spec, attack, robust, t0, device, version, clean_per_example=pack(clean),
                  model_hash=file_hash(model_path), **extra)
    save_json(rec, out)
    return rec


def craft(spec, model_path, data_dir, attack: dict, out, n=None, batch_size=500, device="auto"):
    """Craft a black-box set on a source model and store it, with the source's hash."""
    device = pick_device(device)
    x, y = test_subset(data_dir, n, device)
    model = load_model(spec, model_path, tuple(x.shape[1:]), device)
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
    t0, version = time.perf_counter(), code_version()
    blob = load_torch(adv_set)
    verify_adv_set(blob, adv_set, source_metrics, attack_id=(attack or {}).get("id"))
    x, y = blob["x_adv"].to(device), blob["y"].to(device)
    model = load_model(spec, model_path, tuple(x.shape[1:]), device)
    survived = attacks.predict(model, x, batch_size) == y
    rec = _record("black", spec, attack or {"id": blob["attack_id"]}, survived, t0, device, version,
                  source_id=blob["source_id"], source_hash=blob["source_hash"],
                  adv_set_hash=file_hash(adv_set), model_hash=file_hash(model_path))
    save_json(rec, out)
    return rec
