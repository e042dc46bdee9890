"""Atomic file output, content digests and provenance: a killed job never leaves a file that looks
done, and a file changed after it was written is never read as if it were the original.

Every file written through `atomic_path` gets a digest beside it (`<name>.sha256`, sha256sum's
format), and the readers here (`load_torch`, `read_json`, `read_parquet`) check it before use:
a flipped bit in a checkpoint, a split, a black-box set, a metrics.json or a Parquet table is
refused with a one-line error naming the file to delete, instead of becoming a wrong number. (torch
checks no checksum of its own when it loads, and JSON or Parquet carry none.) A file without a
digest beside it (written by an older version or another tool) is read unchecked, except a
checkpoint (VOUCHED), and a record in the model store (lsqueeze.plan.records).

torch is imported where a tensor is read or written, not here: the aggregation (tables, figures,
claims) writes through this module and must not pay torch's import time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

DIGEST_SUFFIX = ".sha256"
# What the package reads at run time (the preset schema, the published numbers, the claims, the
# measured step times) ships inside it, so an installed package finds them wherever it runs.
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
# The checkout the package runs from (an editable install or PYTHONPATH=src; None when installed
# from a wheel), and its lock of the whole environment (README, "Installing").
_SRC = Path(__file__).resolve().parents[2]
CHECKOUT = _SRC.parent if _SRC.name == "src" and (_SRC.parent / "Snakefile").is_file() else None
LOCK_FILE = CHECKOUT / "requirements.lock" if CHECKOUT else None


class JobError(RuntimeError):
    """A job refuses to run: the message is one line, naming the file or the setting."""


class CorruptFileError(JobError):
    """A file's content is not what was written (its digest does not match)."""


class DiskFullError(JobError):
    """An output could not be written for lack of space."""


def _disk_full(exc: BaseException, path: Path) -> DiskFullError | None:
    """The one-line error for a write that failed because the disk is full, else None. torch's
    writer reports ENOSPC as "enforce fail at inline_container.cc", without the errno."""
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not full and isinstance(exc, RuntimeError) and ("enforce fail" in text
                                                       or "No space left" in text):
        try:
            full = shutil.disk_usage(path.parent).free < (64 << 20)
        except OSError:
            full = "No space left" in text
    if not full:
        return None
    try:
        free = f"{shutil.disk_usage(path.parent).free >> 20} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"{path}: no space left on the device ({free} in {path.parent}); free "
                         "some space and rerun")


def _umask() -> int:
    """The process umask (os.umask can only be read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, digest: bool = True):
    """Yield a temp path in the target's directory; rename onto the target only on success.

    With `digest` (the default), the finished file's sha256 goes beside it: hashed from the temp
    file before the rename and recorded beside the old one's while the file is replaced, then
    alone, so a kill at any moment leaves a digest that vouches for whichever file is there: never
    none (a missing digest is a file nothing vouches for) and never a stale one that would refuse
    a good file. Files that git tracks (params/, metrics/) are written without one.

    mkstemp creates the temp file 0600 whatever the umask; the finished file gets the mode a plain
    open() would have given it (0644 under umask 022), so teammates on a shared cluster can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    digest = digest and not path.name.endswith(DIGEST_SUFFIX)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        sha = file_digest(tmp) if digest else None
        if digest:
            try:
                old = _digests(path)[:1]
            except CorruptFileError:
                old = []
            _write_digests(path, [sha, *(d for d in old if d != sha)])
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(exc, path)
        if full is not None:
            raise full from None
        raise
    if digest:
        record_digest(path, sha)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temp directory beside `path`; on success it replaces `path` whole (files an older
    run wrote there and this one did not are gone). A kill leaves the old directory, or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def digest_path(path) -> Path:
    """Where a file's digest is kept: `<name>.sha256` beside it."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_digest(path, sha: str | None = None) -> None:
    """Write the sha256 of a finished file (or the given one) beside it, in sha256sum's format."""
    _write_digests(path, [sha or file_digest(path)])


def _write_digests(path, digests: list[str]) -> None:
    path = Path(path)
    with atomic_path(digest_path(path)) as tmp:
        tmp.write_text("".join(f"{d}  {path.name}\n" for d in digests))


