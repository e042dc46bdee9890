"""`lsqueeze rehearse params/<preset>.yaml`: the preset's real DAG at toy scale on this machine,
before a GPU run (README, "Before a GPU run: rehearse").

It writes the rehearsal preset (lsqueeze.plan.rehearsal) into a directory of its own
(results/rehearsal/<preset>/ by default), generates each downloaded dataset in its real format
with a few images (MNIST's IDX .gz files, the CIFAR-10/100 python archives), serves them on
127.0.0.1 as the preset's mirror, and runs the repository's Snakefile there: the real download,
checksum and conversion path, every training, attack, analysis, table, figure and claim. The
generated files cannot match the official MD5 sums, so the data jobs are given the rehearsal's
own sums in the open (`lsqueeze data --rehearsal-checksums`), which only a rehearsal accepts.
It ends with a per-rule summary, one line per failed job naming it and its log, and the real
run's projected cost (`lsqueeze cost`).

This module sits beside the CLI (it runs Snakemake and other commands); no job imports it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import pickle
import re
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from lsqueeze.plan.rehearsal import datasets_of, rehearsal_preset, subset
from lsqueeze.runtime import rehearsal as run_options
from lsqueeze.runtime.mirror import serve_directory
from lsqueeze.runtime.yamlfile import read_yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
N_TRAIN, N_TEST = 20, 8          # images per generated dataset (the rehearsal attacks 4)
MNIST_HELD_OUT = 5000            # lsqueeze.jobs.data drops MNIST's first 5,000 training images
CIFAR = {  # torchvision's layout of the python archives (lsqueeze.jobs.data reads them with it)
    "cifar10": {"archive": "cifar-10-python.tar.gz", "folder": "cifar-10-batches-py",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": ("batches.meta", "label_names"), "labels": "labels", "classes": 10},
    "cifar100": {"archive": "cifar-100-python.tar.gz", "folder": "cifar-100-python",
                 "train": ["train"], "test": ["test"], "meta": ("meta", "fine_label_names"),
                 "labels": "fine_labels", "classes": 100},
}


def _md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def _gzip(blob: bytes) -> bytes:
    return gzip.compress(blob, mtime=0)  # no time stamp: the same images give the same sums


def _idx(array: np.ndarray) -> bytes:
    """An IDX file (MNIST's format): magic (unsigned bytes, rank), the dimensions, the data."""
    head = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


def mnist_files(rng) -> tuple[dict[str, bytes], dict[str, str]]:
    """MNIST's four .gz files with a few images ({name.gz: bytes}), and the MD5 of each
    decompressed file (what lsqueeze.jobs.data checks)."""
    files, sums = {}, {}
    for prefix, n in (("train", MNIST_HELD_OUT + N_TRAIN), ("t10k", N_TEST)):
        images = rng.randint(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = _idx(array)
            files[f"{prefix}-{kind}.gz"] = _gzip(raw)
            sums[f"{prefix}-{kind}"] = _md5(raw)
    return files, sums


def cifar_files(name: str, rng) -> tuple[dict[str, bytes], dict[str, str]]:
    """A CIFAR python archive ({archive name: bytes}) with a few images, and the MD5 of the
    archive and of each file in it."""
    layout = CIFAR[name]
    members, sums = {}, {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        batches = layout[split]
        for i, batch in enumerate(batches):
            k = n // len(batches) + (i < n % len(batches))
            labels = [int(v) for v in (np.arange(k) + i) % layout["classes"]]
            members[batch] = pickle.dumps({"data": rng.randint(0, 256, (k, 3072), dtype=np.uint8),
                                           layout["labels"]: labels}, protocol=2)
    meta_file, meta_key = layout["meta"]
    members[meta_file] = pickle.dumps({meta_key: [f"class{i}" for i in range(layout["classes"])]},
                                      protocol=2)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for member, blob in members.items():
            info = tarfile.TarInfo(f"{layout['folder']}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    sums = {member: _md5(blob) for member, blob in members.items()}
    sums[layout["archive"]] = _md5(buf.getvalue())
    return {layout["archive"]: buf.getvalue()}, sums


def generate(datasets, mirror: Path) -> dict[str, dict[str, str]]:
    """Write each downloaded dataset's files under mirror/<dataset>/; return their MD5 sums."""
    sums = {}
    for name in datasets:
        rng = np.random.RandomState(0)
        if name == "mnist":
            files, sums[name] = mnist_files(rng)
        elif name in CIFAR:
            files, sums[name] = cifar_files(name, rng)
        else:
            continue  # generated by its converter (digits28, digits32): nothing to download
        (mirror / name).mkdir(parents=True, exist_ok=True)
        for fname, blob in files.items():
            path = mirror / name / fname
            if not path.exists() or path.read_bytes() != blob:
                path.write_bytes(blob)
    return sums


@contextlib.contextmanager
def own_checksums(dataset: str, path):
    """While `lsqueeze data` converts `dataset`, the rehearsal's own MD5 sums (the JSON file
    `path`, from generate) stand in for the official ones. Only a rehearsal's job may ask: the
    workflow sets LSQUEEZE_REHEARSAL for a rehearsal preset alone. The data stage's own code is
    left as it is, so that no real dataset is converted anew because a rehearsal exists."""
    from lsqueeze.jobs import data

    if run_options.settings() is None:
        raise ValueError("--rehearsal-checksums: only a rehearsal (lsqueeze rehearse) may replace "
                         "the official checksums")
    sums = json.loads(Path(path).read_text()).get(dataset)
    files = [*data.MNIST_RAW_MD5] if dataset == "mnist" else [
        CIFAR[dataset]["archive"], *CIFAR[dataset]["train"], *CIFAR[dataset]["test"],
        CIFAR[dataset]["meta"][0]] if dataset in CIFAR else []
    absent = [f for f in files if f not in (sums or {})]
    if not sums or absent:
        raise ValueError(f"{path}: no checksums for {dataset} {', '.join(absent)}".rstrip())
    print(f"{run_options.BANNER}: {dataset} is checked against the rehearsal's own MD5 sums "
          f"({path}), not the official ones", file=sys.stderr)
    if dataset == "mnist":
        saved = dict(data.MNIST_RAW_MD5)
        data.MNIST_RAW_MD5.update({k: sums[k] for k in saved})
        try:
            yield
        finally:
            data.MNIST_RAW_MD5.update(saved)
        return
    cls, layout = data._cifar_class(dataset), CIFAR[dataset]
    over = {"tgz_md5": sums[layout["archive"]],
            "train_list": [[b, sums[b]] for b in layout["train"]],
            "test_list": [[b, sums[b]] for b in layout["test"]],
            "meta": {"filename": layout["meta"][0], "key": layout["meta"][1],
                     "md5": sums[layout["meta"][0]]}}
    saved = {k: getattr(cls, k) for k in over}
    for k, v in over.items():
        setattr(cls, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(cls, k, v)


# --- Snakemake's log -> per-rule summary and failures

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]$")
_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_ERROR = re.compile(r"^Error in rule (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def _time(text: str) -> float:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").timestamp()


def parse_log(text: str) -> dict:
    """{"jobs": {rule: n planned}, "started": {jobid: (rule, t)}, "finished": {jobid: t},
    "failed": [{rule, jobid, log, output}]} from Snakemake's output."""
    jobs, started, finished, failed = {}, {}, {}, []
    stamp, block, in_stats = 0.0, None, False
    for line in text.splitlines():
        if m := _STAMP.match(line.strip()):
            stamp = _time(m.group(1))
        elif line.startswith("Job stats:"):
            in_stats, jobs = True, {}
        elif in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                jobs[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                in_stats = False
        elif m := _HEADER.match(line):
            block = {"kind": "start", "rule": m.group(1)}
        elif m := _ERROR.match(line):
            block = {"kind": "error", "rule": m.group(1), "log": None, "output": None}
            failed.append(block)
        elif m := _FINISHED.match(line):
            finished[int(m.group(1))] = stamp
        elif block and line.startswith("    jobid: "):
            jobid = int(line.split(":", 1)[1].split(",")[0])
            if block["kind"] == "start":
                started[jobid] = (block["rule"], stamp)
            else:
                block["jobid"] = jobid
        elif block and block["kind"] == "error" and line.startswith("    log: "):
            block["log"] = line[len("    log: "):].split(" (check log")[0]
        elif block and block["kind"] == "error" and line.startswith("    output: "):
            block["output"] = line[len("    output: "):].split(", ")[0]
    return {"jobs": jobs, "started": started, "finished": finished, "failed": failed}


def summary(parsed: dict) -> list[dict]:
    """One row per rule: jobs planned, passed, failed, seconds (the jobs' summed wall time)."""
    rows = defaultdict(lambda: {"jobs": 0, "passed": 0, "failed": 0, "seconds": 0.0})
    for rule, n in parsed["jobs"].items():
        rows[rule]["jobs"] = n
    for jobid, t in parsed["finished"].items():
        rule, t0 = parsed["started"].get(jobid, (None, t))
        if rule:
            rows[rule]["passed"] += 1
            rows[rule]["seconds"] += max(0.0, t - t0)
    for f in parsed["failed"]:
        rows[f["rule"]]["failed"] += 1
    return [{"rule": r, **v} for r, v in sorted(rows.items())]


def failure_line(f: dict, workdir: Path) -> str:
    """One line: the failed job (its rule and first output), the log's last line, the log."""
    log = workdir / f["log"] if f.get("log") else None
    last = ""
    if log and log.exists():
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
    job = f.get("output") or f"jobid {f.get('jobid')}"
    where = f"log: {log}" if log else "no log"
    return f"FAILED {f['rule']} {job}: {last[:300] or 'see its log'} ({where})"


def format_summary(rows: list[dict]) -> str:
    head = f"{'rule':<18} {'jobs':>6} {'passed':>7} {'failed':>7} {'seconds':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['rule']:<18} {r['jobs']:>6} {r['passed']:>7} {r['failed']:>7} "
                     f"{r['seconds']:>9.0f}")
    tot = {k: sum(r[k] for r in rows) for k in ("jobs", "passed", "failed", "seconds")}
    lines.append(f"{'total':<18} {tot['jobs']:>6} {tot['passed']:>7} {tot['failed']:>7} "
                 f"{tot['seconds']:>9.0f}")
    return "\n".join(lines)


# --- the command

def prepare(config: dict, workdir) -> Path:
    """Generate the preset's downloaded datasets and their checksums in `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sums = generate(datasets_of(config), workdir / "mirror")
    (workdir / "checksums.json").write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
    return workdir


def run(preset_path, workdir=None, cores: int = 1, extra=(), out=sys.stdout,
        only_subset: bool = False) -> int:
    """Rehearse one preset (`only_subset`: lsqueeze.plan.rehearsal.subset of it); the exit
    status (0: every job passed)."""
    preset_path = Path(preset_path)
    name = preset_path.stem + ("-subset" if only_subset else "")
    workdir = Path(workdir or Path("results") / "rehearsal" / name).resolve()
    config = read_yaml(preset_path)[0]
    if only_subset:
        config = subset(config)
    prepare(config, workdir)
    downloads = [d for d in datasets_of(config) if (workdir / "mirror" / d).is_dir()]
    port = 20000 + int(hashlib.sha256(str(workdir).encode()).hexdigest(), 16) % 20000
    t0 = time.time()
    with serve_directory(workdir / "mirror", port) as url:
        preset = rehearsal_preset(config, str(preset_path), {d: url + d + "/" for d in downloads},
                                  str(workdir / "checksums.json") if downloads else None)
        preset_file = workdir / "preset.yaml"
        preset_file.write_text("# " + run_options.BANNER + "\n" + json.dumps(preset, indent=1) + "\n")
        cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
               "--configfile", str(preset_file), "--cores", str(cores), "--keep-going",
               "--rerun-incomplete", "--scheduler", "greedy", *extra]
        print(f"{run_options.BANNER}: rehearsing {preset_path} in {workdir} ({len(downloads)} "
              f"generated datasets served at {url})", file=out, flush=True)
        log_path = workdir / "snakemake.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if re.match(r"^\d+ of \d+ steps", line):
                    print(f"  {line.strip()} ({time.time() - t0:.0f} s)", file=out, flush=True)
            status = proc.wait()
    parsed = parse_log(log_path.read_text())
    rows = summary(parsed)
    print(format_summary(rows), file=out)
    for f in parsed["failed"]:
        print(failure_line(f, workdir), file=out)
    if status and not parsed["failed"]:  # Snakemake stopped before any job (a workflow error)
        said = [ln.strip() for ln in log_path.read_text().splitlines()
                if ln.strip() and not ln.startswith(("Traceback", "  File", "    "))]
        print(f"FAILED before any job: {said[-1][:300] if said else 'no output'} "
              f"(Snakemake's output: {log_path})", file=out)
    print(f"rehearsal of {preset_path}: {time.time() - t0:.0f} s wall, "
          f"{'FAILED' if status else 'passed'} (Snakemake's output: {log_path})", file=out)
    cost = subprocess.run([sys.executable, "-m", "lsqueeze", "cost", str(preset_path)],
                          capture_output=True, text=True)
    print(f"The real run's projected cost (lsqueeze cost {preset_path}):\n{cost.stdout.strip()}",
          file=out, flush=True)
    return 1 if status or parsed["failed"] else 0
