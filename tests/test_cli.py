"""The command line as a user meets it: --version, help on every flag, the figure kinds listed."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, tiny_spec
from lsqueeze import __version__
from lsqueeze.cli import _parser, main
from lsqueeze.registries.figure_kinds import FIGURE_KINDS


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"lsqueeze {__version__}"


def test_every_flag_of_every_command_has_help():
    commands = _parser()._subparsers._group_actions[0].choices
    assert len(commands) >= 15
    missing = [f"{name} {a.dest}" for name, sub in commands.items() for a in sub._actions
               if not (a.help or "").strip()]
    assert not missing, missing
    helps = {name: sub.format_help() for name, sub in commands.items()}
    assert "--log-every SECONDS" in helps["train"] and "--remote" in helps["pull"]


def test_figure_kind_lists_the_kinds_and_rejects_others(capsys):
    assert "linear" in FIGURE_KINDS
    with pytest.raises(SystemExit):
        main(["figure", "--kind", "pie", "--out", "x.png"])
    err = capsys.readouterr().err
    assert "invalid choice: 'pie'" in err and "landscape_random" in err


def test_help_does_not_import_matplotlib():
    code = ("import sys; from lsqueeze.cli import _parser; _parser().format_help(); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_command_is_declared_once():
    """Name, help, flags, GPU flag and handler in one declaration (lsqueeze.commands): the parser
    has exactly the declared commands, and --device exactly on the GPU ones."""
    from lsqueeze.commandline import COMMANDS

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)
    with_device = {name for name, p in sub.choices.items()
                   if any(a.dest == "device" for a in p._actions)}
    assert with_device == {name for name, c in COMMANDS.items() if c.gpu} == {
        "train", "evaluate", "craft", "analyze", "landscape", "activations"}
    assert all(callable(c.handler) and c.help for c in COMMANDS.values())


# --- misuse is one line, before any work ---------------------------------------------------------

def _one_line_error(capsys, argv):
    """(exit code, last stderr line) of `lsqueeze argv`; argparse's own errors print the usage
    first, and nothing else may come before the error line (no traceback)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith(("usage:", " ")) for line in err[:-1]), err
    assert err[-1].startswith(f"lsqueeze {argv[0]}: error: "), err
    return code, err[-1]


