"""Fault trials: what a hostile or careless user does to a run, and what the pipeline must do in return.

Each test reproduces one trial (a killed job resumed after an edit, a corrupted or swapped model, a
GPU preset on a machine without a GPU) and asserts a clear one-line error or the right result,
with nothing lost. Trials that fail before any job runs are in test_validation.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import REPO, SMALL_ARCH, tiny_spec
from lsqueeze.jobs.train import _resumable, train
from lsqueeze.plan import build as C
from lsqueeze.plan.schema import ConfigError, validate
from lsqueeze.runtime.devices import pick_device
from lsqueeze.runtime.files import load_torch, save_torch
from lsqueeze.runtime.integrity import DeviceError, checkpoint_key

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: CPU reductions stay bitwise equal


def cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "lsqueeze", *map(str, args)], env=ENV,
                          capture_output=True, text=True, check=check)


def cli_train(spec, data, out, **options):
    return cli("train", "--spec", json.dumps(spec), "--data-dir", data, "--out-dir", out,
               "--no-progress", "--options", json.dumps(options))


def weights_equal(a, b):
    a, b = load_torch(a), load_torch(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- a killed training job, rerun after an edit --------------------------------------------------

@pytest.fixture(scope="module")
def killed(digits, tmp_path_factory):
    """A CLI training run killed (SIGKILL) after its first checkpoints: state.pt, no model."""
    out = tmp_path_factory.mktemp("killed")
    cmd = [sys.executable, "-m", "lsqueeze", "train", "--spec", json.dumps(tiny_spec()),
           "--data-dir", str(digits), "--out-dir", str(out), "--no-progress",
           "--options", json.dumps({"checkpoint_every": 20})]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0 and (out / "state.pt").exists()
    assert not (out / "model.pt").exists()
    return out


def copy_of(killed, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(killed, dst)
    return dst


def test_edited_lr_after_a_kill_starts_afresh(digits, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    new = tiny_spec(lr=3e-3)
    done = cli_train(new, digits, out)
    assert done.returncode == 0, done.stderr
    assert f"not resuming from {out / 'state.pt'}" in done.stderr and "another spec" in done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from"] == 0 and m["spec"]["recipe"]["lr"] == 3e-3
    assert not (out / "state.pt").exists()
    fresh = tmp_path / "fresh"
    assert cli_train(new, digits, fresh).returncode == 0
    assert weights_equal(out / "model.pt", fresh / "model.pt")


def test_edited_architecture_after_a_kill_starts_afresh(digits, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    done = cli_train(tiny_spec(steps=100, arch={**SMALL_ARCH, "fc": 24}), digits, out)
    assert done.returncode == 0, done.stderr
    assert "size mismatch" not in done.stderr and "not resuming from" in done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from"] == 0 and load_torch(out / "model.pt")["fc1.weight"].shape[0] == 24


def test_changed_run_options_still_resume_to_identical_weights(digits, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    done = cli_train(tiny_spec(), digits, out, checkpoint_every=7, device="cpu", eval_batch=64)
    assert done.returncode == 0, done.stderr
    assert "not resuming" not in done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] > 0
    ref = tmp_path / "ref"
    assert cli_train(tiny_spec(), digits, ref).returncode == 0
    assert weights_equal(out / "model.pt", ref / "model.pt")


def test_checkpoint_of_other_code_or_older_format_is_not_resumed(tmp_path, capsys):
    spec = tiny_spec()
    assert checkpoint_key(spec, "code-a") != checkpoint_key(spec, "code-b")
    runs = {**spec, "train": {"checkpoint_every": 5, "device": "cpu", "precision": "fp32"}}
    assert checkpoint_key(runs, "code-a") == checkpoint_key(spec, "code-a")  # run options: no
    state = tmp_path / "state.pt"
    save_torch({"key": checkpoint_key(spec, "code-a"), "step": 3}, state)
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu")["step"] == 3
    assert _resumable(state, checkpoint_key(spec, "code-b"), "cpu") is None
    save_torch({"step": 3}, state)  # written before checkpoints carried a key
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu") is None
    state.write_bytes(b"not a checkpoint")
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu") is None
    # saved on a GPU, resumed on a CPU: its generator state would not load there
    save_torch({"key": checkpoint_key(spec, "code-a"), "step": 3, "device_type": "cuda"}, state)
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu") is None
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cuda")["step"] == 3
    # trained so far in bf16, this run in fp32: the finished model would be neither
    save_torch({"key": checkpoint_key(spec, "code-a"), "step": 3, "device_type": "cpu",
                "precision": "bf16"}, state)
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu", "fp32") is None
    assert _resumable(state, checkpoint_key(spec, "code-a"), "cpu", "bf16")["step"] == 3
    err = capsys.readouterr().err
    assert err.count(f"not resuming from {state}") == 5 and "older version" in err
    assert "saved on cuda and this run trains on cpu" in err
    assert "trained in bf16 and this run trains in fp32 (set train.precision: bf16" in err


def test_changed_training_code_discards_the_checkpoint(digits, tmp_path, monkeypatch, one_thread):
    """A checkpoint saved by other training code (another loss, a fixed augmentation) is stale."""
    import lsqueeze.jobs.train as T

    spec = tiny_spec(steps=40)
    monkeypatch.setattr(T, "fingerprint", lambda stage: "old-code")
    # a stop request from the start: checkpoint after the first step, exit
    monkeypatch.setattr(T._Stop, "__init__", lambda self: setattr(self, "requested", True))
    with pytest.raises(SystemExit):
        train(spec, digits, tmp_path, progress=False)
    saved = load_torch(tmp_path / "state.pt")
    assert saved["step"] == 1 and saved["device_type"] == "cpu" and saved["precision"] in ("bf16", "fp32")
    monkeypatch.undo()
    m = train(spec, digits, tmp_path, progress=False)
    assert m["resumed_from"] == 0 and m["steps_done"] == 40


# --- a model and its readers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(digits, tmp_path_factory, one_thread):
    """Two trained cells, laid out as the pipeline lays them out: <cell>/{model.pt, metrics.json}."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for seed in (0, 1):
        spec = tiny_spec(steps=30)
        spec["cell"] = {**spec["cell"], "seed": seed}
        spec["id"] = C.cell_id(spec["cell"])
        train(spec, digits, root / spec["id"], progress=False)
        out[seed] = (spec, root / spec["id"] / "model.pt")
    return out


