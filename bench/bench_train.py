"""Training throughput: our loop (uint8 dataset on the device, batched augmentation) against a
plain torchvision MNIST + DataLoader loop on the same model, loss and optimizer.

    .venv/bin/python bench/bench_train.py [--steps 300] [--workers 0]

Real MNIST (local mirror), Madry CNN, α=0.2, σ=0.3, batch 50, Adam 1e-4 — the paper's MNIST recipe.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torchvision.datasets as tvd
import torchvision.transforms as T
from torch.utils.data import DataLoader

import common
from lsqueeze import config as C
from lsqueeze.models import build_model, n_params
from lsqueeze.train import regularized_loss, train


# The paper's Madry CNN (compute-bound on a CPU) and the offline demo's small one (data-bound).
ARCHS = {"madry": {"name": "madry_cnn", "conv1": 32, "conv2": 64, "fc": 1024},
         "demo": {"name": "madry_cnn", "conv1": 8, "conv2": 16, "fc": 64}}


def dataloader_loop(root: Path, recipe: dict, cell: dict, steps: int, workers: int) -> float:
    """The loop most PyTorch code would write: PIL -> ToTensor per image, DataLoader batches."""
    ds = tvd.MNIST(str(root), train=True, download=False, transform=T.ToTensor())
    loader = DataLoader(ds, batch_size=recipe["batch_size"], shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model(recipe, (1, 28, 28))
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
        loss = regularized_loss(model(x), y, cell["alpha"], cell["beta"], recipe["ce_reduction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
    return done * recipe["batch_size"] / (time.perf_counter() - t0)


def torchvision_root(data_dir: Path, root: Path) -> Path:
    """Lay out our verified raw files the way torchvision.datasets.MNIST expects them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in (data_dir / "raw").glob("*-ubyte"):
        if not (raw / f.name).exists():
            os.symlink(f.resolve(), raw / f.name)
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="madry")
    ap.add_argument("--data", default=str(common.REPO / "results" / "data" / "mnist"))
    args = ap.parse_args()
    data_dir = common.mnist(Path(args.data))
    cell = C.resolve_cell({}, {"dataset": "mnist", "alpha": 0.2, "sigma": 0.3, "steps": args.steps})
    recipe = C.RECIPES["mnist"]
    recipe = C._deep_merge(recipe, {"arch": ARCHS[args.arch]})
    base_runs, our_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data_dir, Path(tmp) / "tv")
        spec = {"id": C.cell_id(cell), "cell": cell, "recipe": recipe}
        for r in range(args.rounds):  # interleaved, best of each: the machine's noise hits both
            base_runs.append(dataloader_loop(root, recipe, cell, args.steps, args.workers))
            our_runs.append(train(spec, data_dir, Path(tmp) / f"ours{r}", progress=False,
                                  options={"checkpoint_every": 10**9})["images_per_s"])
    baseline, ours = max(base_runs), max(our_runs)
    ratio = ours / baseline
    rows = [("torchvision MNIST + DataLoader "
             f"(num_workers={args.workers})", baseline), ("lsqueeze train loop", ours)]
    table = "| loop | images/s |\n|---|---|\n" + "\n".join(f"| {n} | {v:,.0f} |" for n, v in rows)
    body = (f"## Training loop vs DataLoader (CPU, {args.arch} CNN, num_workers={args.workers})\n\n"
            f"`.venv/bin/python bench/bench_train.py --arch {args.arch} --steps {args.steps} --workers {args.workers}`"
            f" — real MNIST, {args.arch} CNN ({n_params(build_model(recipe, (1, 28, 28))):,} parameters), α=0.2, σ=0.3, batch 50, Adam;"
            f" best of {args.rounds} interleaved rounds; {common.machine()}.\n\n"
            f"{table}\n\n**Ratio: {ratio:.2f}×** (ours / DataLoader, measured in the same run).\n")
    print(body)
    common.write_section(f"bench_train_{args.arch}_w{args.workers}", body)


if __name__ == "__main__":
    main()
