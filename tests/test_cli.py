"""The command line as a user meets it: --version, help on every flag, the figure kinds listed."""

import subprocess
import sys

import pytest

from lsqueeze import __version__
from lsqueeze.cli import FIGURE_KINDS, _parser, main


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
    from lsqueeze.figures import KINDS

    assert sorted(FIGURE_KINDS) == sorted(KINDS)  # the CLI's copy of the kinds stays in step
    with pytest.raises(SystemExit):
        main(["figure", "--kind", "pie", "--out", "x.png"])
    err = capsys.readouterr().err
    assert "invalid choice: 'pie'" in err and "landscape_random" in err


def test_help_does_not_import_matplotlib():
    code = ("import sys; from lsqueeze.cli import _parser; _parser().format_help(); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_command_has_one_handler():
    from lsqueeze.commands import COMMANDS

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