FGSM = {"id": "fgsm-xent-e0.3", "paper": {"attack": "fgsm", "loss": "xent", "eps": 0.3},
        "pixel": {"attack": "fgsm", "loss": "xent", "eps": 0.3}}
PGD = {"attack": "pgd", "loss": "xent", "eps": 0.3, "steps": 5, "step_size": 0.1,
       "random_start": True}


def reader(command, spec, model, digits, out):
    """The CLI command line of each job that reads a model."""
    common = ["--spec", json.dumps(spec), "--model", model, "--data-dir", digits]
    extra = {"evaluate": ["--attack", json.dumps(FGSM), "--n", 20],
             "craft": ["--attack", json.dumps(FGSM), "--n", 20],
             "analyze": ["--n", 20], "activations": ["--n", 20],
             "landscape": ["--points", 3, "--images", 1]}[command]
    return cli(command, *common, *extra, "--out", out)


def one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"lsqueeze \w+: error: ", last) and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert str(w) in last, (w, last)


def test_metrics_record_the_model_hash_and_cell(models):
    from lsqueeze.runtime.files import file_digest

    spec, model = models[0]
    m = json.loads(model.with_name("metrics.json").read_text())
    assert m["id"] == spec["id"] and m["model_sha256"] == file_digest(model)


