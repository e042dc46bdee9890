"""Fault trials: what a hostile or careless user does to a run, and what the pipeline must do in return.

Each test reproduces one trial (a killed job resumed after an edit, a corrupted or swapped model, a
GPU preset on a machine without a GPU, bad quoting, writes while parsing, validation gaps) and asserts
a clear one-line error or the right result, with nothing lost.
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

from lsqueeze import config as C
from lsqueeze.integrity import DeviceError, checkpoint_key
from lsqueeze.io import load_torch, save_torch
from lsqueeze.schema import ConfigError, validate
from lsqueeze.device import pick_device
from lsqueeze.train import _resumable, train

from conftest import REPO, run_snakemake

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: CPU reductions stay bitwise equal
SMALL_ARCH = {"name": "madry_cnn", "conv1": 4, "conv2": 8, "fc": 16}


def tiny_spec(steps=600, **recipe):
    cell = C.resolve_cell({}, {"dataset": "digits28", "steps": steps, "sigma": 0.3})
    return {"id": C.cell_id(cell), "cell": cell,
            "recipe": {**C.RECIPES["digits28"], "arch": SMALL_ARCH, **recipe}}


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
    err = capsys.readouterr().err
    assert err.count(f"not resuming from {state}") == 3 and "older version" in err


def test_changed_training_code_discards_the_checkpoint(digits, tmp_path, monkeypatch, one_thread):
    """A checkpoint saved by other training code (another loss, a fixed augmentation) is stale."""
    import lsqueeze.train as T

    spec = tiny_spec(steps=40)
    monkeypatch.setattr(T, "fingerprint", lambda stage: "old-code")
    # a stop request from the start: checkpoint after the first step, exit
    monkeypatch.setattr(T._Stop, "__init__", lambda self: setattr(self, "requested", True))
    with pytest.raises(SystemExit):
        train(spec, digits, tmp_path, progress=False)
    assert load_torch(tmp_path / "state.pt")["step"] == 1
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


FGSM = {"id": "fgsm", "paper": {"attack": "fgsm", "loss": "xent", "eps": 0.3},
        "pixel": {"attack": "fgsm", "loss": "xent", "eps": 0.3}}


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
    from lsqueeze.io import file_digest

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
                   swapped / "model.pt", spec_b["id"], "not for")
    assert not (tmp_path / "o.json").exists()


def test_transfer_checks_the_adversarial_set_against_its_source(models, digits, tmp_path):
    (spec_a, model_a), (spec_b, model_b) = models[0], models[1]
    adv = tmp_path / "adv.pt"
    assert reader("craft", spec_a, model_a, digits, adv).returncode == 0

    def transfer(adv_set, source_metrics):
        return cli("transfer", "--spec", json.dumps(spec_b), "--model", model_b, "--adv-set",
                   adv_set, "--source-metrics", source_metrics, "--out", tmp_path / "t.json")

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
def test_snakemake_gpu_preset_fails_fast_and_device_override_reruns_nothing(tmp_path, tiny_config):
    """A GPU preset on this CPU machine: the training job fails at once with the reason in its
    log. `--config device=auto` (a run option) runs it on the CPU; the black-box job is given the
    source model's metrics.json; switching `device` afterwards reruns nothing."""
    from lsqueeze.config import build_plan

    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["device"] = "cuda"
    preset = tmp_path / "gpu.yaml"
    preset.write_text(yaml.safe_dump(cfg))
    plan = build_plan(cfg)
    target, source, attack = sorted(plan.black)[0]
    model_dir = tmp_path / "results/tiny/models" / source
    # targets before --configfile, which takes every following word
    proc = run_snakemake(tmp_path, f"results/tiny/models/{source}/metrics.json",
                         "--configfile", preset, check=False)
    assert proc.returncode != 0 and not (model_dir / "model.pt").exists()
    log = (tmp_path / "results/tiny/logs/train" / f"{source}.log").read_text()
    assert "no CUDA GPU is visible" in log and "`device: cuda`" in log and "Traceback" not in log

    black = f"results/tiny/eval/{target}/black/{source.split('/')[1]}/{attack}.json"
    run_snakemake(tmp_path, black, "--configfile", preset, "--config", "device=auto")
    rec = json.loads((tmp_path / black).read_text())
    assert rec["source_id"] == source and rec["kind"] == "black"
    for device in ("cpu", "auto"):
        dry = run_snakemake(tmp_path, black, "-n", "--configfile", preset, "--config",
                            f"device={device}")
        assert "Nothing to be done" in dry.stdout + dry.stderr


# --- Paths with spaces, a dry run that writes nothing, a bad preset refused before any job ------

from pathlib import Path  # noqa: E402

from lsqueeze.cli import main as lsqueeze_main  # noqa: E402
from lsqueeze.schema import read_yaml, validate_file  # noqa: E402

TINY_TEXT = (REPO / "tests/config/tiny.yaml").read_text()


