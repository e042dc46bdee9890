"""Fault trials on a finished run's files: a split edited on disk, a record copied to another
cell's path. Each ends with nothing lost and either the right result or a one-line error naming
the file (the companion of test_reliability.py, which tries single jobs)."""

import hashlib
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from lsqueeze.plan import build as C
from lsqueeze.plan.build import build_plan
from lsqueeze.plan.layout import Layout
from lsqueeze.plan.perexample import pack
from lsqueeze.runtime.files import save_torch
from lsqueeze.runtime.integrity import IntegrityError, install_splits


def lsqueeze(*args):
    return subprocess.run([sys.executable, "-m", "lsqueeze", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path, at=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def split_errors(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("lsqueeze: error:")]


@pytest.fixture(scope="module")
def layout(tiny_config):
    return Layout(build_plan(yaml.safe_load(tiny_config.read_text())))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config, layout):
    """The tiny preset's models only (data + train), trained once through Snakemake."""
    work = tmp_path_factory.mktemp("trained")
    run_snakemake(work, f"--configfile={tiny_config}", *[layout.model(c) for c in layout.plan.cells])
    return work


def test_an_edited_split_deletes_no_model_and_is_rebuilt(trained, tiny_config, layout, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(trained, work, symlinks=True)  # .snakemake's records and the times with it
    targets = [layout.model(c) for c in layout.plan.cells]
    models = [work / t for t in targets]
    before = {m: sha(m) for m in models}
    test_set = work / layout.split_dir("digits28") / "test.pt"
    original = sha(test_set)
    flip_byte(test_set)
    preset = f"--configfile={tiny_config}"  # one file: the targets follow it
    # A run with no job left to read the split still says so at once, with the repair.
    said = split_errors(run_snakemake(work, preset, "-n", *targets))
    assert len(said) == 1 and said[0].startswith(
        "lsqueeze: error: results/data/digits28/test.pt: its content does not match the sha256")
    assert said[0].endswith("--force results/data/digits28/test.pt` (nothing made from it reruns)")
    # The default profile keeps going: every job Snakemake would rerun loses its outputs first.
    # One evaluation (never run yet) reads the split and must refuse it in one line.
    evaluation = layout.white("digits28/ls0-sq0-gn0-k60-s0", "fgsm-xent-e0.3")
    run = run_snakemake(work, preset, "--keep-going", *targets, evaluation, check=False)
    assert run.returncode != 0 and not (work / evaluation).exists()
    assert {m: sha(m) for m in models if m.exists()} == before  # every model still on disk
    log = next((work / "results/store/logs/white").rglob("fgsm-xent-e0.3.log")).read_text()
    (error,) = [line for line in log.splitlines() if "error" in line]
    assert error.startswith("lsqueeze evaluate: error: results/data/digits28/test.pt: its content")
    repair = re.search(r"`(snakemake [^`]+)`", error).group(1)
    assert repair.endswith("--force results/data/digits28/test.pt"), repair
    # the command the error gives rebuilds the split as it was, and reruns nothing else
    args = repair.replace("--configfile <preset>", "").split()[1:]
    rebuilt = run_snakemake(work, preset, *args)
    assert "1 of 1 steps" in rebuilt.stderr + rebuilt.stdout
    assert sha(test_set) == original
    dry = run_snakemake(work, preset, "-n", *targets)
    assert "Nothing to be done" in dry.stdout + dry.stderr and not split_errors(dry)
    assert {m: sha(m) for m in models} == before


def test_a_rebuilt_split_that_differs_is_refused(tmp_path):
    """The other side of reading splits as `ancient`: a rebuild that would change the split under
    the models made from it is refused, and the recorded split stays."""
    out, stage = tmp_path / "digits28", tmp_path / "stage"
    for split, n in (("train", 8), ("test", 4)):
        save_torch({"x": torch.zeros(n, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(n)},
                   out / f"{split}.pt")
    kept = sha(out / "test.pt")
    save_torch({"x": torch.zeros(8, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(8)},
               stage / "train.pt")
    save_torch({"x": torch.ones(4, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(4)},
               stage / "test.pt")
    staged = {"train": stage / "train.pt", "test": stage / "test.pt"}
    with pytest.raises(IntegrityError, match=r"test\.pt: the rebuilt split differs .* delete "):
        install_splits(staged, out)
    assert sha(out / "test.pt") == kept and (stage / "train.pt").exists()  # nothing moved
    # the same split rebuilt goes into place, its recorded digest untouched
    save_torch({"x": torch.zeros(4, 1, 2, 2, dtype=torch.uint8), "y": torch.zeros(4)},
               stage / "test.pt")
    side = out / "test.pt.sha256"
    mtime = side.stat().st_mtime_ns
    install_splits(staged, out)
    assert sha(out / "test.pt") == kept and side.stat().st_mtime_ns == mtime


# --- a record copied to another cell's path ------------------------------------------------------

def aggregate_args(run, layout, extra=()):
    res = run / layout.results
    return ["aggregate", "--plan", res / "plan/tables.json", "--reference",
            REPO / "src/lsqueeze/data/paper_tables.csv", "--out-dir", run / "out", "--inputs",
            *[run / f for f in layout.fragments()], *extra]


def test_a_record_copied_into_another_cells_folder_is_refused(tiny_run, layout, tmp_path):
    """Its digest travels with it, so only its path can tell: the aggregation checks the cell, the
    attack and the images of every record against the path it reads it from."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "results", run / "results", symlinks=True)
    assert lsqueeze(*aggregate_args(run, layout)).returncode == 0  # the control
    aa = "aa-standard-e0.3"
    source = run / layout.white("digits28/ls0-sq0.5-gn0.5-k60-s0", aa)
    copied = run / layout.white("digits28/ls0-sq0.5-gn0.5-k60-s1", aa)
    copied.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".sha256"):
        shutil.copy(f"{source}{suffix}", f"{copied}{suffix}")
    done = lsqueeze(*aggregate_args(run, layout, [copied]))
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith(f"lsqueeze aggregate: error: {copied}: holds the record of cell_id "
                             "'digits28/ls0-sq0.5-gn0.5-k60-s0'"), err
    assert f"--forcerun {copied}" in err[0]
    # the same record copied under another attack's name in its own cell
    other = source.with_name("pgd-xent-n100-e0.3-a0.01-r1-rand.json")
    for suffix in ("", ".sha256"):
        shutil.copy(f"{source}{suffix}", f"{other}{suffix}")
    done = lsqueeze(*aggregate_args(run, layout))
    assert done.returncode == 2 and f"{other}: holds the record of attack_id '{aa}'" in done.stderr


BLACK = {"kind": "black", "source_id": "digits28/other"}


@pytest.mark.parametrize("path, base, edit, words", [
    ("eval-n50/white/fgsm-xent-e0.3.json", {}, {}, ["n 100", "n 50"]),
    ("eval-n100/white/fgsm-xent-e0.3.json", {}, {"per_example": pack([True] * 100, start=100)},
     ["test images 100..199, not the first 100"]),
    ("eval-n100/white/fgsm-xent-e0.3.json", {}, {"attack": {"id": "fgsm-cw-e0.3"}},
     ["attack_id 'fgsm-cw-e0.3'"]),
    ("eval-n100/black/other/fgsm-xent-e0.3.json", BLACK, {"source_id": "digits28/natural"},
     ["source_id 'digits28/natural'"]),
    ("eval-n100/black/other/fgsm-xent-e0.3.json", BLACK, {"kind": "white"}, ["kind 'white'"]),
    ("eval-n100/white/fgsm-xent-e0.3.json", {},
     {"cell": {**C.resolve_cell({}, {"dataset": "digits28", "method": "natural", "steps": 60}),
               "seed": 1}}, ["cell 'digits28/ls0-sq0-gn0-k60-s1'"]),
])
def test_a_record_must_be_the_one_its_path_names(tmp_path, path, base, edit, words):
    from lsqueeze.plan.records import RecordMismatch, check_record
    from lsqueeze.runtime.files import digest_path

    cell = C.resolve_cell({}, {"dataset": "digits28", "method": "natural", "steps": 60})
    rec = {"kind": "white", "cell_id": C.cell_id(cell), "cell": cell, "n": 100,
           "attack": {"id": "fgsm-xent-e0.3"}, "per_example": pack([True] * 100), **base}
    folder = tmp_path / f"results/store/digits28/r2ba8b7d6/{C.cell_id(cell).split('/')[1]}"
    for name in {path, path.replace("n50", "n100")}:  # the records' digests (their bytes: fine)
        digest_path(folder / name).parent.mkdir(parents=True, exist_ok=True)
        digest_path(folder / name).write_text("0" * 64 + "\n")
    assert check_record(f"{folder}/{path.replace('n50', 'n100')}", dict(rec)) == rec  # control
    with pytest.raises(RecordMismatch) as err:
        check_record(f"{folder}/{path}", {**rec, **edit})
    assert str(err.value).startswith(f"{folder}/{path}: ") and "\n" not in str(err.value)
    assert all(w in str(err.value) for w in words), err.value


def test_two_trainings_of_one_cell_do_not_run_at_once(digits, tmp_path):
    """Two checkouts sharing one store each hold their own Snakemake lock: the cell's own lock
    stops the second training before it touches the first one's checkpoint."""
    import json

    from conftest import tiny_spec
    from lsqueeze.runtime.files import exclusive

    out = tmp_path / "cell"
    args = ["train", "--spec", json.dumps(tiny_spec(steps=20)), "--data-dir", digits,
            "--out-dir", out, "--no-progress"]
    with exclusive(out):  # the first training, still running
        done = lsqueeze(*args)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1, done.stderr
        assert err[0].startswith(f"lsqueeze train: error: {out}: another training of this cell "
                                 "is running"), err
        assert not out.exists()  # nothing written
    done = lsqueeze(*args)  # once it is over, the cell trains
    assert done.returncode == 0, done.stderr
    assert (out / "model.pt").exists()


def test_a_finished_run_in_another_checkout_reruns_nothing(tiny_run, tiny_config, tmp_path):
    """The checkout's own inputs (the published values, the claims) are given by content: a clone
    in another directory, its files newer than the results, finds the run finished."""
    from conftest import copy_checkout

    clone = copy_checkout(tmp_path / "clone")
    for name in ("paper_tables.csv", "claims.yaml"):
        (clone / "src" / "lsqueeze" / "data" / name).touch()  # checked out after the results
    work = tmp_path / "run"
    shutil.copytree(tiny_run, work, symlinks=True)
    dry = run_snakemake(work, "-n", configfile=tiny_config, snakefile=clone / "Snakefile")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
    # an edit to the published values reruns what reads them, and only that
    csv = clone / "src" / "lsqueeze" / "data" / "paper_tables.csv"
    csv.write_text(csv.read_text() + "\n")
    dry = run_snakemake(work, "-n", configfile=tiny_config, snakefile=clone / "Snakefile")
    jobs = set(re.findall(r"^rule (\w+):", dry.stdout, re.M))
    assert {"tables_plan", "aggregate"} <= jobs and "train" not in jobs, dry.stdout[-3000:]


def test_a_job_run_by_hand_from_a_checkout_runs_that_checkouts_code(tmp_path):
    """`snakemake -p` prints `python -m lsqueeze ...`; the workflow runs it with the Snakefile's
    src/ first on PYTHONPATH, a hand-run shell with whatever package the environment installed:
    run from a checkout, the command runs that checkout's code, as the workflow did."""
    from conftest import copy_checkout

    clone = copy_checkout(tmp_path / "clone")
    init = clone / "src" / "lsqueeze" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9+'))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LSQUEEZE_CHECKOUT_SRC")}
    env["PYTHONPATH"] = str(REPO / "src")  # the package the environment installed: this one
    ran = subprocess.run([sys.executable, "-m", "lsqueeze", "--version"], cwd=clone, env=env,
                         capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.startswith("lsqueeze 9.9.9+"), ran
    ran = subprocess.run([sys.executable, "-m", "lsqueeze", "--version"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)  # not in a checkout: the installed one
    assert ran.returncode == 0 and not ran.stdout.startswith("lsqueeze 9.9.9"), ran


def test_a_file_nothing_vouches_for_is_not_used(tmp_path):
    """A digest removed with the file it vouched for edited: a store record is refused, a
    checkpoint not resumed; a file written by another tool (no digest at all) is still read."""
    from lsqueeze.jobs.train import _resumable
    from lsqueeze.plan.records import RecordMismatch, check_record
    from lsqueeze.runtime.files import CorruptFileError, digest_path, load_torch, save_json

    cell = C.resolve_cell({}, {"dataset": "digits28", "method": "natural", "steps": 60})
    metrics = tmp_path / f"results/store/{cell['dataset']}/r2ba8b7d6/{C.cell_id(cell)[9:]}/metrics.json"
    record = {"id": C.cell_id(cell), "spec": {"id": C.cell_id(cell), "cell": cell}}
    save_json(record, metrics)
    assert check_record(metrics, record) == record
    digest_path(metrics).unlink()
    with pytest.raises(RecordMismatch, match=r"metrics\.json: no sha256 recorded beside it .*"
                                             r"--forcerun .*metrics\.json`"):
        check_record(metrics, record)
    state = tmp_path / "state.pt"
    save_torch({"step": torch.tensor(5)}, state)
    digest_path(state).unlink()
    with pytest.raises(CorruptFileError, match=r"state\.pt: no sha256 recorded beside it"):
        load_torch(state)
    assert _resumable(state, "any key", "cpu") is None  # trained from step 0 instead
    other = tmp_path / "other.pt"  # not a checkpoint: read unchecked, as before
    save_torch({"x": torch.zeros(2)}, other)
    digest_path(other).unlink()
    assert torch.equal(load_torch(other)["x"], torch.zeros(2))


def test_a_kill_while_a_file_is_replaced_leaves_a_digest_for_it(tmp_path, monkeypatch):
    """Between the rename and the final digest, the digest beside the file lists both the old
    and the new content: whichever file a kill leaves there is vouched for."""
    from lsqueeze.runtime import files

    path = tmp_path / "state.pt"
    save_torch({"step": torch.tensor(1)}, path)
    old = sha(path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies right after the rename

    monkeypatch.setattr(files, "record_digest", killed)
    with pytest.raises(KeyboardInterrupt):
        save_torch({"step": torch.tensor(2)}, path)
    assert sha(path) != old
    assert files.load_torch(path)["step"] == 2  # the new file, vouched for
    lines = files.digest_path(path).read_text().splitlines()
    assert [line.split()[0] for line in lines] == [sha(path), old]


def test_a_worst_case_over_fewer_attacks_than_its_table_shows_is_said(tiny_run, layout, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "results", run / "results", symlinks=True)
    done = lsqueeze(*aggregate_args(run, layout))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr  # the control
    aa = str(run / layout.white("digits28/ls0-sq0.5-gn0.5-k60-s0", "aa-standard-e0.3"))
    args = [a for a in aggregate_args(run, layout) if str(a) != aa]  # a hand-edited input list
    done = lsqueeze(*args)
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning == ("lsqueeze aggregate: warning: table strong, digits28/ls0-sq0.5-gn0.5-k60-s0:"
                       " the worst case at ε 0.3 leaves out AutoAttack (no record among the "
                       "inputs, or one evaluated on other test images than the rest)")
