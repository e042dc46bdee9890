"""The split files every job reads: {'x': uint8 N×C×H×W, 'y': int64 N}, written by
`lsqueeze data` (lsqueeze.jobs.data), and the one conversion of their images to floats in [0,1].

Apart from the download job, so that a training or attack job's code does not include it (nor
the dataset registry): an edit to a downloader or a recipe retrains nothing through here.
"""

from __future__ import annotations

import torch

from lsqueeze.runtime.files import load_torch

SPLITS = ("train", "test")


class DataError(RuntimeError):
    pass


def load_split(path, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One read: uint8 images and int64 labels, moved to `device` as they are (uint8 stays uint8)."""
    blob = load_torch(path)
    if not isinstance(blob, dict) or "x" not in blob or "y" not in blob:
        raise DataError(f"{path}: not a split file written by `lsqueeze data`")
    return blob["x"].to(device), blob["y"].to(device)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)
