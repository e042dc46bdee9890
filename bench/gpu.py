"""GPU readiness in one call (a lent device, < 8 minutes): throughput, MFU, projected paper hours.

    bash bench/gpu.sh            # on the device machine; writes $OUT/gpu.md and the BENCHMARKS.md section

Measures, on synthetic CIFAR-/MNIST-shaped batches (the device has no network), with the real
training step of lsqueeze.train (loss, optimizer, autocast):
- WRN-28-10 training images/s and MFU in bf16, eager vs channels_last vs torch.compile;
- Madry CNN training steps/s;
- PGD-20 images/s on WRN-28-10, eval mode: fp32 as evaluation runs it, bf16 as the training
  adversary runs it;
- projected single-GPU hours for each paper table from params/paper.yaml.
FLOPs come from torch.utils.flop_counter (forward + backward of one training step).

`--smoke` runs the same code on the CPU with a WRN-10-1, one iteration, no compile: the test
suite does, so a device session is never spent finding a bug in this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lsqueeze import attacks
from lsqueeze.config import RECIPES
from lsqueeze.models import build_model
from lsqueeze.train import make_optimizer, regularized_loss

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def step_fn(model, opt, recipe, channels_last: bool):
    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = regularized_loss(logits, y, 0.0, 10.0, recipe["ce_reduction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_steps(step, x, y, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step(x, y)
    sync(x.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(x, y)
    sync(x.device)
    return (time.perf_counter() - t0) / iters


def train_flops(model, recipe, x, y) -> int:
    opt = make_optimizer(model, recipe)
    with FlopCounterMode(display=False) as counter:
        step_fn(model, opt, recipe, False)(x, y)
    return counter.get_total_flops()


def wrn_recipe(arch=None) -> dict:
    """The CIFAR recipe, with a smaller WRN for the CPU smoke run."""
    return {**RECIPES["cifar10"], **({"arch": arch} if arch else {})}


def bench_wrn(dev, iters: int, compile_: bool, channels_last: bool, arch=None):
    recipe = wrn_recipe(arch)
    torch.manual_seed(0)
    model = build_model(recipe, (3, 32, 32)).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(recipe["batch_size"], 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (recipe["batch_size"],), device=dev)
    flops = train_flops(model, recipe, x, y)
    fwd = torch.compile(model) if compile_ else model
    opt = make_optimizer(model, recipe)
    sec = time_steps(step_fn(fwd, opt, recipe, channels_last), x, y, 15 if compile_ else 5, iters)
    return {"images_per_s": recipe["batch_size"] / sec, "step_s": sec, "flops_per_step": flops}


def bench_cnn(dev, iters: int):
    recipe = RECIPES["mnist"]
    model = build_model(recipe, (1, 28, 28)).to(dev)
    x = torch.rand(50, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (50,), device=dev)
    sec = time_steps(step_fn(model, make_optimizer(model, recipe), recipe, False), x, y, 20, iters)
    return {"steps_per_s": 1 / sec, "step_s": sec}


def bench_pgd(dev, n: int = 512, arch=None) -> dict:
    """PGD-20 as evaluation runs it (NHWC model, no autocast: evaluate.load_model) and as the
    training adversary runs it (bf16)."""
    model = build_model(wrn_recipe(arch), (3, 32, 32)).to(dev)
    model = model.to(memory_format=torch.channels_last).eval()
    x = torch.rand(n, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)
    out = {}
    for label, bf16 in (("eval_fp32", False), ("train_adversary_bf16", True)):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            attacks.pgd(model, x[:64], y[:64], 8 / 255, 2 / 255, 2)
            sync(dev)
            t0 = time.perf_counter()
            attacks.pgd(model, x, y, 8 / 255, 2 / 255, 20)
            sync(dev)
        out[label] = {"images_per_s": n / (time.perf_counter() - t0)}
    return out


def projection(step_s: dict) -> dict:
    """Single-GPU hours per paper table: Σ over its cells of steps × (1 + adversary steps) × step time."""
    from lsqueeze.config import build_plan, load_config

    plan = build_plan(load_config(Path(__file__).resolve().parents[1] / "params" / "paper.yaml"))
    hours = {}
    for table in plan.tables:
        total = 0.0
        for cid in {r["cell_id"] for r in table["rows"]}:
            cell = plan.cells[cid]
            per = step_s["cnn"] if cell["dataset"] == "mnist" else step_s["wrn"]
            factor = 1 + (cell["adv"]["steps"] if cell["method"] == "adv" else 0)
            total += cell["steps"] * factor * per
        hours[table["id"]] = total / 3600
    return hours


VARIANTS = (("eager", False, False), ("channels_last", False, True),
            ("compile+channels_last", True, True))
SMOKE_ARCH = {"name": "wrn", "depth": 10, "widen": 1}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--smoke", action="store_true", help="CPU, WRN-10-1, one iteration, no compile")
    args = ap.parse_args(argv)
    if args.smoke:
        dev, name, arch, iters, n_pgd = torch.device("cpu"), "cpu (smoke)", SMOKE_ARCH, 1, 16
        variants = VARIANTS[:2]
    elif not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device (or --smoke for a CPU check)")
    else:
        dev, arch, iters, n_pgd, variants = torch.device("cuda"), None, args.iters, 512, VARIANTS
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(dev)
    res = {"device": name, "torch": torch.__version__, "wrn": {}}
    for label, comp, cl in variants:
        r = bench_wrn(dev, iters, comp, cl, arch)
        p = peak(name)
        r["mfu"] = r["flops_per_step"] / r["step_s"] / p if p else None
        res["wrn"][label] = r
        print(label, json.dumps(r), flush=True)
    res["cnn"] = bench_cnn(dev, iters * 5)
    res["pgd20_wrn"] = bench_pgd(dev, n_pgd, arch)
    best = min(v["step_s"] for v in res["wrn"].values())
    try:
        res["projected_hours"] = projection({"wrn": best, "cnn": res["cnn"]["step_s"]})
    except FileNotFoundError:
        res["projected_hours"] = None
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
