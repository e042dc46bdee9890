"""The commands a user runs around the DAG rather than in it: DVC versioning (metrics, snapshot,
restore, pull), the rehearsal, and presets (cost, validate, migrate, make-preset) and the export.
Declared like the DAG's own (lsqueeze.commands), listed after them in `lsqueeze --help`."""

from __future__ import annotations

import sys

from lsqueeze.commandline import command, plan_file, refuse, whole

# --- DVC versioning (lsqueeze.report.dvc_metrics, lsqueeze.plan.restore): the stage in dvc.yaml

def _metrics_flags(s):
    plan_file(s)
    s.add_argument("--tables", required=True, help="directory of the aggregated tables")
    s.add_argument("--out", required=True, help="metrics directory (one JSON per table and model)")
    s.add_argument("--csv", help="measured vs published CSV (for `dvc plots`)")
    s.add_argument("--png", help="the same, drawn as a PNG (a plot that shows offline)")


@command("metrics", "summary numbers for `dvc metrics` + comparison CSV", _metrics_flags)
def metrics(args):
    from lsqueeze.report.dvc_metrics import write_metrics

    m = write_metrics(args.plan, args.tables, args.out, args.csv, args.png)
    print(f"{m['within_tolerance']} of {m['compared']} numbers within ±{m['tolerance_pct']:g}")


def _snapshot_flags(s):
    s.add_argument("--configfile", required=True, help="the preset the stage ran")
    s.add_argument("--outs", nargs="+", required=True, help="the stage's DVC outs")


@command("snapshot", "record Snakemake's state of the DVC outs (after a run)", _snapshot_flags)
def snapshot(args):
    from lsqueeze.plan import restore
    from lsqueeze.plan.schema import ConfigError

    try:
        print(restore.snapshot(args.configfile, args.outs))
    except (restore.RestoreError, ConfigError) as exc:
        return refuse("snapshot", exc)


def _restore_flags(s):
    s.add_argument("--state", help="snapshot JSON (default: the preset named in params.yaml)")
    s.add_argument("--stage", default="pipeline", help="DVC stage that must be up to date")
    s.add_argument("--no-check", action="store_true", help="skip the `dvc status` check")


@command("restore", "after `dvc pull`: restore Snakemake's metadata + times", _restore_flags)
def restore(args):
    from lsqueeze.plan import restore
    from lsqueeze.plan.schema import ConfigError

    try:
        done = restore.restore(state_file=args.state, stage=None if args.no_check else args.stage)
    except (restore.RestoreError, ConfigError) as exc:
        return refuse("restore", exc)
    print(f"restored Snakemake metadata of {done['records']} outputs and the time order of "
          f"{done['files']} files; skipped (absent or changed): {len(done['skipped'])}")


def _pull_flags(s):
    s.add_argument("--remote", help="DVC remote to pull from (default: the default remote)")
    s.add_argument("--no-restore", action="store_true", help="pull only; skip `lsqueeze restore`")


@command("pull", "fetch a run's results from the DVC remote (checked first), then restore "
                 "Snakemake's state", _pull_flags)
def pull(args):
    from lsqueeze.jobs import remote
    from lsqueeze.plan.restore import RestoreError

    try:
        return remote.pull(name=args.remote, restore=not args.no_restore)
    except (remote.RemoteError, RestoreError) as exc:
        return refuse("pull", exc)


def _rehearse_flags(s):
    s.add_argument("preset", help="the preset to rehearse (params/<preset>.yaml)")
    s.add_argument("--dir", help="the rehearsal's own directory (default: "
                                 "results/rehearsal/<preset>): preset, data, store, results")
    s.add_argument("--cores", type=whole(1), default=1, help="Snakemake's --cores (default 1)")
    s.add_argument("--subset", action="store_true",
                   help="only what runs every job kind once: per table the first row of each "
                        "training method, every column; one figure per kind (what CI runs)")


@command("rehearse", "run a preset's whole DAG at toy scale on this machine, before a GPU run",
         _rehearse_flags)
def rehearse(args):
    from lsqueeze.plan.schema import ConfigError, validate_file
    from lsqueeze.rehearse import run

    try:
        validate_file(args.preset)
    except (ConfigError, OSError) as exc:
        return refuse("rehearse", exc)
    return run(args.preset, args.dir, cores=args.cores, only_subset=args.subset)


# --- presets: validate, cost, migrate, export, make the paper's

def _one_preset(args) -> str | None:
    """The preset given as `preset` or `--configfile` (None: neither, or two different ones)."""
    if args.preset and args.configfile and args.preset != args.configfile:
        return None
    return args.preset or args.configfile


def _cost_flags(s):
    s.add_argument("preset", nargs="?", help="the preset (params/<preset>.yaml), as for validate")
    s.add_argument("--configfile", help="the same, as Snakemake spells it")
    s.add_argument("--readme", action="store_true",
                   help="print the README's cost table (every table<N>.yaml and the paper)")
    s.add_argument("--gpu", default="h100",
                   help="GPU model with measured step times in lsqueeze/data/step_times.csv")


