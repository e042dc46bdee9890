"""GPU benchmark in one offline call (< 8 minutes on an H100): `bash bench/gpu.sh OUT_DIR`.

Sections, in order of importance, each written to OUT_DIR/gpu.json and OUT_DIR/gpu.md as soon as
it is done (a run cut off by its time limit still leaves what it finished):

1. mnist — the pipeline's MNIST training as it runs: real `python -m lsqueeze train` processes on
   one GPU (real MNIST if --mnist-raw points at the four .gz files, else a synthetic MNIST-shaped
   set). Baseline: one process, plain loop (`cuda_graphs: false`). Then the same cell with the
   CUDA-graph step, and k graph-step jobs sharing the GPU (LSQUEEZE_JOBS_PER_GPU=k, through the
   pinning layer): aggregate steps/s vs the baseline. The baseline and the graph run train the
   same seed: their test accuracy and largest weight difference are reported.
2. wrn — one training step of the CIFAR recipe (SGD, loss, autocast as lsqueeze.jobs.train runs it)
   on WRN-28-10 and on Madry's w28-10 where the package has it, bf16 and fp32 (TF32 convolutions,
   PyTorch's default), NCHW eager / channels_last / channels_last + CUDA graph; images/s and MFU
   (FLOPs from torch.utils.flop_counter, dense tensor-core peak of the GPU).
3. pgd — PGD on the same models as evaluation runs it (eval mode, NHWC, fp32) and as the training
   adversary runs it (bf16), in images×steps/s, against the training step's images/s; warmed up
   at the timed batch size, so cuDNN's autotuning is outside the timing.
4. compile — torch.compile + channels_last, bf16, WRN-28-10 (last: compiling takes a minute).

Every number is measured in this one run on one GPU. `--smoke` runs the same code on the CPU at
toy size (WRN-10-1, a few steps, two MNIST jobs of 20 steps): the test suite does, so a GPU run
is never spent on a bug in this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lsqueeze.jobs.train import make_optimizer
from lsqueeze.plan import build as C
from lsqueeze.science import attacks
from lsqueeze.science.models import build_model
from lsqueeze.science.step import regularized_loss

REPO = Path(__file__).resolve().parents[1]
# Dense (no sparsity) tensor-core peaks, FLOP/s: bf16, and TF32 for fp32 convolutions.
PEAK = {"H100": {"bf16": 989e12, "fp32": 494.7e12}, "H200": {"bf16": 989e12, "fp32": 494.7e12},
        "A100": {"bf16": 312e12, "fp32": 156e12}, "L40S": {"bf16": 362e12, "fp32": 183e12}}


def peak(name: str, precision: str) -> float | None:
    return next((v[precision] for k, v in PEAK.items() if k in name), None)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Report:
    """gpu.json + gpu.md in the output directory, rewritten (atomically) after every section."""

    def __init__(self, out_dir: Path, header: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.res = dict(header)

    def add(self, section: str, value) -> None:
        self.res[section] = value
        latest = value[-1] if isinstance(value, list) else value.get("runs", [value])[-1]
        print(f"[{section}] {json.dumps(latest)}", flush=True)
        for name, text in (("gpu.json", json.dumps(self.res, indent=1)),
                           ("gpu.md", markdown(self.res))):
            tmp = self.dir / f".{name}.tmp"
            tmp.write_text(text + "\n")
            tmp.replace(self.dir / name)


# ---------------------------------------------------------------- WRN training step
def wrn_archs(smoke: bool) -> dict:
    """The standard WRN-28-10 and, where models.py has it, Madry's w28-10 (toy sizes in smoke)."""
    archs = {"wrn-28-10": {"name": "wrn", "depth": 10 if smoke else 28, "widen": 1 if smoke else 10}}
    madry = getattr(C, "MADRY_WRN", None)
    if madry is not None:
        arch = {**madry, **({"units": 1, "widen": 1} if smoke else {})}
        try:
            build_model({**C.RECIPES["cifar10"], "arch": arch}, (3, 32, 32))
            archs["madry-w28-10"] = arch
        except ValueError:
            pass
    return archs