def _digests(path) -> list[str]:
    """The sha256 digests recorded beside a file (two while it is being replaced); [] for none."""
    side = digest_path(path)
    try:
        digests = [line.split()[0] for line in side.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except (OSError, IndexError, UnicodeDecodeError):
        digests = []
    if not digests:
        raise CorruptFileError(f"{side}: unreadable digest; {repair_hint(path)}")
    return digests


# Dataset splits, by file name: rebuilt as they were (the data job refuses a rebuild that differs
# from the recorded digest), so forcing the data job alone repairs one, and the models and
# evaluations made from it need not rerun (the workflow reads a split as `ancient`).
SPLIT_FILES = frozenset({"train.pt", "test.pt"})


def repair_hint(path) -> str:
    """The command that repairs a damaged output. Deleting the file alone is not enough: Snakemake
    sees that what was made from it still exists and says "Nothing to be done"."""
    path = Path(path)
    if path.name in SPLIT_FILES:
        return (f"rebuild it with `snakemake --cores 1 --configfile <preset> --force {path}` "
                "(nothing made from it reruns)")
    return ("rerun the job that writes it and everything made from it: `snakemake --cores all "
            f"--configfile <preset> --forcerun {path}`")


def recorded_digest(path) -> str | None:
    """The sha256 recorded beside a file when it was written; None where none is recorded."""
    digests = _digests(path)
    return digests[0] if digests else None


# Files only this package writes, always with a digest: one without is not used (a training
# checkpoint is then not resumed). Others without a digest (written by an older version, or
# committed without one) are read unchecked; lsqueeze.plan.records refuses a store record without.
VOUCHED = frozenset({"state.pt"})


def damage(path, if_newer: bool = False) -> str | None:
    """What is wrong with a file whose content no longer matches the digest recorded when it was
    written (None: nothing, or no file). if_newer: hash only a file modified after its digest was
    recorded (a quick look, as the workflow takes at every start; the readers hash every time)."""
    path = Path(path)
    recorded = _digests(path)
    if not path.exists():
        return None  # the reader's own open() says that it is missing
    if not recorded:
        if path.name in VOUCHED:
            return (f"{path}: no sha256 recorded beside it ({digest_path(path).name}), so nothing "
                    "vouches for its content")
        return None
    if if_newer and path.stat().st_mtime_ns <= digest_path(path).stat().st_mtime_ns:
        return None
    if file_digest(path) not in recorded:
        return (f"{path}: its content does not match the sha256 recorded when it was written "
                f"({digest_path(path).name}): corrupted, edited or replaced since; "
                f"{repair_hint(path)}")
    return None


def verify_file(path) -> None:
    """Refuse a file whose content no longer matches the digest recorded when it was written."""
    problem = damage(path)
    if problem:
        raise CorruptFileError(problem)


@contextmanager
def exclusive(out_dir, what: str = "training"):
    """Hold an exclusive lock on a job's output directory, or refuse in one line: two checkouts
    sharing one model store, each with its own Snakemake lock, would otherwise train the same
    cell at once, writing over each other's checkpoint. The lock is an fcntl lock on
    `.<name>.train.lock` beside the directory (a job that stops early leaves its directory as it
    was); the file stays, as removing it would let a third job lock a new file beside a held one,
    and the lock goes with the process, however it ends."""
    import fcntl

    out_dir = Path(os.path.abspath(out_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = out_dir.parent / f".{out_dir.name}.train.lock"
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobError(f"{out_dir}: another {what} of this cell is running (it holds {lock}), "
                           "perhaps from another checkout sharing the store; let it finish, "
                           "then rerun, which finds its model") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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

    verify_file(path)
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


def read_json(path):
    """A JSON file written by this package, checked against its digest."""
    verify_file(path)
    return json.loads(Path(path).read_text())


def read_parquet(path, **kwargs):
    """A Parquet table written by this package, checked against its digest."""
    import pandas as pd

    verify_file(path)
    return pd.read_parquet(path, **kwargs)


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


def package_data(name: str) -> Path:
    """A file the package ships (`lsqueeze/data/<name>`)."""
    return PACKAGE_DATA / name


def lock_digest(lock: Path | None = LOCK_FILE) -> str | None:
    """`sha256:<hex>` of the checkout's environment lock, the file `make venv` installs exactly;
    None when the package runs outside a checkout (installed from a wheel)."""
    if lock is None or not Path(lock).is_file():
        return None
    return f"sha256:{file_digest(lock)}"


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({cpu_model()}, {n} thread{'' if n == 1 else 's'})"


def cpu_model() -> str:
    """The CPU's name as the kernel reports it: two CPUs of one architecture may differ in what
    a result took (bf16 instructions or none), so a record names which one ran it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
