"""`python -m lsqueeze <command>`: every DAG step, runnable by hand and on a cluster node.

Rules pass resolved specs as JSON so that a job's command line says exactly what it computes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import lsqueeze.commands  # noqa: F401  (declares every command in COMMANDS)
from lsqueeze.commandline import COMMANDS
from lsqueeze.registries.datasets import DATASETS


def _parser() -> argparse.ArgumentParser:
    """The parser of every command declared in lsqueeze.commands (its flags, help and, for a GPU
    command, `--device`), in the order they are declared."""
    from lsqueeze import __version__

    p = argparse.ArgumentParser(prog="lsqueeze", description=__doc__)
    p.add_argument("--version", action="version", version=f"lsqueeze {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for c in COMMANDS.values():
        s = sub.add_parser(c.name, help=c.help)
        if c.flags:
            c.flags(s)
        if c.gpu:
            s.add_argument(
                "--device", choices=("cuda", "auto", "cpu"), default="auto",
                help="the preset's `device`: cuda refuses to run without a GPU, auto falls back "
                     "to the CPU with a warning, cpu runs on the CPU (default: auto)")
    _fill_help(p)
    return p


# Help for flags several commands share, by (command, flag) or by flag: one place, not each call.
FLAG_HELP = {
    "spec": "resolved spec (JSON) of the model cell, as the workflow passes it",
    "model": "trained weights (model.pt)",
    "data_dir": "directory with the dataset's train.pt / test.pt (from `lsqueeze data`)",
    "out": "output file (written atomically)",
    "out_dir": "output directory",
    "n": "first n test images (default: all)",
    "batch_size": "images per attack batch (default: %(default)s)",
    "attack": "resolved attack (JSON): id, paper and pixel-unit parameters",
    "adv_set": "stored black-box set (.pt, from `lsqueeze craft`)",
    "images": "test images to map (default: %(default)s)",
    "inactive_tol": "activation below this share of the layer's largest counts as inactive",
    "no_progress": "no tqdm bar (a log file): print progress lines instead (see --log-every)",
    "config": "preset YAML file",
    "dataset": "a dataset of lsqueeze.registries.datasets: " + ", ".join(DATASETS),
    "raw_dir": "where downloads go (default: <out-dir>/../raw/<dataset>)",
    ("train", "out_dir"): "directory for model.pt, metrics.json and the checkpoint state.pt",
    ("data", "out_dir"): "directory for train.pt and test.pt",
    ("transfer", "attack"): "the attack record (JSON) stored with the result",
}


def _fill_help(parser) -> None:
    """Give every flag without its own help the shared text above."""
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.help is None:
                action.help = FLAG_HELP.get((name, action.dest), FLAG_HELP.get(action.dest))


def _pin_gpu(command: str) -> None:
    """Lock a free local GPU and hide the others (lsqueeze.runtime.pinning) for a GPU command; a
    no-op on CPU-only machines."""
    if COMMANDS[command].gpu:
        from lsqueeze.runtime.pinning import pin_process

        pin_process()


def main(argv=None) -> int:
    """Run one command. A job that refuses to run (a model that fails its check, no GPU where the
    preset needs one) says why in one line on stderr and exits 2."""
    from lsqueeze.runtime.integrity import JobError

    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except JobError as exc:
        print(f"lsqueeze {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lsqueeze cost ... | head`: the reader left; nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# What a job's JSON arguments must hold (the workflow writes them; a hand-run job may not).
SPEC_KEYS = ("id", "cell", "recipe")
ATTACK_KEYS = ("id", "paper", "pixel")


def _bad_args(args) -> str | None:
    """One line saying what is wrong with the JSON arguments, checked before any work: a wrong
    shape would otherwise surface as a KeyError deep inside a job, a bad run option as a
    ZeroDivisionError, and a misspelled one not at all."""
    for name, keys in (("spec", SPEC_KEYS), ("attack", ATTACK_KEYS)):
        value = getattr(args, name, None)
        if value is None or (name == "spec" and args.command == "figure"):
            continue
        if not isinstance(value, dict):
            return f"--{name}: expected a JSON object with keys {', '.join(keys)}"
        missing = [k for k in keys if k not in value]
        if missing:
            return f"--{name}: missing key {missing[0]!r} (expected keys: {', '.join(keys)})"
    if args.command == "train":
        from lsqueeze.plan.arguments import validate_options, validate_spec
        from lsqueeze.plan.schema import ConfigError

        try:
            validate_options(args.options)
            validate_spec(args.spec)
        except ConfigError as exc:
            return str(exc)
    if getattr(args, "attack", None) is not None:
        from lsqueeze.plan.arguments import validate_attack
        from lsqueeze.plan.schema import ConfigError

        try:
            validate_attack(args.attack, getattr(args, "spec", None))
        except ConfigError as exc:
            return str(exc)
    if args.command == "figure" and not isinstance(args.spec, dict):
        return "--spec: expected a JSON object"
    if args.command == "figure" and args.kind == "summary" and not args.measurements:
        return "--measurements: the summary figure is drawn from the long-form Parquet"
    return _bad_paths(args)


# Files a command reads, by flag (a --plan of `lsqueeze plan` is the plan itself, as JSON).
INPUT_FILES = ("model", "plan", "reference", "claims", "measurements", "adv_set", "source_metrics",
               "inputs", "csv")
INPUT_DIRS = ("tables",)
# What a command writes: a file (written atomically into its directory) or a directory.
OUTPUT_FILES = {"metrics": ("csv", "png"), "export": ()}  # other commands: ("out",)
OUTPUT_DIRS = ("out_dir", "raw_dir")
OUTPUT_DIRS_OF = {"export": ("out",), "metrics": ("out",)}  # a command's own, beside OUTPUT_DIRS
# The dataset splits a command reads from --data-dir (`lsqueeze data` writes them).
SPLITS = {"train": ("train.pt", "test.pt")}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _cannot_write(path: Path, is_dir: bool) -> str | None:
    """Why `path` cannot be written (None: it can), found without writing anything that stays:
    the directory it would go in, or the nearest one above it that exists, must take a file."""
    if path.exists() and path.is_dir() != is_dir:
        return "is a directory" if path.is_dir() else "is a file, not a directory"
    where = Path(os.path.abspath(path if is_dir else path.parent))
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        return f"cannot be created: {where} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=where):  # O_TMPFILE: a file without a name
            pass
    except OSError:
        return f"cannot be written: {where} does not take new files"
    return None


def _bad_paths(args) -> str | None:
    """Missing inputs and unwritable outputs, one line before any work (otherwise a traceback,
    or an error only after an attack or a training run has spent its time)."""
    command = args.command
    if getattr(args, "data_dir", None) is not None:
        data = Path(args.data_dir)
        if not data.is_dir():
            return f"--data-dir {data}: no such directory (write it with `lsqueeze data`)"
        for name in SPLITS.get(command, ("test.pt",)):
            if not (data / name).is_file():
                return f"--data-dir {data}: no {name} in it (write it with `lsqueeze data`)"
    outputs = OUTPUT_FILES.get(command, ("out",))
    for dest in INPUT_FILES:
        value = getattr(args, dest, None)
        if dest in outputs or not isinstance(value, (str, list)):
            continue
        for path in map(Path, [value] if isinstance(value, str) else value):
            if not path.is_file():
                return f"{_flag(dest)} {path}: " + ("is not a file" if path.exists() else
                                                    "no such file")
    for dest in INPUT_DIRS:
        value = getattr(args, dest, None)
        if isinstance(value, str) and not Path(value).is_dir():
            return f"{_flag(dest)} {value}: no such directory"
    dirs = OUTPUT_DIRS + OUTPUT_DIRS_OF.get(command, ())
    for dest, is_dir in [(d, False) for d in outputs] + [(d, True) for d in dirs]:
        value = getattr(args, dest, None)
        if isinstance(value, str):
            problem = _cannot_write(Path(value), is_dir)
            if problem:
                return f"{_flag(dest)} {value}: {problem}"
    return None


def _run(args) -> int:
    problem = _bad_args(args)
    if problem:
        print(f"lsqueeze {args.command}: error: {problem}", file=sys.stderr)
        return 2
    _pin_gpu(args.command)
    return COMMANDS[args.command].handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())
