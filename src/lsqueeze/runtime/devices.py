"""Where a job runs and in which mode a model is read: the helpers every torch job shares.

Its own module so that training, evaluation and analysis depend on it without depending on each
other (an edit to one job's code must not rerun another's: lsqueeze/runtime/fingerprint.py).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch

from lsqueeze.runtime.integrity import DEVICE_POLICIES, DeviceError, no_gpu_message


def pick_device(name="auto", need: str = "auto") -> torch.device:
    """The job's device, checked before any work starts.

    `name` is a device the user chose (the `train.device` run option; a torch.device), or "auto".
    `need` is the preset's `device`: "cuda" (GPU presets) refuses to fall back to the CPU, "auto"
    falls back with a warning, "cpu" runs on the CPU. A GPU job on a CPU would run for days and
    look like a success, so it is an error unless the preset says the CPU is fine."""
    if need not in DEVICE_POLICIES:
        raise DeviceError(f"device: unknown {need!r} (known: {', '.join(DEVICE_POLICIES)})")
    if str(name) != "auto":
        if str(name).startswith("cuda") and not torch.cuda.is_available():
            raise DeviceError(f"device {str(name)!r}: " + no_gpu_message(need))
        return torch.device(name)
    if need == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if need == "cuda":
        raise DeviceError(no_gpu_message(need))
    print("lsqueeze: warning: no CUDA GPU is visible: running on the CPU (`device: auto`)",
          file=sys.stderr, flush=True)
    return torch.device("cpu")


@contextmanager
def eval_mode(model, enabled: bool = True):
    was_training = model.training
    if enabled:
        model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
