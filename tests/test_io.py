import hashlib
import shutil

import pytest
import torch

from lsqueeze.runtime.files import atomic_path, load_torch, save_torch


def test_identical_tensors_give_identical_files(tmp_path):
    """Provenance hashes (model_hash, adv_set_hash) compare file bytes: they must not depend on the
    temp-file name a save went through."""
    digests = set()
    for name in ("a.pt", "b.pt"):
        save_torch({"w": torch.arange(6.0).view(2, 3)}, tmp_path / name)
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1
    assert torch.equal(load_torch(tmp_path / "a.pt")["w"], torch.arange(6.0).view(2, 3))


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_outputs_follow_the_umask(tmp_path):
    """mkstemp makes 0600 files: without the chmod a teammate could not read the tables."""
    import os

    import pandas as pd

    from lsqueeze.runtime.files import save_json, save_parquet

    old = os.umask(0o022)
    try:
        save_torch({"w": torch.zeros(2)}, tmp_path / "a.pt")
        save_json({"a": 1}, tmp_path / "a.json")
        save_parquet(pd.DataFrame({"a": [1]}), tmp_path / "a.parquet")
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        os.umask(0o077)
        save_json({"a": 1}, tmp_path / "private.json")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    want = {"a.pt": 0o644, "a.json": 0o644, "a.parquet": 0o644, "a.txt": 0o644,
            "private.json": 0o600}
    # each file's digest beside it, with the same mode
    assert modes == {**want, **{f"{k}.sha256": v for k, v in want.items()}}


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """torch reports ENOSPC as "enforce fail at inline_container.cc"; the job says what it is."""
    import errno as _errno

    from lsqueeze.runtime import files as io

    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))

    def no_space(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(io.DiskFullError, match=r"m\.pt: no space left on the device \(0 MiB free"):
        save_torch({"x": torch.zeros(3)}, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())  # no temp file, no half file, no digest left behind

    def json_full(*a, **k):
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.Path, "write_text", json_full)
    with pytest.raises(io.DiskFullError, match=r"e\.json: no space left"):
        io.save_json({"a": 1}, tmp_path / "e.json")
    # and through the CLI, a DiskFullError is a JobError: one line, exit 2
    assert issubclass(io.DiskFullError, io.JobError)
