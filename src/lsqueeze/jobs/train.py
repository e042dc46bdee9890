"""One training run per cell: natural, label smoothing (α), logit squeezing (β), Gaussian noise (σ),
or Madry PGD adversarial training, from the dataset's Madry recipe.

The dataset sits on the device as uint8 and is augmented there; every random draw comes from one
seeded generator whose state is checkpointed, so a killed run resumes to the same weights.
"""

from __future__ import annotations

import math
import platform
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lsqueeze.runtime.devices import eval_mode, pick_device
from lsqueeze.runtime.files import code_version, device_name, load_torch, lock_digest, save_json, save_torch
from lsqueeze.runtime.fingerprint import fingerprint
from lsqueeze.runtime.integrity import checkpoint_key, model_record, stale_reason
from lsqueeze.runtime.progress import DEFAULT_EVERY_S, Ticker
from lsqueeze.science.cuda_graph import graphed_step
from lsqueeze.science.models import build_model
from lsqueeze.science.splits import load_split, to_float
from lsqueeze.science.step import step_loss

TRAIN_DEFAULTS = {"checkpoint_every": 1000, "compile": False, "cuda_graphs": False, "device": "auto",
                  "eval_batch": 1000, "precision": "auto", "sync_every": 50}


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls/convolutions run in hardware: a CUDA GPU from Ampere on (compute capability 8),
    or a CPU with bf16 instructions (x86: AVX512-BF16 or AMX). Elsewhere bf16 is emulated and
    slower than fp32: oneDNN reports bf16 "supported" on any AVX-512 CPU, where a Madry CNN step
    ran 2.4x slower in bf16 than in fp32 (BENCHMARKS.md, "Precision on the CPU")."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is None or not probe():
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return True  # aarch64: oneDNN reports bf16 only where the CPU has the BF16 extension


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The training step's precision, a run option as on any mixed-precision trainer: "auto" is
    bf16 where the hardware has it, else fp32. Under bf16 the model computes in bf16, the loss in
    fp32, and the weights and optimizer state stay fp32.

    Evaluation attacks and analysis never use it: they run in fp32 so a reported robust accuracy
    is not an artefact of rounded gradients."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"train.precision: unknown {precision!r} (known: auto, bf16, fp32)")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def train_autocast(device: torch.device, precision: str = "auto"):
    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Batches:
    """Epoch-wise shuffled mini-batches, sampled without replacement, resumable from its state."""

    def __init__(self, n: int, batch_size: int, generator):
        self.n, self.bs, self.g = n, batch_size, generator
        self.perm, self.ptr = None, n

    def next(self):
        if self.ptr + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.g, device=self.g.device)
            self.ptr = 0
        idx = self.perm[self.ptr:self.ptr + self.bs]
        self.ptr += self.bs
        return idx

    def state(self):
        return {"perm": self.perm, "ptr": self.ptr}

    def load(self, s):
        self.perm, self.ptr = s["perm"], s["ptr"]


def adv_spec(cell: dict, pixel_scale: float) -> dict | None:
    """The adversarial-training attack of a cell in [0,1] pixel units (None: no adversary)."""
    if cell["method"] != "adv":
        return None
    adv = {k: cell["adv"][k] for k in ("steps", "loss", "random_start")}
    adv.update(eps=cell["adv"]["eps"] / pixel_scale, step_size=cell["adv"]["step_size"] / pixel_scale)
    return adv


def make_optimizer(model, recipe):
    decay = [p for p in model.parameters() if p.ndim > 1]  # Madry decays weights, not biases/BN
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.get("weight_decay", 0.0)},
              {"params": rest, "weight_decay": 0.0}]
    if recipe["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=recipe["lr"])
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe.get("momentum", 0.9))
    raise ValueError(f"recipe optimizer: unknown {recipe['optimizer']!r} (known: adam, sgd)")


def make_scheduler(opt, recipe, steps: int):
    milestones = [int(round(f * steps)) for f in recipe.get("lr_boundaries", [])]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


@torch.no_grad()
def clean_stats(model, x_u8, y, batch_size=1000):
    """Clean accuracy and mean per-example logit norm (eval mode)."""
    correct, norm = 0, 0.0
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            z = model(to_float(x_u8[i:i + batch_size])).float()
            correct += (z.argmax(1) == y[i:i + batch_size]).sum().item()
            norm += torch.linalg.vector_norm(z, dim=1).nan_to_num(float("inf")).sum().item()
    return correct / len(y), norm / len(y)


