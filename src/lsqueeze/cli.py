"""`python -m lsqueeze <command>`: every DAG step, runnable by hand and on a cluster node.

Rules pass resolved specs as JSON so that a job's command line says exactly what it computes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from lsqueeze.registries.figure_kinds import FIGURE_KINDS


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _whole(low: int, odd: bool = False, hint: str = ""):
    """An argparse type: a whole number of at least `low` (and odd), refused in one line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}{hint}")
        if odd and value % 2 == 0:
            raise argparse.ArgumentTypeError(f"{value} is not odd{hint}")
        return value
    return parse


def _real(low: float = 0.0, high: float = math.inf, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] where low_open)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low_open and value <= low:
            raise argparse.ArgumentTypeError(f"{value:g} is not greater than {low:g}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{value:g} is less than {low:g}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value:g} is more than {high:g}")
        return value
    return parse


def _model_command(sub, name: str, hlp: str, data: bool = True, n: bool = False):
    """A command that reads one trained model: --spec, --model, --out, and the test set's
    --data-dir (and its first --n images) where it reads the test set."""
    s = sub.add_parser(name, help=hlp)
    s.add_argument("--spec", type=_json, required=True, help="resolved training spec (JSON)")
    s.add_argument("--model", required=True, help="its model.pt")
    if data:
        s.add_argument("--data-dir", required=True)
    if n:
        s.add_argument("--n", type=_whole(1, hint=" (leave --n out for every test image)"),
                       default=None, help="first n test images (default: all)")
    s.add_argument("--out", required=True)
    return s


