"""Datasets -> one compact tensor file per split ({'x': uint8 N×C×H×W, 'y': int64 N}).

Downloads go through torchvision's helpers and are checked against the published MD5 sums; the
mirror is configurable so tests can serve the files from 127.0.0.1. A file that fails its checksum
is deleted and reported; the split files are written atomically, so a failed run leaves nothing
that Snakemake could take as done.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lsqueeze.registries.base import load_function
from lsqueeze.registries.datasets import DATASETS
from lsqueeze.runtime.files import file_digest, save_torch
from lsqueeze.science.splits import SPLITS, DataError

# MD5 of the *decompressed* IDX files: the official sums, and the ones any re-gzipped mirror keeps.
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# mnist_challenge trains on `input_data.read_data_sets(...).train`: TensorFlow's reader holds out
# the first 5,000 of the 60,000 training images as its validation set, so the training split is
# images 5,000-59,999 (55,000). The 10,000 test images are the official test set.
MNIST_VALIDATION = 5000


# torchvision is imported only where a dataset is downloaded or converted: it takes seconds to
# import, and `lsqueeze data` needs it only for MNIST and CIFAR.
def _cifar_class(name: str):
    import torchvision.datasets as tvd

    return {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]


def default_mirror(name: str) -> str:
    if name == "mnist":
        import torchvision.datasets as tvd

        return tvd.MNIST.mirrors[0]
    return _cifar_class(name).url.rsplit("/", 1)[0] + "/"


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _fetch(url: str, raw: Path, filename: str, md5: str | None) -> Path:
    from torchvision.datasets.utils import check_integrity, download_url

    target = raw / filename
    try:
        # no md5 here: torchvision's own check ends in "File not found or corrupted", which
        # hides the sums; the check below names both. A file already there is not fetched again.
        download_url(url, str(raw), filename=filename)
    except Exception as exc:
        target.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from exc
    if md5 and not check_integrity(str(target), md5):
        got = _md5(target) if target.exists() else "nothing"
        target.unlink(missing_ok=True)
        raise DataError(f"{url}: checksum mismatch (expected md5 {md5}, got {got}); "
                        "the file is truncated or corrupted and was removed")
    return target


def _mnist(raw: Path, mirror: str) -> dict[str, dict]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    files = {}
    for name, md5 in MNIST_RAW_MD5.items():
        gz = _fetch(mirror + name + ".gz", raw, name + ".gz", None)
        out = raw / name
        try:
            with gzip.open(gz, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as exc:
            gz.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
            raise DataError(f"{mirror}{name}.gz: not a valid gzip file ({exc}); removed") from exc
        if _md5(out) != md5:
            got = _md5(out)
            gz.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
            raise DataError(f"{mirror}{name}.gz: checksum mismatch of the decompressed file "
                            f"(expected md5 {md5}, got {got}); truncated or corrupted, removed")
        files[name] = out
    split = {}
    for s, prefix in (("train", "train"), ("test", "t10k")):
        x = read_image_file(str(files[f"{prefix}-images-idx3-ubyte"]))[:, None]
        y = read_label_file(str(files[f"{prefix}-labels-idx1-ubyte"])).long()
        keep = slice(MNIST_VALIDATION, None) if s == "train" else slice(None)
        split[s] = {"x": x[keep].contiguous(), "y": y[keep].contiguous()}
    return split


def _cifar(name: str, raw: Path, mirror: str) -> dict[str, dict]:
    from torchvision.datasets.utils import extract_archive

    cls = _cifar_class(name)
    archive = _fetch(mirror + cls.filename, raw, cls.filename, cls.tgz_md5)
    extract_archive(str(archive), str(raw))
    split = {}
    for s in SPLITS:
        ds = cls(str(raw), train=(s == "train"), download=False)  # checks each batch file's md5
        split[s] = {"x": torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                    "y": torch.tensor(ds.targets, dtype=torch.long)}
    return split


def digits(shape: str, test_size: int = 297, seed: int = 0) -> dict[str, dict]:
    """scikit-learn's 1,797 real handwritten digits (8×8, 17 grey levels), MNIST- or CIFAR-shaped.

    MNIST-shaped: the digit is upsampled to 20×20 and centred in 28×28, as MNIST's digits are.
    CIFAR-shaped: upsampled to 32×32 and repeated over three channels. The split is stratified and
    fixed by `seed`.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    img = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    if shape == "digits28":
        img = F.pad(F.interpolate(img, size=(20, 20), mode="bilinear", align_corners=False), (4,) * 4)
    elif shape == "digits32":
        img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    else:
        raise ValueError(f"unknown digits variant {shape!r}")
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(bunch.target).long()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_size,
                                           random_state=seed, stratify=bunch.target)
    return {"train": {"x": x[idx_train], "y": y[idx_train]}, "test": {"x": x[idx_test], "y": y[idx_test]}}


def mnist(name: str, raw: Path, mirror: str | None) -> dict[str, dict]:
    return _mnist(raw, mirror or default_mirror(name))


def cifar(name: str, raw: Path, mirror: str | None) -> dict[str, dict]:
    return _cifar(name, raw, mirror or default_mirror(name))


def digits_split(name: str, raw: Path, mirror: str | None) -> dict[str, dict]:
    return digits(name, DATASETS[name].test_size)


def prepare(name: str, out_dir, raw_dir=None, mirror: str | None = None) -> dict[str, Path]:
    """Download (if needed), verify and convert one dataset (its converter:
    lsqueeze.registries.datasets); return the split file paths."""
    if name not in DATASETS:
        raise DataError(f"dataset: unknown {name!r} (known: {', '.join(DATASETS)})")
    out_dir = Path(out_dir)
    raw = Path(raw_dir) if raw_dir else out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    if mirror and not mirror.endswith("/"):
        mirror += "/"
    split = load_function(DATASETS[name].load)(name, raw, mirror)
    paths = {}
    for s in SPLITS:
        paths[s] = out_dir / f"{s}.pt"
        save_torch(split[s], paths[s])
    return paths
