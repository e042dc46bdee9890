import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from conftest import MNIST_COPY
from lsqueeze.jobs import data
from lsqueeze.science import splits


def test_mnist_from_local_mirror_matches_checksums(tmp_path, http_server):
    if not MNIST_COPY.exists():
        pytest.skip(f"no local MNIST copy at {MNIST_COPY} (set LSQUEEZE_MNIST_MIRROR)")
    url = http_server(MNIST_COPY)
    paths = data.prepare("mnist", tmp_path / "mnist", mirror=url)
    x, y = splits.load_split(paths["train"])
    # mnist_challenge's 55k: the official training file without its first 5,000 images
    assert x.shape == (55000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (55000,) and set(y.unique().tolist()) == set(range(10))
    from torchvision.datasets.mnist import read_image_file, read_label_file
    raw = tmp_path / "mnist" / "raw"
    assert torch.equal(x[:, 0], read_image_file(str(raw / "train-images-idx3-ubyte"))[5000:])
    assert torch.equal(y, read_label_file(str(raw / "train-labels-idx1-ubyte"))[5000:].long())
    xt, yt = splits.load_split(paths["test"])
    assert xt.shape == (10000, 1, 28, 28)
    # the decompressed files match the official MD5 sums
    for name, md5 in data.MNIST_RAW_MD5.items():
        assert hashlib.md5((tmp_path / "mnist" / "raw" / name).read_bytes()).hexdigest() == md5


def test_truncated_download_fails_clearly_and_leaves_no_output(tmp_path, http_server):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data.MNIST_RAW_MD5:
        src = MNIST_COPY / f"{name}.gz"
        blob = src.read_bytes() if src.exists() else gzip.compress(b"\0" * 100)
        (mirror / f"{name}.gz").write_bytes(blob[: len(blob) // 2])  # truncated
    url = http_server(mirror)
    with pytest.raises(splits.DataError, match="(checksum|gzip)"):
        data.prepare("mnist", tmp_path / "out", mirror=url)
    assert not (tmp_path / "out" / "train.pt").exists()
    assert not (tmp_path / "out" / "test.pt").exists()
    assert not list((tmp_path / "out" / "raw").glob("*.gz")), "a corrupted download must be removed"


def test_data_cli_reports_corruption_with_exit_code(tmp_path, http_server):
    from lsqueeze.cli import main

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in data.MNIST_RAW_MD5:
        (mirror / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    assert main(["data", "--dataset", "mnist", "--out-dir", str(tmp_path / "o"),
                 "--mirror", http_server(mirror)]) == 2
    assert not (tmp_path / "o" / "train.pt").exists()


def _fake_cifar(root, monkeypatch):
    """A CIFAR-10-format archive (real format, random pixels) with its MD5s patched in."""
    base = "cifar-10-batches-py"
    files = {}
    for name, n in [("data_batch_1", 20), ("test_batch", 10)]:
        d = {"data": np.random.randint(0, 256, (n, 3072), dtype=np.uint8),
             "labels": list(np.arange(n) % 10)}
        files[name] = pickle.dumps(d)
    files["batches.meta"] = pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (root / tvd.CIFAR10.filename).write_bytes(buf.getvalue())
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5(buf.getvalue()))
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [["data_batch_1", md5(files["data_batch_1"])]])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(files["test_batch"])]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5(files["batches.meta"])})
    return files


def test_cifar_download_through_torchvision(tmp_path, http_server, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _fake_cifar(mirror, monkeypatch)
    paths = data.prepare("cifar10", tmp_path / "c10", mirror=http_server(mirror))
    x, y = splits.load_split(paths["train"])
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    assert splits.load_split(paths["test"])[0].shape == (10, 3, 32, 32)


def test_cifar_checksum_mismatch(tmp_path, http_server, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _fake_cifar(mirror, monkeypatch)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)
    got = hashlib.md5((mirror / tvd.CIFAR10.filename).read_bytes()).hexdigest()
    # the sums themselves, not torchvision's "File not found or corrupted"
    with pytest.raises(splits.DataError, match=f"checksum mismatch \\(expected md5 0{{32}}, "
                                               f"got {got}\\)") as err:
        data.prepare("cifar10", tmp_path / "c10", mirror=http_server(mirror))
    assert "\n" not in str(err.value) and "File not found" not in str(err.value)
    assert not (tmp_path / "c10" / "train.pt").exists()
    assert not (tmp_path / "c10" / "raw" / tvd.CIFAR10.filename).exists()  # removed, refetched


@pytest.mark.parametrize("variant,shape", [("digits28", (1, 28, 28)), ("digits32", (3, 32, 32))])
def test_digits_variants(variant, shape):
    a, b = data.digits(variant), data.digits(variant)
    assert a["train"]["x"].shape[1:] == shape and a["train"]["x"].dtype == torch.uint8
    assert len(a["train"]["y"]) + len(a["test"]["y"]) == 1797
    assert len(a["test"]["y"]) == 297
    for split in ("train", "test"):
        assert set(a[split]["y"].tolist()) == set(range(10))
        assert torch.equal(a[split]["x"], b[split]["x"]) and torch.equal(a[split]["y"], b[split]["y"])
    assert a["train"]["x"].max() > 200 and a["train"]["x"].min() == 0


def test_unknown_dataset(tmp_path):
    with pytest.raises(splits.DataError, match="unknown"):
        data.prepare("imagenet", tmp_path)


def test_bad_split_file_is_reported(tmp_path):
    bad = tmp_path / "train.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="cannot read"):
        splits.load_split(bad)


def test_a_failed_download_names_the_offline_fix(tmp_path, capsys):
    """No network (here: a port nothing listens on): one line that says where to put the files
    and which preset key names another mirror; seeding that directory then works offline."""
    import socket

    from lsqueeze.cli import main

    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = tmp_path / "data" / "raw" / "mnist"
    args = ["data", "--dataset", "mnist", "--out-dir", str(tmp_path / "data" / "mnist"),
            "--raw-dir", str(raw)]
    assert main([*args, "--mirror", f"http://127.0.0.1:{port}/"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsqueeze data: error: download of ")
    assert f"copy the dataset's files into {raw}/" in err[0] and "mirrors: {mnist: " in err[0]
    if not MNIST_COPY.exists():
        pytest.skip(f"no local MNIST copy at {MNIST_COPY} (set LSQUEEZE_MNIST_MIRROR)")
    # the first fix: the official files seeded into that directory, the mirror still down
    for name in data.MNIST_RAW_MD5:
        (raw / f"{name}.gz").write_bytes((MNIST_COPY / f"{name}.gz").read_bytes())
    assert main([*args, "--mirror", f"http://127.0.0.1:{port}/"]) == 0
    assert (tmp_path / "data" / "mnist" / "test.pt").exists()


def test_mirror_keeps_a_stable_port_or_the_next_free_one(tmp_path):
    """A rehearsal serves its mirror on a fixed port (the data jobs' parameters keep the URL): a
    busy port moves it to the next free one, and the files are served as they are on disk."""
    import urllib.request

    from lsqueeze.runtime.mirror import serve_directory

    (tmp_path / "a.gz").write_bytes(b"\x1f\x8b payload")
    with serve_directory(tmp_path, 18_731) as first, serve_directory(tmp_path, 18_731) as second:
        ports = [int(url.rstrip("/").rsplit(":", 1)[1]) for url in (first, second)]
        assert first != second and all(18_731 <= p < 18_781 for p in ports)
        assert urllib.request.urlopen(second + "a.gz").read() == b"\x1f\x8b payload"