@command("cost", "projected GPU-hours of a preset, per table, before it runs", _cost_flags)
def cost(args):
    from lsqueeze.jobs.cost import estimate, readme_table, report
    from lsqueeze.plan.build import load_config

    if args.readme:
        try:
            print(readme_table(args.gpu))
        except (OSError, ValueError) as exc:
            return refuse("cost", exc)
        return 0
    preset = _one_preset(args)
    if preset is None:
        return refuse("cost", "give one preset: `lsqueeze cost params/<preset>.yaml`")
    try:
        est = estimate(load_config(preset), args.gpu)
    except (OSError, ValueError) as exc:
        return refuse("cost", exc)
    print(report(est, preset))


def _status_flags(s):
    s.add_argument("preset", nargs="?", help="the preset (params/<preset>.yaml), as for validate")
    s.add_argument("--configfile", help="the same, as Snakemake spells it")
    s.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the overrides the run was given, as for Snakemake (store=<dir>)")


@command("status", "how far a preset's run got: models trained, checkpoints (and whether they "
                   "resume), evaluations done", _status_flags)
def status(args):
    import torch
    import yaml

    from lsqueeze.jobs.status import render, run_status
    from lsqueeze.jobs.train import resolve_precision
    from lsqueeze.plan.build import load_config
    from lsqueeze.plan.layout import STORE

    preset = _one_preset(args)
    if preset is None:
        return refuse("status", "give one preset: `lsqueeze status params/<preset>.yaml`")
    try:
        config = load_config(preset)
        for item in args.config:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--config {item!r}: expected KEY=VALUE")
            config[key] = yaml.safe_load(value)
        # how this machine would train: a checkpoint of another device kind or precision restarts
        where = "cuda" if config.get("device") != "cpu" and torch.cuda.is_available() else "cpu"
        precision = resolve_precision(torch.device(where),
                                      (config.get("train") or {}).get("precision", "auto"))
        entries = run_status(config, where, precision)
    except (OSError, ValueError) as exc:
        return refuse("status", exc)
    print(render(entries, config.get("preset", preset), config.get("store", STORE)))


@command("validate", "validate a preset against the schema", lambda s: s.add_argument("config"))
def validate(args):
    from lsqueeze.plan.schema import ConfigError, validate_file

    try:
        validate_file(args.config)
    except ConfigError as exc:
        print(f"lsqueeze validate: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: valid")


def _migrate_flags(s):
    s.add_argument("preset", help="the preset that made the run (params/<preset>.yaml)")
    s.add_argument("--root", default=".", help="the directory Snakemake ran in")


@command("migrate", "move a run of the per-preset layout of older versions "
                    "(results/<preset>/models, adv, eval) into the model store", _migrate_flags)
def migrate(args):
    from lsqueeze.jobs.migrate import migrate as run
    from lsqueeze.plan.build import load_config
    from lsqueeze.plan.schema import ConfigError, validate_file

    try:
        validate_file(args.preset)
        done = run(load_config(args.preset), root=args.root)
    except ConfigError as exc:
        return refuse("migrate", exc)
    for line in done["skipped"]:
        print(f"left in place: {line}")
    for path in done["kept"]:
        print(f"left in place: {path} (the store already has it)")
    print(f"{len(done['moved'])} files moved into the model store")


def _export_flags(s):
    s.add_argument("model_dir", metavar="MODEL_DIR",
                   help="the model's directory (model.pt and its metrics.json), checked first")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="directory the files go into, under <dataset>/Linf/ as RobustBench's "
                        "model zoo lays them out (each written atomically)")
    s.add_argument("--measurements", metavar="PATH",
                   help="long-form Parquet (tables/measurements.parquet) of the run that "
                        "evaluated the model: the card reports every attack on it, AutoAttack, "
                        "the worst case and the masking checks; one without the model is refused")


@command("export", "a trained model as a program plain PyTorch loads (<name>.pt2), a "
                   "RobustBench-style checkpoint (<name>.pt) and a model card (.md, .json)",
         _export_flags)
def export(args):
    from lsqueeze.export import export as run

    paths = run(args.model_dir, args.out, args.measurements)
    for path in paths.values():
        print(path)


def _make_preset_flags(s):
    s.add_argument("--csv", default=None, help="published values (default lsqueeze/data/paper_tables.csv)")
    s.add_argument("--out-dir", default="params")


@command("make-preset", "write params/paper.yaml + tableN.yaml from the CSV", _make_preset_flags)
def make_preset(args):
    from lsqueeze.jobs.paper_presets import PAPER_CSV, write_presets

    for path in write_presets(args.out_dir, args.csv or PAPER_CSV):
        print(path)