def preset_with(tmp_path, old=None, new=None, name="preset.yaml"):
    """The tiny preset with one text edit, written to tmp_path; (path, 1-based line of the edit)."""
    text, line = TINY_TEXT, None
    if old is not None:
        assert TINY_TEXT.count(old) == 1, old
        line = TINY_TEXT[:TINY_TEXT.index(old)].count("\n") + 1
        text = TINY_TEXT.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path, line


def listing(root):
    """Every path under root except Snakemake's own state directory."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".snakemake" not in p.relative_to(root).parts)


def validate_cli(capsys, path):
    """`lsqueeze validate path`: (exit code, the stderr lines)."""
    code = lsqueeze_main(["validate", str(path)])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.slow
def test_results_dir_with_a_space_runs_and_writes_nowhere_else(tmp_path):
    """Train, a white-box evaluation and the tables plan under `results/with space/`, with files
    where an unquoted `> {log}` would redirect (`results/with`, `results/da`): they survive."""
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    cfg = yaml.safe_load(TINY_TEXT)
    cfg.update(results="results/with space/tiny", data_dir="results/da ta")
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for name in ("with", "da"):
        (work / "results" / name).write_text("keep me\n")
    plan = C.build_plan(cfg)
    cell, attack = min(plan.white)
    res = work / "results/with space/tiny"
    targets = [res / f"eval/{cell}/white/{attack}.json", res / "plan/tables.json"]
    # targets relative to the working directory, as the rules write them, and before the
    # --configfile option, which takes several files
    run_snakemake(work, *(str(t.relative_to(work)) for t in targets), "--configfile", str(preset))
    for name in ("with", "da"):
        assert (work / "results" / name).read_text() == "keep me\n"
    assert json.loads(targets[0].read_text())["accuracy"] >= 0
    assert (res / f"models/{cell}/model.pt").is_file()
    assert (res / f"logs/train/{cell}.log").is_file()
    assert (work / "results/da ta/digits28/test.pt").is_file()
    written = json.loads(targets[1].read_text())
    assert {t["id"] for t in written["tables"]} == {t["id"] for t in plan.tables}
    assert not list(res.rglob("*.tmp"))  # the plan is written atomically, no temp file left


@pytest.mark.slow
def test_dry_run_writes_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    preset, _ = preset_with(tmp_path)
    before = listing(work)
    proc = run_snakemake(work, "-n", configfile=preset)
    assert "tables_plan" in proc.stdout  # the plan is a job of the run, not a side effect of -n
    assert listing(work) == before == []


@pytest.mark.slow
def test_dry_run_of_a_read_only_results_dir(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    archive.chmod(0o555)
    if os.access(archive, os.W_OK):  # root ignores file modes; nobody can create files in /proc
        archive = Path("/proc/lsqueeze-read-only-archive")
    preset, _ = preset_with(tmp_path, "results: results/tiny", f"results: {archive}/tiny")
    work = tmp_path / "work"
    work.mkdir()
    try:
        proc = run_snakemake(work, "-n", configfile=preset)
    finally:
        (tmp_path / "archive").chmod(0o755)
    assert "tables_plan" in proc.stdout
    assert not any((tmp_path / "archive").iterdir())


@pytest.mark.parametrize("old, new, key, words", [
    ("sigma: 0.3,", "sigma: .nan,", "cells.smooth.sigma", ["nan is not a finite number"]),
    ("sigma: 0.3,", "sigma: .inf,", "cells.smooth.sigma", ["inf is not a finite number"]),
    ("sigma: 0.3,", "sigma: 0.3, sigma: 0.4,", None, ["duplicate key 'sigma'"]),
    ('id: "2"', 'id: "1"', "tables.1.id", ["duplicate table id '1'"]),
    ("results: results/tiny", "results: ''", "results", ["names no directory"]),
    ("results: results/tiny", "results: /", "results", ["names no directory"]),
    ("data_dir: results/data", "data_dir: /", "data_dir", ["names no directory"]),
    ("train: {checkpoint_every: 50}", "train: {checkpoint_every: 50, device: gpu}", "train.device",
     ["'gpu' is not allowed"]),
    ("train: {checkpoint_every: 50}", "train: {checkpoint_every: 50, precison: bf16}",
     "train.precison", ["unknown key 'precison'"]),
    ("cells:\n", "recipes: {digits28: {arch: {name: resnet}}}\ncells:\n",
     "recipes.digits28.arch.name", ["'resnet' is not allowed", "madry_cnn"]),
    ("beta: 0.5,", "beta: 1e+9,", "cells.squeeze.beta", ["write 1.0e+09"]),
    ("sigma: 0.3,", "sigma: 0.3],", None, ["YAML syntax error", "expected ',' or '}'"]),
])
def test_bad_preset_is_one_line_naming_file_line_and_key(tmp_path, capsys, old, new, key, words):
    path, line = preset_with(tmp_path, old, new)
    code, err = validate_cli(capsys, path)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lsqueeze validate: {path}:"), err
    where = re.match(rf"lsqueeze validate: {re.escape(str(path))}:(\d+)", err[0])
    assert where and int(where.group(1)) == line, (line, err)  # the edited line
    for w in ([f"config error at {key}:"] if key else []) + words:
        assert w in err[0], (w, err)


def test_missing_or_unreadable_preset_is_one_line(tmp_path, capsys):
    code, err = validate_cli(capsys, tmp_path / "nope.yaml")
    assert code == 2 and err == [f"lsqueeze validate: {tmp_path / 'nope.yaml'}: no such file"]
    code, err = validate_cli(capsys, tmp_path)  # a directory
    assert code == 2 and len(err) == 1 and "cannot read" in err[0]


def test_duplicate_keys_are_refused_wherever_a_preset_is_read(tmp_path):
    path, _ = preset_with(tmp_path, "preset: tiny\n", "preset: tiny\npreset: other\n")
    for read in (C.load_config, validate_file, read_yaml):
        with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:\d+:1: duplicate key 'preset'"):
            read(path)
    from lsqueeze.restore import snapshot

    with pytest.raises(ConfigError, match="duplicate key"):
        snapshot(path, ["results"], root=tmp_path)


def test_numbers_spelled_with_a_plus_give_ids_the_workflow_matches(tmp_path):
    """1.0e+09 is written 1e+09 in ids (config.num): the wildcard patterns must accept it."""
    cfg = yaml.safe_load(TINY_TEXT)
    cfg["cells"]["squeeze"]["beta"] = 1.0e9
    cfg["attacks"]["fgsm_xent"]["eps"] = 1.0e9
    plan = C.build_plan(validate(cfg))
    assert any("sq1e+09" in c for c in plan.cells) and any("e1e+09" in a for a in plan.attacks)
    for cid in plan.cells:
        dataset, tag = cid.split("/")
        assert re.fullmatch(C.WILDCARDS["dataset"], dataset) and re.fullmatch(C.WILDCARDS["tag"], tag)
    assert all(re.fullmatch(C.WILDCARDS["attack"], a) for a in plan.attacks)
    common = (REPO / "workflow/rules/common.smk").read_text()
    for name, key in (("dataset", "dataset"), ("tag", "tag"), ("source", "tag"), ("attack", "attack")):
        assert f'{name}=WILDCARDS["{key}"]' in common  # one definition, shared with the check


@pytest.mark.slow
def test_snakemake_plans_a_cell_whose_id_has_a_plus(tmp_path):
    preset, _ = preset_with(tmp_path, "beta: 0.5,", "beta: 1.0e+9,")
    target = "results/tiny/models/digits28/ls0-sq1e+09-gn0.5-k60-s0/metrics.json"
    proc = run_snakemake(tmp_path, "-n", target, configfile=preset)
    assert "rule train:" in proc.stdout and target in proc.stdout


@pytest.mark.slow
def test_snakemake_refuses_a_duplicate_key_before_any_job(tmp_path):
    preset, line = preset_with(tmp_path, "sigma: 0.3,", "sigma: 0.3, sigma: 0.4,")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "-n", configfile=preset, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{preset}:{line}:" in out and "duplicate key 'sigma'" in out
    assert "Traceback" not in out
    assert listing(work) == []


@pytest.mark.parametrize("options, words", [
    ({"checkpoint_every": 0}, ["checkpoint_every", "less than the minimum of 1"]),
    ({"precison": "bf16"}, ["unknown key 'precison'"]),
    ({"device": "gpu"}, ["device", "'gpu' is not allowed"]),
    ({"eval_batch": float("nan")}, ["eval_batch", "not a finite number"]),
    ([1], ["is not of type 'object'"]),
])
def test_train_options_are_checked_before_any_work(tmp_path, capsys, options, words):
    out = tmp_path / "out"
    code = lsqueeze_main(["train", "--spec", json.dumps(tiny_spec()), "--data-dir", str(tmp_path),
                          "--out-dir", str(out), "--options", json.dumps(options)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("lsqueeze train: error: --options: ")
    assert all(w in err[0] for w in words), err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["train", "--spec", "[]", "--data-dir", "d", "--out-dir", "o"], ["--spec: expected a JSON object"]),
    (["train", "--spec", '{"id": "x"}', "--data-dir", "d", "--out-dir", "o"], ["missing key 'cell'"]),
    (["evaluate", "--spec", '{"id": "x", "cell": {}, "recipe": {}}', "--model", "m", "--data-dir",
      "d", "--attack", '{"id": "a"}', "--out", "o"], ["--attack: missing key 'paper'"]),
    (["train", "--spec", "{", "--data-dir", "d", "--out-dir", "o"], ["--spec: not valid JSON"]),
])
def test_bad_json_arguments_are_one_line(capsys, argv, words):
    try:
        code = lsqueeze_main(argv)
    except SystemExit as exc:  # argparse's own errors: usage, then one error line
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"lsqueeze {argv[0]}: error: ") and all(w in err[-1] for w in words), err
