"""What the evaluation and analysis jobs read: the test subset every model is measured on, and a
trained model checked against the metrics its training wrote."""

from __future__ import annotations

from pathlib import Path

import torch

from lsqueeze.runtime.files import load_torch
from lsqueeze.runtime.integrity import verify_model
from lsqueeze.science.models import build_model
from lsqueeze.science.splits import load_split, to_float


def test_subset(data_dir, n: int | None, device):
    """The first n test images (the whole split for n=None): the same subset for every model."""
    x, y = load_split(Path(data_dir) / "test.pt", device)
    if n:
        x, y = x[:n], y[:n]
    return to_float(x), y


def load_model(spec: dict, model_path, image_shape, device="cpu"):
    """A trained model in eval mode, NHWC like in training: attacks run 1.2-1.3x faster on a CPU
    (only float rounding differs, as between any two convolution algorithms).

    The file must be the one the cell's training wrote (integrity.verify_model): a corrupted or
    swapped model.pt would otherwise be evaluated and reported as the cell's numbers."""
    verify_model(model_path, spec["id"])
    model = build_model(spec["recipe"], image_shape)
    model.load_state_dict(load_torch(model_path, map_location=device))
    return model.to(device).to(memory_format=torch.channels_last).eval()