def _parser() -> argparse.ArgumentParser:
    from lsqueeze import __version__

    p = argparse.ArgumentParser(prog="lsqueeze", description=__doc__)
    p.add_argument("--version", action="version", version=f"lsqueeze {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("data", help="download, verify and convert one dataset")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--raw-dir")
    s.add_argument("--mirror", help="base URL replacing the official mirror")

    s = sub.add_parser("train", help="train one cell")
    s.add_argument("--spec", type=_json, required=True, help="resolved training spec (JSON)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--log-every", type=_real(0.0), default=30.0, metavar="SECONDS",
                   help="without the bar (--no-progress): a progress line (step, images/s, loss, "
                        "ETA) every SECONDS on stderr (default: 30)")
    # "" is none: the workflow passes "$LSQUEEZE_TRAIN_OPTIONS", empty when run by hand
    s.add_argument("--options", type=lambda text: _json(text) if text.strip() else {}, default={},
                   help="run options (JSON): checkpoint_every, compile, cuda_graphs, device, "
                        "eval_batch, precision, sync_every")

    for name, hlp in (("evaluate", "white-box accuracy of a model under one attack"),
                      ("craft", "craft a black-box adversarial set on a source model")):
        s = _model_command(sub, name, hlp, n=True)
        s.add_argument("--attack", type=_json, required=True)
        s.add_argument("--batch-size", type=_whole(1), default=500)

    _model_command(sub, "analyze", "linear-model analysis (ε_L) of one model, per image", n=True)

    s = _model_command(sub, "transfer", "accuracy of a target model on a stored black-box set",
                       data=False)
    s.add_argument("--adv-set", required=True)
    s.add_argument("--source-metrics", help="the source model's metrics.json: the set must have "
                                            "been crafted on that model")
    s.add_argument("--attack", type=_json)

    s = sub.add_parser("aggregate", help="long-form Parquet, paper tables, Markdown/HTML")
    s.add_argument("--plan", required=True, help="the tables plan (<results>/plan/tables.json)")
    s.add_argument("--inputs", nargs="*", default=[], help="metrics/eval JSON fragments")
    s.add_argument("--reference", required=True, help="published values (paper_tables.csv)")
    s.add_argument("--out-dir", required=True)

    s = _model_command(sub, "landscape", "loss landscape around the first test images (Figs 5, 9)")
    s.add_argument("--eps", type=_real(0.0, low_open=True), default=10.0,
                   help="grid half-width, paper units")
    s.add_argument("--points", default=21, help="grid points per axis (odd)",
                   type=_whole(3, odd=True, hint=" (the clean image is the grid's centre)"))
    s.add_argument("--images", type=_whole(1), default=8)

    s = _model_command(sub, "activations", "per-neuron activation magnitudes (Figs 10, 11)", n=True)
    s.add_argument("--inactive-tol", type=_real(0.0, 1.0), default=0.0)

    s = sub.add_parser("figure", help="one figure: the summary, or a paper figure of some kind")
    s.add_argument("--kind", default="summary", choices=("summary", *FIGURE_KINDS),
                   help="which figure (default: summary): %(choices)s")
    s.add_argument("--measurements", help="long-form Parquet (kind summary)")
    s.add_argument("--inputs", nargs="*", default=[], help="per-model analysis Parquets")
    s.add_argument("--spec", type=_json, default={},
                   help='JSON: {"title", "labels": [...], "pixel_scales": [...], "eps"}')
    s.add_argument("--out", required=True)

    s = sub.add_parser("claims", help="the paper's claims checked against the aggregated tables")
    s.add_argument("--plan", required=True, help="the tables plan (<results>/plan/tables.json)")
    s.add_argument("--claims", required=True, help="claims file (params/claims.yaml)")
    s.add_argument("--tables", required=True, help="directory of the aggregated tables")
    s.add_argument("--out-dir", required=True, help="where claims.md/.html/.parquet go")
    s.add_argument("--preset", default="", help="preset name, for the page")
    s.add_argument("--note", default="", help="what limits this preset's verdicts (its scale)")

    # DVC versioning (lsqueeze.report.dvc_metrics, lsqueeze.plan.restore): run by the stage in dvc.yaml
    s = sub.add_parser("metrics", help="summary numbers for `dvc metrics` + comparison CSV")
    s.add_argument("--plan", required=True, help="the tables plan (<results>/plan/tables.json)")
    s.add_argument("--tables", required=True, help="directory of the aggregated tables")
    s.add_argument("--out", required=True, help="metrics JSON")
    s.add_argument("--csv", help="measured vs published CSV (for `dvc plots`)")

    s = sub.add_parser("snapshot", help="record Snakemake's state of the DVC outs (after a run)")
    s.add_argument("--configfile", required=True, help="the preset the stage ran")
    s.add_argument("--outs", nargs="+", required=True, help="the stage's DVC outs")

    s = sub.add_parser("restore", help="after `dvc pull`: restore Snakemake's metadata + times")
    s.add_argument("--state", help="snapshot JSON (default: the preset named in params.yaml)")
    s.add_argument("--stage", default="pipeline", help="DVC stage that must be up to date")
    s.add_argument("--no-check", action="store_true", help="skip the `dvc status` check")

    s = sub.add_parser("cost", help="projected GPU-hours of a preset, per table, before it runs")
    s.add_argument("preset", nargs="?", help="the preset (params/<preset>.yaml), as for validate")
    s.add_argument("--configfile", help="the same, as Snakemake spells it")
    s.add_argument("--readme", action="store_true",
                   help="print the README's cost table (every table<N>.yaml and the paper)")
    s.add_argument("--gpu", default="h100",
                   help="GPU model with measured step times in params/step_times.csv")

    s = sub.add_parser("pull", help="fetch a run's results from the DVC remote (checked first), "
                                    "then restore Snakemake's state")
    s.add_argument("--remote", help="DVC remote to pull from (default: the default remote)")
    s.add_argument("--no-restore", action="store_true", help="pull only; skip `lsqueeze restore`")

    s = sub.add_parser("validate", help="validate a preset against the schema")
    s.add_argument("config")

    s = sub.add_parser("migrate", help="move a run of the per-preset layout of older versions "
                                       "(results/<preset>/models, adv, eval) into the model store")
    s.add_argument("preset", help="the preset that made the run (params/<preset>.yaml)")
    s.add_argument("--root", default=".", help="the directory Snakemake ran in")

    s = sub.add_parser("plan", help="write the tables plan that aggregate and metrics read")
    s.add_argument("--plan", type=_json, required=True, help="the plan (JSON), from the workflow")
    s.add_argument("--reference", help="published values (CSV): check every column's lookup")
    s.add_argument("--out", required=True)

    s = sub.add_parser("export", help="a trained model as a RobustBench-style checkpoint "
                                      "(<name>.pt, <name>.sha256) with a model card (.md, .json)")
    s.add_argument("model_dir", metavar="MODEL_DIR",
                   help="the model's directory (model.pt and its metrics.json), checked first")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="directory the checkpoint and the card go into (written atomically)")
    s.add_argument("--measurements", metavar="PATH",
                   help="long-form Parquet (tables/measurements.parquet): the card reports "
                        "the cell's clean, AutoAttack and worst-case accuracy at each ε from it")

    s = sub.add_parser("make-preset", help="write params/paper.yaml + tableN.yaml from the CSV")
    s.add_argument("--csv", default=None, help="published values (default params/paper_tables.csv)")
    s.add_argument("--out-dir", default="params")

    for name in GPU_COMMANDS:
        sub.choices[name].add_argument(
            "--device", choices=("cuda", "auto", "cpu"), default="auto",
            help="the preset's `device`: cuda refuses to run without a GPU, auto falls back to "
                 "the CPU with a warning, cpu runs on the CPU (default: auto)")
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
    "dataset": "mnist, cifar10, cifar100, digits28 or digits32",
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


# The commands whose rules declare `resources: gpu=1`: on a multi-GPU box each takes a free device.
GPU_COMMANDS = ("train", "evaluate", "craft", "analyze", "landscape", "activations")


def _pin_gpu(command: str) -> None:
    """Lock a free local GPU and hide the others (lsqueeze.runtime.pinning); a no-op on CPU-only machines."""
    if command in GPU_COMMANDS:
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
        from lsqueeze.plan.schema import ConfigError, validate_options, validate_spec

        try:
            validate_options(args.options)
            validate_spec(args.spec)
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
OUTPUT_FILES = {"metrics": ("out", "csv"), "export": ()}  # other commands: ("out",)
OUTPUT_DIRS = ("out_dir", "raw_dir")
OUTPUT_DIRS_OF = {"export": ("out",)}  # a command's own output directories beside OUTPUT_DIRS
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
    from lsqueeze.commands import COMMANDS

    return COMMANDS[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
