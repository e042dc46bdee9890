"""Local GPU pinning: each GPU job of a multi-GPU box gets a device of its own.

`snakemake --cores all --resources gpu=N` keeps at most N jobs that declare `gpu=1` running, but
Snakemake does not say *which* device a job should use (local executor), so without help every job
would land on cuda:0. Each job therefore takes an exclusive lock on one device index — an fcntl
lock on `<lock_dir>/gpu<id>.lock`, released by the kernel when the process exits, even on SIGKILL —
and narrows CUDA_VISIBLE_DEVICES to that device before CUDA is initialised.

No-op where there is no GPU (CPU machines, the offline demo, CI) and where pinning is switched off
(LSQUEEZE_GPU_PINNING=0). LSQUEEZE_JOBS_PER_GPU=k lets k jobs share each device (k lock slots per
device, filled device by device): a small model such as the MNIST CNN leaves a GPU idle between
its tiny kernels, and k processes fill those gaps; `--resources gpu=N*k` then lets N*k jobs run.
Inside a SLURM job the scheduler has already handed out the GPUs; the
locks are then namespaced by SLURM_JOB_ID, so separate jobs on one node never wait for each other
and several Snakemake jobs inside one allocation (a group job) still spread over its devices.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ENV_LOCK_DIR = "LSQUEEZE_GPU_LOCK_DIR"
ENV_PINNING = "LSQUEEZE_GPU_PINNING"
ENV_JOBS_PER_GPU = "LSQUEEZE_JOBS_PER_GPU"


def visible_devices(env=None) -> list[str]:
    """The device ids this process may use: CUDA_VISIBLE_DEVICES's entries if it is set (ids or
    UUIDs, as the user or SLURM wrote them), else the indices nvidia-smi lists, else torch's count."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        # CUDA stops at the first invalid entry; "" and "-1" hide every device.
        ids = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):
                break
            ids.append(entry)
        return ids
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                return [str(i) for i, line in enumerate(out.stdout.splitlines())
                        if line.startswith("GPU ")]
        except (OSError, subprocess.SubprocessError):
            pass
    if "torch" in sys.modules:  # only when already imported: importing torch costs seconds
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            return [str(i) for i in range(torch.cuda.device_count())]
    return []


def jobs_per_gpu(env=None) -> int:
    env = os.environ if env is None else env
    raw = env.get(ENV_JOBS_PER_GPU, "1")
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"{ENV_JOBS_PER_GPU}: expected a whole number >= 1, got {raw!r}")
    return k


def slot_file(device: str, slot: int) -> str:
    """Slot 0 keeps the one-job-per-device name, so jobs run with different k still exclude
    each other on it."""
    return f"gpu{device}.lock" if slot == 0 else f"gpu{device}.slot{slot}.lock"


def default_lock_dir(env=None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_LOCK_DIR):
        return Path(env[ENV_LOCK_DIR])
    name = f"lsqueeze-gpu-locks-{os.getuid()}"
    if env.get("SLURM_JOB_ID"):
        name += f"-slurm{env['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


@dataclass
class Lease:
    """An exclusive claim on one device; the lock lives as long as this object's file handle."""

    device: str
    path: Path
    _fh: object

    def release(self) -> None:
        if self._fh is not None and not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _try_lock(path: Path):
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")  # who holds it, for a human looking at the lock dir
    fh.flush()
    return fh


def acquire(devices: list[str], lock_dir=None, timeout: float | None = None,
            poll: float = 0.2, start: int | None = None, per_device: int = 1) -> Lease | None:
    """Lock one free slot out of `per_device` slots of each device in `devices` (waits while all
    are taken); None if there are no devices.

    Jobs start their search at different devices (by pid) so that two jobs starting at once do not
    both try device 0 first; the lock, not the order, is what guarantees exclusivity. Every
    device's first slot is tried before any second one, so k jobs per GPU spread over all GPUs.
    """
    if not devices:
        return None
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    first = (os.getpid() if start is None else start) % len(devices)
    order = devices[first:] + devices[:first]
    deadline = None if timeout is None else time.monotonic() + timeout
    warned = False
    while True:
        for slot, dev in ((j, d) for j in range(per_device) for d in order):
            path = lock_dir / slot_file(dev, slot)
            fh = _try_lock(path)
            if fh is not None:
                return Lease(dev, path, fh)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU among {devices} in {lock_dir} after {timeout} s")
        if not warned:
            print(f"lsqueeze: all GPUs {devices} are busy (locks in {lock_dir}); waiting",
                  file=sys.stderr)
            warned = True
        time.sleep(poll)


_LEASE: Lease | None = None  # held until the process exits


def pin_process(env=None) -> str | None:
    """Pick a free GPU for this job and make it the only one CUDA sees; returns its id or None.

    Call before the first CUDA call (CUDA reads CUDA_VISIBLE_DEVICES once, at initialisation).
    """
    global _LEASE
    env = os.environ if env is None else env
    if env.get(ENV_PINNING, "1").lower() in ("0", "false", "no", "off"):
        return None
    if _LEASE is not None:
        return _LEASE.device
    lease = acquire(visible_devices(env), default_lock_dir(env), per_device=jobs_per_gpu(env))
    if lease is None:
        return None
    _LEASE = lease
    env["CUDA_VISIBLE_DEVICES"] = lease.device
    return lease.device
