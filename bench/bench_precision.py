"""bf16 or fp32 on this CPU: the paper's MNIST training step in each, and what `precision: auto`
picks here.

    .venv/bin/python bench/bench_precision.py [--steps 200] [--rounds 2]

bf16 autocast pays only where the CPU has bf16 instructions (x86: AVX512-BF16 or AMX). oneDNN
also runs bf16 on AVX-512 CPUs without them, by converting in software, and there it is slower
than fp32; `auto` therefore asks for the instructions, not for oneDNN's support. One training
process on one thread (as the CPU presets run two side by side), `lsqueeze train` on real MNIST,
the Madry CNN, α=0.2 σ=0.3, batch 50, Adam 1e-4; fp32 and bf16 interleaved, best of the rounds.
Each CPU model gets its own section in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import common
import torch

from lsqueeze.jobs.train import native_bf16, resolve_precision, train
from lsqueeze.plan import build as C


def cpu_flags() -> str:
    """The bf16-relevant instruction sets this CPU reports, as torch sees them."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    have = {"AVX-512": torch.cpu._is_avx512_supported(),
            "AVX512-BF16": torch.cpu._is_avx512_bf16_supported(),
            "AMX": torch.cpu._is_amx_tile_supported(),
            "oneDNN bf16": bool(probe and probe())}
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in have.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default=str(common.REPO / "results" / "bench" / "mnist"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data_dir = common.mnist(Path(args.data))
    cell = C.resolve_cell({}, {"dataset": "mnist", "alpha": 0.2, "sigma": 0.3, "steps": args.steps})
    spec = {"id": C.cell_id(cell), "cell": cell, "recipe": C.RECIPES["mnist"]}
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):  # interleaved: the machine's noise hits both
            for precision in ("fp32", "bf16"):
                m = train(spec, data_dir, Path(tmp) / f"{precision}{r}", progress=False,
                          options={"checkpoint_every": 10**9, "precision": precision})
                best[precision] = max(best.get(precision, (0.0, 0.0)),
                                      (m["images_per_s"], m["test_accuracy"]))
    auto = resolve_precision(torch.device("cpu"), "auto")
    ratio = best["bf16"][0] / best["fp32"][0]
    cpu = common.cpu_model()
    rows = "\n".join(f"| {p} | {v:,.0f} | {v / best['fp32'][0]:.2f}× | {100 * a:.2f}% |"
                     for p, (v, a) in best.items())
    body = (f"## Precision on the CPU: {cpu}\n\n"
            f"`.venv/bin/python bench/bench_precision.py --steps {args.steps} --rounds {args.rounds}`"
            f" — `lsqueeze train` on real MNIST, Madry CNN, α=0.2, σ=0.3, batch 50, Adam 1e-4,"
            f" {args.steps} steps per run, one thread; best of {args.rounds} interleaved rounds;"
            f" {common.machine()}; {cpu_flags()}.\n\n"
            f"| precision | images/s | × fp32 | test accuracy after the run |\n|---|---|---|---|\n"
            f"{rows}\n\n**bf16 / fp32: {ratio:.2f}×**; `precision: auto` trains in **{auto}** here"
            f" (bf16 instructions: {'yes' if native_bf16(torch.device('cpu')) else 'no'}).\n")
    print(body)
    if not args.no_write:
        slug = re.sub(r"[^a-z0-9]+", "_", cpu.lower()).strip("_")
        common.write_section(f"bench_precision_{slug}", body)
    return best


if __name__ == "__main__":
    main()