@pytest.mark.parametrize("command", ["evaluate", "craft", "analyze", "landscape", "activations"])
def test_corrupted_model_is_refused_by_every_reader(models, digits, tmp_path, command):
    spec, model = models[0]
    bad = tmp_path / spec["id"] / "model.pt"
    shutil.copytree(model.parent, bad.parent)
    data = bytearray(bad.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    one_line_error(reader(command, spec, bad, digits, out), bad, "sha256", "corrupted or replaced")
    assert not out.exists()
    # the intact copy is accepted (the check is not a refusal of everything)
    assert reader(command, spec, model, digits, out).returncode == 0 and out.exists()


def test_model_copied_from_another_cell_is_refused(models, digits, tmp_path):
    (spec_a, model_a), (spec_b, model_b) = models[0], models[1]
    swapped = tmp_path / spec_a["id"]
    shutil.copytree(model_a.parent, swapped)
    shutil.copy(model_b, swapped / "model.pt")  # only the weights: the hash does not match
    one_line_error(reader("evaluate", spec_a, swapped / "model.pt", digits, tmp_path / "o.json"),
                   swapped / "model.pt", "sha256")
    shutil.copy(model_b.with_name("metrics.json"), swapped / "metrics.json")  # and its record
    one_line_error(reader("evaluate", spec_a, swapped / "model.pt", digits, tmp_path / "o.json"),
                   swapped / "metrics.json", "replaced")  # the record's own digest is A's
    for name in ("metrics.json.sha256", "model.pt.sha256"):  # copied with their digests
        shutil.copy(model_b.with_name(name), swapped / name)
    one_line_error(reader("evaluate", spec_a, swapped / "model.pt", digits, tmp_path / "o.json"),
                   swapped / "model.pt", spec_b["id"], "not for")
    assert not (tmp_path / "o.json").exists()


def test_transfer_checks_the_adversarial_set_against_its_source(models, digits, tmp_path):
    (spec_a, model_a), (spec_b, model_b) = models[0], models[1]
    adv = tmp_path / "adv.pt"
    assert reader("craft", spec_a, model_a, digits, adv).returncode == 0

    def transfer(adv_set, source_metrics, attack=FGSM):
        return cli("transfer", "--spec", json.dumps(spec_b), "--model", model_b, "--adv-set",
                   adv_set, "--source-metrics", source_metrics, "--attack", json.dumps(attack),
                   "--out", tmp_path / "t.json")

    ok = transfer(adv, model_a.with_name("metrics.json"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "t.json").read_text())["source_id"] == spec_a["id"]
    (tmp_path / "t.json").unlink()
    # a set crafted on A, read as if it came from B
    one_line_error(transfer(adv, model_b.with_name("metrics.json")), adv, spec_a["id"],
                   spec_b["id"])
    # A retrained since the set was crafted (its metrics.json records another model hash)
    retrained = tmp_path / "retrained" / "metrics.json"
    retrained.parent.mkdir()
    record = json.loads(model_a.with_name("metrics.json").read_text())
    retrained.write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    one_line_error(transfer(adv, retrained), adv, "another version")
    # a set crafted with FGSM, transferred for a PGD column (two sets swapped on disk)
    pgd = {"id": "pgd-xent-n5-e0.3-a0.1-r1-rand", "paper": PGD, "pixel": PGD}
    one_line_error(transfer(adv, model_a.with_name("metrics.json"), pgd), adv, FGSM["id"],
                   pgd["id"], "swapped")
    # images altered after crafting
    blob = load_torch(adv)
    blob["x_adv"][0, 0, 14, 14] = 1.0 - blob["x_adv"][0, 0, 14, 14]
    save_torch(blob, tmp_path / "edited.pt")
    one_line_error(transfer(tmp_path / "edited.pt", model_a.with_name("metrics.json")),
                   tmp_path / "edited.pt", "digest")
    assert not (tmp_path / "t.json").exists()


# --- a GPU preset on a machine without a GPU -----------------------------------------------------

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")


@needs_no_gpu
def test_gpu_preset_fails_fast_without_a_gpu(capsys):
    with pytest.raises(DeviceError, match=r"no CUDA GPU is visible.*`device: cuda`.*device: auto"):
        pick_device("auto", "cuda")
    with pytest.raises(DeviceError, match="'cuda:1'"):
        pick_device("cuda:1", "auto")
    assert pick_device("auto", "cpu").type == "cpu" and capsys.readouterr().err == ""
    assert pick_device("auto", "auto").type == "cpu"
    assert "warning: no CUDA GPU" in capsys.readouterr().err  # auto: a CPU is fine, but say so


@needs_no_gpu
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_gpu_job_fails_fast_in_one_line(models, digits, tmp_path, command):
    spec, model = models[0]
    t0 = time.time()
    if command == "train":
        proc = cli("train", "--device", "cuda", "--spec", json.dumps(spec), "--data-dir", digits,
                   "--out-dir", tmp_path)
    else:
        proc = cli("evaluate", "--device", "cuda", "--spec", json.dumps(spec), "--model", model,
                   "--data-dir", digits, "--attack", json.dumps(FGSM), "--out", tmp_path / "o.json")
    one_line_error(proc, "no CUDA GPU is visible", "device: cuda")
    assert time.time() - t0 < 60 and not any(tmp_path.iterdir())


def test_preset_device_is_schema_checked():
    cfg = yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text())
    for ok in ("cuda", "auto", "cpu"):
        validate({**cfg, "device": ok})
    with pytest.raises(ConfigError, match=r"device.*'gpu'"):
        validate({**cfg, "device": "gpu"})
    for cpu_preset in ("params/demo.yaml", "params/mnist_cpu.yaml", "tests/config/tiny.yaml"):
        assert yaml.safe_load((REPO / cpu_preset).read_text())["device"] == "auto"


