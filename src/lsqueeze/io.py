"""Atomic file output and provenance: a killed job never leaves a file that looks done.

torch is imported where a tensor is read or written, not here: the aggregation (tables, figures,
claims) writes through this module and must not pay torch's import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask (os.umask can only be read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path in the target's directory; rename onto the target only on success.

    mkstemp creates the temp file 0600 whatever the umask; the finished file gets the mode a plain
    open() would have given it (0644 under umask 022), so teammates on a shared cluster can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_torch(obj, path) -> None:
    # Through a file handle: torch.save(obj, <path>) records the (random) temp file name in the
    # archive, so identical tensors would hash differently and provenance hashes would lie.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        import torch

        torch.save(obj, fh)


def load_torch(path, map_location="cpu"):
    """Load a tensor file written by this package; never unpickles arbitrary objects."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or foreign file: say which one
        raise RuntimeError(f"cannot read {path}: not a valid tensor file ({exc})") from exc


def save_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_parquet(df, path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def code_version() -> str:
    """Git commit of the source tree (with -dirty), else the package version."""
    from lsqueeze import __version__

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return __version__


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"
