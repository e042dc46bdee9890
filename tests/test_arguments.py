"""A job's JSON arguments (`--spec`, `--options`, `--attack`; lsqueeze.plan.arguments) are
checked like a preset before any work: one line naming the key, no output written."""

import json

import pytest

from conftest import tiny_spec
from lsqueeze.cli import main as lsqueeze_main
from lsqueeze.plan import build as C


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


def attack_arg(**settings):
    """An `--attack` record as the workflow writes it (digits28: pixel units are paper units),
    made from the given PGD settings, however bad."""
    from lsqueeze.registries import attack_kinds

    given = {"attack": "pgd", "loss": "xent", "eps": 0.3, "step_size": 0.1, "steps": 5,
             "random_start": True, **settings}
    try:
        paper = attack_kinds.resolve(given)
    except ValueError:  # an unknown kind
        paper = {**attack_kinds.BASE, **given}
    return {"id": C.attack_id(paper), "paper": paper, "pixel": dict(paper)}


@pytest.mark.parametrize("record, words", [
    (attack_arg(eps=float("nan")), ["paper.eps", "not a finite number"]),
    (attack_arg(eps=-0.3), ["paper.eps"]),
    (attack_arg(eps=1e9), ["pixel.eps", "more than the whole [0, 1] pixel range"]),
    (attack_arg(steps=-5), ["paper.steps", "less than the minimum of 1"]),
    (attack_arg(steps=0), ["paper.steps"]),
    (attack_arg(restarts=0), ["paper.restarts", "less than the minimum of 1"]),
    (attack_arg(step_size=float("nan")), ["paper.step_size", "not a finite number"]),
    (attack_arg(loss="hinge"), ["paper.loss", "'hinge' is not allowed"]),
    (attack_arg(attack="bim"), ["paper.attack", "'bim' is not allowed"]),
    ({**attack_arg(), "id": attack_arg(steps=40)["id"]}, ["id:", "is not the id of its settings"]),
    ({**attack_arg(), "pixel": attack_arg(eps=0.5)["paper"]}, ["pixel.eps", "0.5"]),
    ({**attack_arg(), "paper": {"attack": "pgd", "eps": 0.3}}, ["paper.step_size", "needs"]),
])
@pytest.mark.parametrize("command", ["evaluate", "craft"])
def test_a_hand_written_attack_is_checked_like_a_preset(tmp_path, capsys, record, words, command):
    from lsqueeze.plan.arguments import validate_attack

    validate_attack(attack_arg(), tiny_spec())  # the control: what the workflow passes
    out = tmp_path / "o.json"
    code = lsqueeze_main([command, "--spec", json.dumps(tiny_spec()), "--model", "m.pt",
                          "--data-dir", str(tmp_path), "--attack", json.dumps(record),
                          "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lsqueeze {command}: error: --attack: ")
    assert all(w in err[0] for w in words), err
    assert not out.exists()
