"""Training throughput: our loop (uint8 dataset on the device, batched augmentation, NHWC, bf16
where the hardware has it) against a plain torchvision MNIST + DataLoader loop on the same model,
loss and optimizer — and where the difference comes from, with test accuracy to show it is free.

    .venv/bin/python bench/bench_train.py [--steps 300] [--workers 0]

Real MNIST (local mirror), Madry CNN, α=0.2, σ=0.3, batch 50, Adam 1e-4 — the paper's MNIST recipe.
Rows: the plain loop; the plain loop given our layout and precision (what the data path alone is
worth is the gap between that row and ours); our loop in fp32; our loop as it runs by default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import common
import torch
import torchvision.datasets as tvd
import torchvision.transforms as T
from torch.utils.data import DataLoader

from lsqueeze.jobs.train import clean_stats, native_bf16, train, train_autocast
from lsqueeze.plan import build as C
from lsqueeze.science.models import build_model, n_params
from lsqueeze.science.splits import load_split
from lsqueeze.science.step import regularized_loss

# The paper's Madry CNN (compute-bound on a CPU) and the offline demo's small one (data-bound).
ARCHS = {"madry": {"name": "madry_cnn", "conv1": 32, "conv2": 64, "fc": 1024},
         "demo": {"name": "madry_cnn", "conv1": 8, "conv2": 16, "fc": 64}}


def dataloader_loop(root: Path, recipe: dict, cell: dict, steps: int, workers: int,
                    tuned: bool = False) -> tuple[float, object]:
    """The loop most PyTorch code would write: PIL -> ToTensor per image, DataLoader batches.
    `tuned`: the same loop with our NHWC layout and default precision (the data path unchanged)."""
    ds = tvd.MNIST(str(root), train=True, download=False, transform=T.ToTensor())
    loader = DataLoader(ds, batch_size=recipe["batch_size"], shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(recipe, (1, 28, 28))
    if tuned:
        model = model.to(memory_format=torch.channels_last)
    autocast = train_autocast(torch.device("cpu"), "auto" if tuned else "fp32")
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    done, it = 0, iter(loader)
    t0 = time.perf_counter()
    while done < steps:
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        x = x + torch.randn_like(x) * cell["sigma"]
        if tuned:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        loss = regularized_loss(logits, y, cell, recipe["ce_reduction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return done * recipe["batch_size"] / (time.perf_counter() - t0), model


def torchvision_root(data_dir: Path, root: Path) -> Path:
    """Lay out our verified raw files the way torchvision.datasets.MNIST expects them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in (data_dir / "raw").glob("*-ubyte"):
        if not (raw / f.name).exists():
            os.symlink(f.resolve(), raw / f.name)
    return root


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="madry")
    # Outside results/data: the DVC stage versions that folder, and the demo needs no MNIST.
    ap.add_argument("--data", default=str(common.REPO / "results" / "bench" / "mnist"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    data_dir = common.mnist(Path(args.data))
    cell = C.resolve_cell({}, {"dataset": "mnist", "alpha": 0.2, "sigma": 0.3, "steps": args.steps})
    recipe = C.RECIPES["mnist"]
    recipe = C._deep_merge(recipe, {"arch": ARCHS[args.arch]})
    precision = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    x_te, y_te = load_split(data_dir / "test.pt")
    runs: dict[str, list] = {}

    def record(name, rate, acc):
        runs.setdefault(name, []).append((rate, acc))

    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data_dir, Path(tmp) / "tv")
        spec = {"id": C.cell_id(cell), "cell": cell, "recipe": recipe}
        plain = f"torchvision MNIST + DataLoader (num_workers={args.workers}), fp32 NCHW"
        tuned = f"same DataLoader loop, our layout + precision (NHWC, {precision})"
        ours_fp32 = "lsqueeze train loop, precision=fp32"
        ours = f"lsqueeze train loop, default (precision=auto: {precision})"
        for r in range(args.rounds):  # interleaved, best of each: the machine's noise hits both
            for name, is_tuned in ((plain, False), (tuned, True)):
                rate, model = dataloader_loop(root, recipe, cell, args.steps, args.workers, is_tuned)
                record(name, rate, clean_stats(model, x_te, y_te)[0])
            for name, prec in ((ours_fp32, "fp32"), (ours, "auto")):
                m = train(spec, data_dir, Path(tmp) / f"ours{r}{prec}", progress=False,
                          options={"checkpoint_every": 10**9, "precision": prec})
                record(name, m["images_per_s"], m["test_accuracy"])
    best = {name: max(v) for name, v in runs.items()}
    baseline = best[plain][0]
    table = ("| loop | images/s | × plain | test accuracy after the run |\n|---|---|---|---|\n"
             + "\n".join(f"| {n} | {v:,.0f} | {v / baseline:.2f}× | {100 * a:.2f}% |"
                          for n, (v, a) in best.items()))
    ratio, fp32_ratio = best[ours][0] / baseline, best[ours_fp32][0] / baseline
    data_path = best[ours][0] / best[tuned][0]
    body = (f"## Training loop vs DataLoader (CPU, {args.arch} CNN, num_workers={args.workers})\n\n"
            f"`.venv/bin/python bench/bench_train.py --arch {args.arch} --steps {args.steps}"
            f" --workers {args.workers}` — real MNIST, {args.arch} CNN"
            f" ({n_params(build_model(recipe, (1, 28, 28))):,} parameters), α=0.2, σ=0.3, batch 50, Adam,"
            f" {args.steps} steps per run; best of {args.rounds} interleaved rounds; {common.machine()};"
            f" native bf16: {native_bf16(torch.device('cpu'))}.\n\n"
            f"{table}\n\n**Ratio: {ratio:.2f}×** (ours as it runs by default / the plain loop, same run);"
            f" {fp32_ratio:.2f}× with both in fp32; the data path alone (ours / the plain loop given"
            f" our layout and precision): {data_path:.2f}×.\n")
    print(body)
    if not args.no_write:
        common.write_section(f"bench_train_{args.arch}_w{args.workers}", body)
    return best


if __name__ == "__main__":
    main()
