"""Shared helpers for the benchmarks: real MNIST from a local copy, BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from lsqueeze.runtime.files import cpu_model
from lsqueeze.runtime.mirror import serve_directory  # noqa: F401  (the tests' mirror too)

REPO = Path(__file__).resolve().parents[1]
# A directory with MNIST's four .gz files (the benchmarks and the real-MNIST tests run offline):
# LSQUEEZE_MNIST_MIRROR, else bench/mnist/ (git ignores it). Without them those tests skip.
MIRROR = Path(os.environ.get("LSQUEEZE_MNIST_MIRROR", REPO / "bench" / "mnist"))


def mnist(out_dir: Path) -> Path:
    """Real MNIST converted by `lsqueeze data` from the local copy (MIRROR), which is served on
    127.0.0.1 so that the same download-and-verify code runs as for the official mirror."""
    from lsqueeze.jobs.data import prepare

    out_dir = Path(out_dir)
    if (out_dir / "train.pt").exists():
        return out_dir
    with serve_directory(MIRROR) as url:
        prepare("mnist", out_dir, mirror=url)
    return out_dir


def machine() -> str:
    n = torch.get_num_threads()
    return (f"{cpu_model()} ({platform.machine()}), {n} torch thread{'s' * (n != 1)},"
            f" torch {torch.__version__}")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the `name` section of BENCHMARKS.md, leaving other sections alone."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nEach section is written by its script in `bench/`; "
        "ratios are measured in one run.\n")
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