class _Stop:
    """SIGTERM/SIGINT (SLURM preemption, scancel) -> checkpoint, then exit."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, *_):
        self.requested = True


def _resumable(state_path: Path, key: str, device, precision: str | None = None):
    """The checkpoint to resume from, or None: none there, unreadable, or saved for another spec,
    code, kind of device or precision. A stale one is left in place (the next checkpoint replaces
    it) and the log says why it was not used: resuming it would bring back the old optimizer
    state and weights."""
    if not state_path.exists():
        return None
    try:
        st = load_torch(state_path, map_location=device)
    except RuntimeError as exc:
        reason = f"it cannot be read ({exc})"
    else:
        reason = stale_reason(st, key, torch.device(device).type, precision)
        if reason is None:
            return st
    print(f"lsqueeze: not resuming from {state_path}: {reason}; training from step 0",
          file=sys.stderr, flush=True)
    return None


def train(spec: dict, data_dir, out_dir, progress: bool = True, options: dict | None = None,
          log_every: float | None = DEFAULT_EVERY_S, device_policy: str = "auto") -> dict:
    """Train one cell; write model.pt and metrics.json into out_dir (state.pt while running).

    `options` (checkpoint_every, device, compile, cuda_graphs, eval_batch, precision,
    sync_every) say how to run, not what to compute; `device_policy` is the preset's `device`
    (pick_device). Without the bar (`progress=False`: a log file) a line with step, images/s,
    loss and ETA goes to stderr every `log_every` seconds.
    """
    cell, recipe = spec["cell"], spec["recipe"]
    opts = {**TRAIN_DEFAULTS, **spec.get("train", {}), **(options or {})}
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    device = pick_device(opts["device"], device_policy)
    steps, bs, scale = cell["steps"], recipe["batch_size"], recipe["pixel_scale"]

    x_tr, y_tr = load_split(data_dir / "train.pt", device)
    x_te, y_te = load_split(data_dir / "test.pt", device)
    torch.manual_seed(cell["seed"])
    # NHWC is the layout cuDNN and oneDNN convolutions run fastest in (15% on a 2-core CPU too).
    model = build_model(recipe, x_tr.shape[1:]).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe, steps)
    gen = torch.Generator(device=device).manual_seed(cell["seed"])
    batches = Batches(len(y_tr), bs, gen)
    step, wall_before, loss_value, diverged = 0, 0.0, float("nan"), False

    # What computed this model, taken now: the checkout may move on while a long run trains.
    provenance = {"code_version": code_version(), "environment_lock": lock_digest(),
                  "torch": torch.__version__}
    precision = resolve_precision(device, opts["precision"])
    state_path = out_dir / "state.pt"
    key = checkpoint_key(spec, fingerprint("jobs.train"))
    st = _resumable(state_path, key, device, precision)
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"].cpu() if device.type == "cpu" else st["generator"])
        batches.load(st["batches"])
        step, wall_before, loss_value = st["step"], st["wall"], st["loss"]
    resumed_from = step

    def checkpoint():
        save_torch({"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "generator": gen.get_state(),
                    "batches": batches.state(), "step": step, "loss": loss_value,
                    "device_type": device.type, "precision": precision,
                    "wall": wall_before + time.perf_counter() - t0}, state_path)

    fwd = torch.compile(model) if opts["compile"] else model
    adv = adv_spec(cell, scale)
    autocast = train_autocast(device, precision)
    stop = _Stop()
    # Reading the loss on the host stalls a GPU pipeline; check for NaN/inf every sync_every steps
    # there (a diverged GPU run may take up to that many non-finite updates before it stops).
    sync_every = 1 if device.type == "cpu" else opts["sync_every"]
    finite = None
    t0 = time.perf_counter()
    start_step = step
    bar = tqdm(total=steps, initial=step, disable=not progress, unit="step", mininterval=2,
               desc=spec.get("id", "train"), dynamic_ncols=True)
    ticker = Ticker(spec.get("id", "train"), steps, step, None if progress else log_every)
    model.train()
    graphed = graphed_step(opts, device, model, fwd, opt, cell, recipe, adv, gen, x_tr, y_tr,
                           precision)  # None: every step runs the body below
    while step < steps:
        if graphed is not None and graphed.quiet(step + 1, steps, stop.requested):
            finite = graphed(batches.next(), finite)  # the body below, one CUDA graph replay
            sched.step()
            step += 1
            bar.update(1)
            continue
        idx = batches.next()
        y = y_tr[idx]
        loss = step_loss(fwd, x_tr[idx], y, cell, recipe, adv, gen, autocast)
        finite = torch.isfinite(loss) if finite is None else finite & torch.isfinite(loss)
        if device.type == "cpu" and not finite:  # on a CPU the check is free: stop before the update
            diverged, loss_value = True, float(loss.detach())
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        due = stop.requested or step == steps or step % opts["checkpoint_every"] == 0
        if due or step % sync_every == 0:  # a host sync: on a GPU, every sync_every steps only
            loss_value = float(loss.detach())
            if not finite:  # the paper has such cells: record the divergence, don't crash
                diverged = True
                break
            finite = None
        if progress and step % 50 == 0:
            rate = (step - start_step) * bs / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.3g}", img_s=f"{rate:.0f}")
        ticker.tick(step, bs, loss=loss_value)
        if stop.requested or (step % opts["checkpoint_every"] == 0 and step < steps):
            checkpoint()
            if stop.requested:
                bar.close()
                raise SystemExit(f"stopped by signal at step {step}; state saved to {state_path}")
    bar.close()
    wall = wall_before + time.perf_counter() - t0
    train_acc, _ = clean_stats(model, x_tr, y_tr, opts["eval_batch"])
    test_acc, logit_norm = clean_stats(model, x_te, y_te, opts["eval_batch"])
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(weights, out_dir / "model.pt")
    metrics = {
        **model_record(out_dir / "model.pt", spec.get("id")),  # readers check the model by these
        "train_accuracy": train_acc, "test_accuracy": test_acc,
        "final_loss": loss_value if math.isfinite(loss_value) else str(loss_value),
        "mean_logit_norm": logit_norm, "steps_done": step, "steps": steps,
        "resumed_from": resumed_from, "n_train": len(y_tr), "n_test": len(y_te),
        "wall_time_s": wall, "images_per_s": step * bs / max(wall, 1e-9),
        "device": device_name(device), "precision": precision, "diverged": diverged, "spec": spec,
        **provenance,
    }
    save_json(metrics, out_dir / "metrics.json")
    state_path.unlink(missing_ok=True)
    return metrics