@needs_no_gpu
@pytest.mark.slow
# --- files changed after they were written -------------------------------------------------------

def flip_byte(path, at=0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_written_file_records_its_digest(tmp_path):
    import pandas as pd

    from lsqueeze.runtime.files import (
        CorruptFileError,
        digest_path,
        file_digest,
        read_json,
        read_parquet,
        save_json,
        save_parquet,
    )

    save_json({"accuracy": 0.5}, tmp_path / "e.json")
    save_parquet(pd.DataFrame({"value": [0.25, 0.5]}), tmp_path / "t.parquet")
    save_torch({"x": torch.arange(10)}, tmp_path / "s.pt")
    for name in ("e.json", "t.parquet", "s.pt"):
        line = digest_path(tmp_path / name).read_text()
        assert line == f"{file_digest(tmp_path / name)}  {name}\n"   # sha256sum's format
    # one flipped bit in the number: a different accuracy, refused instead of read
    (tmp_path / "e.json").write_text((tmp_path / "e.json").read_text().replace("0.5", "0.7"))
    with pytest.raises(CorruptFileError, match=r"e\.json: its content does not match"):
        read_json(tmp_path / "e.json")
    flip_byte(tmp_path / "t.parquet", at=0.2)
    with pytest.raises(CorruptFileError, match=r"t\.parquet.*--forcerun .*t\.parquet`"):
        read_parquet(tmp_path / "t.parquet")
    flip_byte(tmp_path / "s.pt")
    with pytest.raises(CorruptFileError, match=r"s\.pt"):
        load_torch(tmp_path / "s.pt")
    # a file written by an older version (no digest beside it) is still read
    save_json({"a": 1}, tmp_path / "old.json")
    digest_path(tmp_path / "old.json").unlink()
    assert read_json(tmp_path / "old.json") == {"a": 1}


def test_a_flipped_bit_in_a_checkpoint_is_not_resumed(digits, killed, tmp_path):
    out = copy_of(killed, tmp_path)
    flip_byte(out / "state.pt")  # torch itself would load it: the zip's CRCs are not checked
    done = cli_train(tiny_spec(), digits, out)
    assert done.returncode == 0, done.stderr
    assert f"not resuming from {out / 'state.pt'}" in done.stderr
    assert "does not match the sha256" in done.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] in (None, 0)


def test_changed_labels_in_a_split_are_refused(models, digits, tmp_path):
    spec, model = models[0]
    data = tmp_path / "data"
    shutil.copytree(digits, data)
    blob = torch.load(data / "test.pt", weights_only=True)
    blob["y"][:5] = (blob["y"][:5] + 1) % 10
    with open(data / "test.pt", "wb") as fh:  # edited in place: the recorded digest stays
        torch.save(blob, fh)
    one_line_error(reader("evaluate", spec, model, data, tmp_path / "o.json"), "test.pt",
                   "does not match the sha256", "--force", "test.pt` (nothing made from it reruns)")
    assert not (tmp_path / "o.json").exists()


def test_a_flipped_byte_in_the_aggregated_tables_is_refused(tiny_run, tmp_path):
    tables = tmp_path / "tables"
    shutil.copytree(tiny_run / "results/tiny/tables", tables)
    plan = tiny_run / "results/tiny/plan/tables.json"
    args = ["claims", "--plan", plan, "--claims", REPO / "src/lsqueeze/data/claims.yaml", "--tables", tables,
            "--out-dir", tmp_path / "out"]
    assert cli(*args).returncode == 0
    flip_byte(tables / "measurements.parquet", at=0.3)
    one_line_error(cli(*args), "measurements.parquet", "does not match the sha256")