def train_step(model, opt, recipe, precision: str, channels_last: bool):
    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                            cache_enabled=False):
            logits = model(x)
        loss = regularized_loss(logits, y, {"beta": 10.0}, recipe["ce_reduction"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # grads stay allocated: a graph replays into them
        return loss
    return step


def graphed(step, x, y):
    """The step as one CUDA graph (warm-up on a side stream, then capture); returns replay()."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(x, y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(x, y)
    return lambda *_: graph.replay()


def time_calls(fn, args, warmup: int, iters: int, dev) -> float:
    for _ in range(warmup):
        fn(*args)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(*args)
    sync(dev)
    return (time.perf_counter() - t0) / iters


def flops_per_step(model, recipe, x, y) -> int:
    opt = make_optimizer(model, recipe)
    with FlopCounterMode(display=False) as counter:
        train_step(model, opt, recipe, "fp32", False)(x, y)
    opt.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_wrn(dev, name, arch, precision, variant, iters, batch) -> dict:
    recipe = {**C.RECIPES["cifar10"], "arch": arch}
    torch.manual_seed(0)
    model = build_model(recipe, (3, 32, 32)).to(dev)
    cl = variant != "eager"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    flops = flops_per_step(model, recipe, x, y)
    fwd = torch.compile(model) if variant == "compile+channels_last" else model
    step = train_step(fwd, make_optimizer(model, recipe), recipe, precision, cl)
    if variant == "channels_last+cuda_graph":
        step = graphed(step, x, y)
    warmup = 15 if variant.startswith("compile") else 5  # at the timed batch: autotune outside
    sec = time_calls(step, (x, y), warmup, iters, dev)
    p = peak(torch.cuda.get_device_name(dev) if dev.type == "cuda" else "", precision)
    return {"arch": name, "precision": precision, "variant": variant, "batch": batch,
            "images_per_s": batch / sec, "step_ms": sec * 1e3, "flops_per_step": flops,
            "mfu": flops / sec / p if p else None}


# ---------------------------------------------------------------- PGD
def bench_pgd(dev, name, arch, n, steps) -> list[dict]:
    recipe = {**C.RECIPES["cifar10"], "arch": arch}
    model = build_model(recipe, (3, 32, 32)).to(dev).to(memory_format=torch.channels_last).eval()
    x = torch.rand(n, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)
    out = []
    for label, precision in (("eval fp32", "fp32"), ("train adversary bf16", "bf16")):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            attacks.pgd(model, x, y, 8 / 255, 2 / 255, 2)  # same batch size: autotune done here
            sync(dev)
            t0 = time.perf_counter()
            attacks.pgd(model, x, y, 8 / 255, 2 / 255, steps)
            sync(dev)
        sec = time.perf_counter() - t0
        out.append({"arch": name, "as": label, "precision": precision, "images": n,
                    "steps": steps, "image_steps_per_s": n * steps / sec})
    return out


# ---------------------------------------------------------------- MNIST: real train processes
def mnist_data(out: Path, raw: str | None, smoke: bool) -> str:
    if raw:
        import shutil

        from lsqueeze.jobs.data import prepare

        copy = out / "raw"  # decompressed files go here, not into the carried folder
        copy.mkdir()
        for gz in Path(raw).glob("*.gz"):
            shutil.copy(gz, copy / gz.name)
        prepare("mnist", out, raw_dir=copy)
        return "real MNIST"
    g = torch.Generator().manual_seed(0)
    n_train, n_test = (500, 100) if smoke else (60_000, 10_000)
    for split, n in (("train", n_train), ("test", n_test)):
        torch.save({"x": torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                    "y": torch.randint(0, 10, (n,), generator=g)}, out / f"{split}.pt")
    return "synthetic MNIST-shaped data (accuracies are chance)"


def train_jobs(data: Path, work: Path, tag: str, k: int, steps: int, graphs: bool,
               timeout: float) -> dict:
    """k concurrent `lsqueeze train` processes (different seeds), as Snakemake would start them."""
    path = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "LSQUEEZE_JOBS_PER_GPU": str(k),
           "LSQUEEZE_GPU_LOCK_DIR": str(work / f"locks-{tag}"), "OMP_NUM_THREADS": "1"}
    procs, outs = [], []
    t0 = time.perf_counter()
    for seed in range(k):
        cell = C.resolve_cell({}, {"dataset": "mnist", "alpha": 0.2, "sigma": 0.3,
                                   "steps": steps, "seed": seed})
        spec = {"id": C.cell_id(cell), "cell": cell, "recipe": C.RECIPES["mnist"]}
        out = work / tag / str(seed)
        opts = {"cuda_graphs": graphs, "checkpoint_every": 10 * steps}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lsqueeze", "train", "--spec", json.dumps(spec),
             "--data-dir", str(data), "--out-dir", str(out), "--no-progress",
             "--options", json.dumps(opts)], env=env, stdout=subprocess.DEVNULL,
            stderr=open(work / f"{tag}-{seed}.log", "w")))
        outs.append(out)
    for p in procs:
        try:
            p.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
    wall = time.perf_counter() - t0
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs
               if (o / "metrics.json").exists()]
    if len(metrics) < k:
        raise RuntimeError(f"{tag}: {k - len(metrics)} of {k} jobs did not finish "
                           f"(logs in {work})")
    loop_rates = [m["steps_done"] / m["wall_time_s"] for m in metrics]
    return {"jobs": k, "cuda_graphs": graphs, "steps_per_job": steps, "wall_s": wall,
            "steps_per_s_per_job": [round(r, 1) for r in loop_rates],
            "aggregate_steps_per_s": sum(loop_rates),
            "aggregate_incl_startup": k * steps / wall,
            "test_accuracy": [m["test_accuracy"] for m in metrics], "out": [str(o) for o in outs]}


def bench_mnist(report: Report, dev, raw, smoke: bool, ks, base_steps: int, budget_s: float):
    work = Path(tempfile.mkdtemp(prefix="lsqueeze-gpu-mnist-"))
    data = work / "data"
    data.mkdir()
    what = mnist_data(data, raw, smoke)
    res = {"data": what, "runs": []}
    base = train_jobs(data, work, "plain-1", 1, base_steps, False, budget_s)
    res["runs"].append(base)
    report.add("mnist", res)
    one = train_jobs(data, work, "graphs-1", 1, base_steps, True, budget_s)
    res["runs"].append(one)
    w0 = torch.load(Path(base["out"][0]) / "model.pt", weights_only=True)
    w1 = torch.load(Path(one["out"][0]) / "model.pt", weights_only=True)
    res["same_seed"] = {"steps": base_steps,
                        "test_accuracy_plain": base["test_accuracy"][0],
                        "test_accuracy_graphs": one["test_accuracy"][0],
                        "max_abs_weight_diff": max(float((w0[k].float() - w1[k].float()).abs().max())
                                                   for k in w0)}
    report.add("mnist", res)
    rate1 = one["aggregate_steps_per_s"]
    for k in ks:  # steps per job: each run about budget/6 at the 1-job rate
        steps = base_steps if smoke else int(min(max(rate1 * budget_s / 6, 2_000), 200_000))
        res["runs"].append(train_jobs(data, work, f"graphs-{k}", k, steps, True, budget_s))
        report.add("mnist", res)
    base_rate = base["aggregate_steps_per_s"]
    res["speedup_vs_one_plain_process"] = {
        f"{r['jobs']} job(s), cuda_graphs={r['cuda_graphs']}": r["aggregate_steps_per_s"] / base_rate
        for r in res["runs"]}
    report.add("mnist", res)


# ---------------------------------------------------------------- Markdown
def markdown(res: dict) -> str:
    lines = [f"GPU: {res.get('device')}, torch {res.get('torch')}, {res.get('date')}, "
             f"commit {res.get('commit')}", ""]
    m = res.get("mnist")
    if m:
        lines += [f"**MNIST training, real `lsqueeze train` processes on one GPU** ({m['data']})", "",
                  "| jobs on the GPU | step | steps/job | steps/s per job | aggregate steps/s "
                  "| × one plain process | a 400k-step cell at this per-job rate |",
                  "|---|---|---|---|---|---|---|"]
        base = m["runs"][0]["aggregate_steps_per_s"]
        for r in m["runs"]:
            per_job = ", ".join(f"{v:.0f}" for v in r["steps_per_s_per_job"])
            lines.append(f"| {r['jobs']} | {'CUDA graph' if r['cuda_graphs'] else 'plain loop'} | "
                         f"{r['steps_per_job']} | {per_job} | "
                         f"{r['aggregate_steps_per_s']:.0f} | {r['aggregate_steps_per_s'] / base:.2f}× | "
                         f"{400_000 / min(r['steps_per_s_per_job']) / 60:.0f} min |")
        if "same_seed" in m:
            s = m["same_seed"]
            lines += ["", f"Same seed, {s['steps']} steps: test accuracy {s['test_accuracy_plain']:.4f} "
                      f"(plain) vs {s['test_accuracy_graphs']:.4f} (CUDA graph); largest weight "
                      f"difference {s['max_abs_weight_diff']:.3g}.", ""]
    for key in ("mnist_error", "pgd_error"):
        if res.get(key):
            lines += [f"**{key.split('_')[0]} failed:** {res[key]['error']}", ""]
    rows = res.get("wrn", []) + res.get("compile", [])
    if rows:
        batch = next((r["batch"] for r in rows if "batch" in r), "?")
        lines += [f"**WRN training step, batch {batch}** (SGD step, loss and autocast of "
                  "lsqueeze.jobs.train; MFU against the dense bf16 / TF32 peak)", "",
                  "| model | precision | variant | images/s | ms/step | MFU |", "|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['precision']} | {r['variant']} | "
                             f"failed: {r['error'][:80]} | | |")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
            lines.append(f"| {r['arch']} | {r['precision']} | {r['variant']} | "
                         f"{r['images_per_s']:,.0f} | {r['step_ms']:.2f} | {mfu} |")
        lines.append("")
    if res.get("pgd"):
        lines += ["**PGD vs the training step** (images×steps/s; ratio = training images/s ÷ PGD "
                  "images×steps/s, same model and precision, channels_last; goal ≤ 1.5)", "",
                  "| model | PGD as | images × steps/s | training images/s | ratio |",
                  "|---|---|---|---|---|"]
        for r in res["pgd"]:
            tr = next((w["images_per_s"] for w in res.get("wrn", []) if w.get("arch") == r["arch"]
                       and w["precision"] == r["precision"] and w["variant"] == "channels_last"),
                      None)
            ratio = f"{tr / r['image_steps_per_s']:.2f}" if tr else "n/a"
            lines.append(f"| {r['arch']} | {r['as']} | {r['image_steps_per_s']:,.0f} | "
                         f"{tr:,.0f} | {ratio} |" if tr else
                         f"| {r['arch']} | {r['as']} | {r['image_steps_per_s']:,.0f} | n/a | n/a |")
    return "\n".join(lines)


def safely(fn, *args, **what):
    """One measurement; an error (a capture that fails, a job that times out) is recorded in its
    row and the run goes on to the next one."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - a one-shot GPU run must keep its other sections
        print(f"error in {what}: {exc!r}", file=sys.stderr, flush=True)
        return {**what, "error": f"{type(exc).__name__}: {exc}"[:500]}


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="bench/out")
    ap.add_argument("--iters", type=int, default=20, help="timed WRN steps per variant")
    ap.add_argument("--mnist-raw", help="directory with MNIST's four .gz files (else synthetic)")
    ap.add_argument("--mnist-steps", type=int, default=4000, help="steps of the 1-job runs")
    ap.add_argument("--jobs", default="2,4,8", help="jobs per GPU to try with the graph step")
    ap.add_argument("--budget", type=float, default=120, help="seconds per MNIST run (limit)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes, no compile")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.smoke:
        dev, name, batch, iters, n_pgd = torch.device("cpu"), "cpu (smoke)", 8, 1, 8
        args.mnist_steps, ks, skip = 20, [2], skip | {"compile"}
        args.budget = max(args.budget, 600)  # a busy CPU starts processes slowly
    elif not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device (or --smoke for a CPU check)")
    else:
        dev, batch, iters, n_pgd = torch.device("cuda"), 128, args.iters, 512
        ks = [int(k) for k in args.jobs.split(",")]
        torch.backends.cudnn.benchmark = True  # as cuDNN autotunes in any long run
        name = torch.cuda.get_device_name(dev)
    report = Report(args.out_dir, {"device": name, "torch": torch.__version__, "commit": commit(),
                                   "date": time.strftime("%Y-%m-%d")})
    if "mnist" not in skip:
        failed = safely(bench_mnist, report, dev, args.mnist_raw, args.smoke, ks, args.mnist_steps,
                        args.budget, section="mnist")
        if failed:
            report.add("mnist_error", failed)
    archs = wrn_archs(args.smoke)
    if "wrn" not in skip:
        rows = []
        variants = ["eager", "channels_last"] + (["channels_last+cuda_graph"] if dev.type == "cuda" else [])
        for precision in ("bf16", "fp32"):
            for label, arch in archs.items():
                for variant in variants:
                    rows.append(safely(bench_wrn, dev, label, arch, precision, variant, iters,
                                       batch, model=label, precision=precision, variant=variant))
                    report.add("wrn", rows)
    if "pgd" not in skip:
        rows = []
        for label, arch in archs.items():
            got = safely(bench_pgd, dev, label, arch, n_pgd, 2 if args.smoke else 10, pgd=label)
            rows += got if isinstance(got, list) else []
            if not isinstance(got, list):
                report.add("pgd_error", got)
            report.add("pgd", rows)
    if "compile" not in skip:
        label, arch = next(iter(archs.items()))
        report.add("compile", [safely(bench_wrn, dev, label, arch, "bf16", "compile+channels_last",
                                      iters, batch, model=label, precision="bf16",
                                      variant="compile+channels_last")])
    return report.res


if __name__ == "__main__":
    main()
