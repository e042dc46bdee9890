import hashlib

import pytest
import torch

from lsqueeze.io import atomic_path, load_torch, save_torch


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