@pytest.fixture
def job_files(tmp_path):
    """Stand-ins for a model and a dataset directory: the checks below refuse before reading them."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.pt", "test.pt"):
        (data / name).write_bytes(b"")
    model = tmp_path / "model.pt"
    model.write_bytes(b"")
    (tmp_path / "a_file").write_text("not a directory\n")
    return tmp_path, data, model


SPEC = '{"id": "digits28/x", "cell": {"dataset": "digits28", "steps": 1}, "recipe": {}}'
ATTACK = ('{"id": "fgsm-xent-e0.3", "paper": {"attack": "fgsm", "eps": 0.3}, '
          '"pixel": {"attack": "fgsm", "eps": 0.3}}')


@pytest.mark.parametrize("extra, words", [
    (["--n", "-5"], ["argument --n: -5 is less than 1"]),
    (["--n", "0"], ["argument --n: 0 is less than 1"]),
    (["--n", "ten"], ["argument --n: 'ten' is not a whole number"]),
    (["--batch-size", "0"], ["argument --batch-size: 0 is less than 1"]),
])
def test_evaluate_counts_must_be_positive(job_files, capsys, extra, words):
    tmp, data, model = job_files
    out = tmp / "o.json"
    code, line = _one_line_error(capsys, ["evaluate", "--spec", SPEC, "--model", model,
                                          "--data-dir", data, "--attack", ATTACK, "--out", out,
                                          *extra])
    assert code == 2 and all(w in line for w in words), line
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (["--points", "4"], ["argument --points: 4 is not odd"]),
    (["--points", "1"], ["argument --points: 1 is less than 3"]),
    (["--images", "0"], ["argument --images: 0 is less than 1"]),
    (["--eps", "0"], ["argument --eps: 0 is not greater than 0"]),
    (["--eps", "nan"], ["argument --eps: nan is not a finite number"]),
])
def test_landscape_grid_must_be_odd_and_positive(job_files, capsys, extra, words):
    tmp, data, model = job_files
    code, line = _one_line_error(capsys, ["landscape", "--spec", SPEC, "--model", model,
                                          "--data-dir", data, "--out", tmp / "l.parquet", *extra])
    assert code == 2 and all(w in line for w in words), line


def test_activations_tolerance_is_a_share(job_files, capsys):
    tmp, data, model = job_files
    code, line = _one_line_error(capsys, ["activations", "--spec", SPEC, "--model", model,
                                          "--data-dir", data, "--out", tmp / "a.parquet",
                                          "--inactive-tol", "2"])
    assert code == 2 and "argument --inactive-tol: 2 is more than 1" in line, line


@pytest.mark.parametrize("where, words", [
    ("missing", ["--data-dir", "no such directory"]),
    ("empty", ["--data-dir", "no test.pt in it", "lsqueeze data"]),
])
def test_a_missing_dataset_is_one_line(job_files, capsys, where, words):
    tmp, _, model = job_files
    data = tmp / where
    if where == "empty":
        data.mkdir()
    out = tmp / "o.json"
    code, line = _one_line_error(capsys, ["evaluate", "--spec", SPEC, "--model", model,
                                          "--data-dir", data, "--attack", ATTACK, "--out", out])
    assert code == 2 and str(data) in line and all(w in line for w in words), line
    assert not out.exists()


@pytest.mark.parametrize("out, words", [
    ("a_file/o.json", ["a_file is a file, not a directory"]),
    ("/proc/lsqueeze-no-such-place/o.json", ["/proc does not take new files"]),
    (".", ["--out", "is a directory"]),
])
def test_an_unwritable_output_is_refused_before_the_attack(job_files, capsys, out, words):
    tmp, data, model = job_files
    out = tmp / out
    code, line = _one_line_error(capsys, ["evaluate", "--spec", SPEC, "--model", model,
                                          "--data-dir", data, "--attack", ATTACK, "--out", out])
    assert code == 2 and line.startswith(f"lsqueeze evaluate: error: --out {out}: "), line
    assert all(w in line for w in words), line


def test_an_unwritable_output_directory_is_refused_before_training(job_files, capsys):
    tmp, data, _ = job_files
    code, line = _one_line_error(capsys, ["train", "--spec", json.dumps(tiny_spec()),
                                          "--data-dir", data, "--out-dir", tmp / "a_file" / "m"])
    assert code == 2 and "--out-dir" in line and "a_file is a file, not a directory" in line, line


@pytest.mark.parametrize("cell, words", [
    ({"steps": -5}, ["--spec: cell.steps: -5 is less than the minimum of 1"]),
    ({"sigma": float("nan")}, ["--spec: cell.sigma: nan is not a finite number"]),
    ({"dataset": "imagenet"}, ["cell.dataset", "'imagenet' is not allowed"]),
    ({"method": "adv", "adv": {"attack": "fgsm", "loss": "xent", "eps": 0.3, "steps": 1,
                               "step_size": None, "random_start": False, "restarts": 1,
                               "confidence": 50.0}},
     ["--spec: cell.adv: adversarial training crafts its adversary with PGD, not 'fgsm'"]),
])
def test_a_hand_written_training_spec_is_checked_before_training(job_files, capsys, cell, words):
    """steps -5 would exit 0 with an untrained model, a NaN sigma train nonsense."""
    tmp, data, _ = job_files
    spec = tiny_spec(steps=1)
    spec["cell"] = {**spec["cell"], **cell}
    out = tmp / "m"
    code, line = _one_line_error(capsys, ["train", "--spec", json.dumps(spec), "--data-dir", data,
                                          "--out-dir", out])
    assert code == 2 and all(w in line for w in words), line
    assert not out.exists()


def test_aggregate_names_a_missing_plan_or_fragment(tmp_path, capsys):
    reference = REPO / "src/lsqueeze/data/paper_tables.csv"
    out = tmp_path / "tables"
    code, line = _one_line_error(capsys, ["aggregate", "--plan", tmp_path / "plan.json",
                                          "--reference", reference, "--out-dir", out])
    assert code == 2 and line == (f"lsqueeze aggregate: error: --plan {tmp_path / 'plan.json'}: "
                                  "no such file"), line
    (tmp_path / "plan.json").write_text("{}")
    code, line = _one_line_error(capsys, ["aggregate", "--plan", tmp_path / "plan.json",
                                          "--reference", reference, "--inputs",
                                          tmp_path / "gone.json", "--out-dir", out])
    assert code == 2 and f"--inputs {tmp_path / 'gone.json'}: no such file" in line, line
    assert not out.exists()
