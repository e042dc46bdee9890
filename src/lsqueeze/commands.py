"""Every CLI command, declared once: its name, help, flags, whether it takes a GPU, and its
handler. `lsqueeze <command>` runs COMMANDS[<command>].handler(args); lsqueeze.cli builds the
parser from COMMANDS.

A handler imports what its command needs when it runs, so `lsqueeze validate` or `lsqueeze plan`
never load torch. It returns the exit status (None: 0); a refusal it can explain is one line on
stderr and status 2. GPU commands are those whose rules declare `resources: gpu=1`: on a
multi-GPU box each takes a free device (lsqueeze.runtime.pinning) and has `--device`.
"""

from __future__ import annotations

import json
import sys

from lsqueeze.commandline import command, json_value, model_flags, real, whole, with_flags
from lsqueeze.registries.figure_kinds import FIGURE_KINDS


def _error(command: str, exc) -> int:
    print(f"lsqueeze {command}: error: {exc}", file=sys.stderr)
    return 2


def _device(args):
    """The device of a GPU command, checked before it reads anything (train: its own options)."""
    from lsqueeze.runtime.devices import pick_device

    return pick_device("auto", args.device)


# --- the jobs: one dataset, one model, one attack

def _data_flags(s):
    s.add_argument("--dataset", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--raw-dir")
    s.add_argument("--mirror", help="base URL replacing the official mirror")
    s.add_argument("--rehearsal-checksums", metavar="JSON",
                   help="a rehearsal's own MD5 sums of its generated files (lsqueeze rehearse), "
                        "checked instead of the official ones")


@command("data", "download, verify and convert one dataset", _data_flags)
def data(args):
    import contextlib
    from pathlib import Path

    from lsqueeze.jobs.data import DataError, prepare
    from lsqueeze.rehearse import own_checksums
    from lsqueeze.runtime.integrity import IntegrityError, rebuild_splits

    raw = args.raw_dir or Path(args.out_dir) / "raw"
    try:
        with (own_checksums(args.dataset, args.rehearsal_checksums) if args.rehearsal_checksums
              else contextlib.nullcontext()):
            paths = rebuild_splits(lambda stage: prepare(args.dataset, stage, raw, args.mirror),
                                   args.out_dir)
    except (DataError, IntegrityError, ValueError, OSError) as exc:
        text = str(exc)
        if text.startswith("download of "):  # no network, or the mirror is down: the way round
            text += (f"; offline, copy the dataset's files into {raw}/ (a file already there "
                     "is checked and used, not downloaded) or set `mirrors: {"
                     f"{args.dataset}: <base URL>}}` in the preset to an HTTP(S) mirror you "
                     "can reach")
        return _error("data", text)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


def _train_flags(s):
    s.add_argument("--spec", type=json_value, required=True, help="resolved training spec (JSON)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--log-every", type=real(0.0), default=30.0, metavar="SECONDS",
                   help="without the bar (--no-progress): a progress line (step, images/s, loss, "
                        "ETA) every SECONDS on stderr (default: 30)")
    # "" is none: the workflow passes "$LSQUEEZE_TRAIN_OPTIONS", empty when run by hand
    s.add_argument("--options", type=lambda text: json_value(text) if text.strip() else {},
                   default={}, help="run options (JSON): checkpoint_every, compile, cuda_graphs, "
                                    "device, eval_batch, precision, sync_every")


@command("train", "train one cell", _train_flags, gpu=True)
def train(args):
    from lsqueeze.jobs.train import train
    from lsqueeze.runtime.files import exclusive

    with exclusive(args.out_dir):  # one training per cell, whichever checkout runs it
        m = train(args.spec, args.data_dir, args.out_dir, progress=not args.no_progress,
                  options=args.options, device_policy=args.device, log_every=args.log_every)
    print(f"{m['id']}: test accuracy {m['test_accuracy']:.4f}, diverged={m['diverged']}")


def _attack_flags(s):
    s.add_argument("--attack", type=json_value, required=True)
    s.add_argument("--batch-size", type=whole(1), default=500)


@command("evaluate", "white-box accuracy of a model under one attack",
         with_flags(model_flags(n=True), _attack_flags), gpu=True)
def evaluate(args):
    from lsqueeze.jobs.evaluate import white_box
    from lsqueeze.runtime.rehearsal import cap_attack

    white_box(args.spec, args.model, args.data_dir, cap_attack(args.attack), args.out, n=args.n,
              batch_size=args.batch_size, device=_device(args))


@command("craft", "craft a black-box adversarial set on a source model",
         with_flags(model_flags(n=True), _attack_flags), gpu=True)
def craft(args):
    from lsqueeze.jobs.evaluate import craft
    from lsqueeze.runtime.rehearsal import cap_attack

    craft(args.spec, args.model, args.data_dir, cap_attack(args.attack), args.out, n=args.n,
          batch_size=args.batch_size, device=_device(args))


def _transfer_flags(s):
    s.add_argument("--adv-set", required=True)
    s.add_argument("--source-metrics", help="the source model's metrics.json: the set must have "
                                            "been crafted on that model")
    s.add_argument("--attack", type=json_value)


@command("transfer", "accuracy of a target model on a stored black-box set",
         with_flags(model_flags(data=False), _transfer_flags))
def transfer(args):
    from lsqueeze.jobs.evaluate import transfer

    transfer(args.spec, args.model, args.adv_set, args.out, attack=args.attack,
             source_metrics=args.source_metrics)


@command("analyze", "linear-model analysis (ε_L) of one model, per image", model_flags(n=True),
         gpu=True)
def analyze(args):
    from lsqueeze.jobs.analysis import run_analyze

    run_analyze(args.spec, args.model, args.data_dir, args.out, n=args.n, device=_device(args))


def _landscape_flags(s):
    s.add_argument("--eps", type=real(0.0, low_open=True), default=10.0,
                   help="grid half-width, paper units")
    s.add_argument("--points", default=21, help="grid points per axis (odd)",
                   type=whole(3, odd=True, hint=" (the clean image is the grid's centre)"))
    s.add_argument("--images", type=whole(1), default=8)


@command("landscape", "loss landscape around the first test images (Figs 5, 9)",
         with_flags(model_flags(), _landscape_flags), gpu=True)
def landscape(args):
    from lsqueeze.jobs.analysis import run_landscape

    run_landscape(args.spec, args.model, args.data_dir, args.out, args.eps, args.points,
                  args.images, device=_device(args))


@command("activations", "per-neuron activation magnitudes (Figs 10, 11)",
         with_flags(model_flags(n=True), lambda s: s.add_argument(
             "--inactive-tol", type=real(0.0, 1.0), default=0.0)), gpu=True)
def activations(args):
    from lsqueeze.jobs.analysis import run_activations

    run_activations(args.spec, args.model, args.data_dir, args.out, n=args.n,
                    rel_tol=args.inactive_tol, device=_device(args))


# --- the aggregation: tables, figures, claims

def _plan_file(s):
    s.add_argument("--plan", required=True, help="the tables plan (<results>/plan/tables.json)")


def _aggregate_flags(s):
    _plan_file(s)
    s.add_argument("--inputs", nargs="*", default=[], help="metrics/eval JSON fragments")
    s.add_argument("--reference", required=True, help="published values (paper_tables.csv)")
    s.add_argument("--out-dir", required=True)


@command("aggregate", "long-form Parquet, paper tables, Markdown/HTML", _aggregate_flags)
def aggregate(args):
    from lsqueeze.report.tables import aggregate

    aggregate(args.plan, args.inputs, args.reference, args.out_dir)


def _figure_flags(s):
    s.add_argument("--kind", default="summary", choices=("summary", *FIGURE_KINDS),
                   help="which figure (default: summary): %(choices)s")
    s.add_argument("--measurements", help="long-form Parquet (kind summary)")
    s.add_argument("--inputs", nargs="*", default=[], help="per-model analysis Parquets")
    s.add_argument("--spec", type=json_value, default={},
                   help='JSON: {"title", "labels": [...], "pixel_scales": [...], "eps"}')
    s.add_argument("--out", required=True)


@command("figure", "one figure: the summary, or a paper figure of some kind", _figure_flags)
def figure(args):
    from lsqueeze.report import figures, summary

    if args.kind == "summary":
        summary.summary_figure(args.measurements, args.out)
        return
    spec = args.spec
    figures.draw(args.kind, args.inputs, spec.get("labels", args.inputs),
                 spec.get("title", args.kind), args.out,
                 pixel_scales=spec.get("pixel_scales"), eps=spec.get("eps"))


def _claims_flags(s):
    _plan_file(s)
    s.add_argument("--claims", required=True, help="claims file (lsqueeze/data/claims.yaml)")
    s.add_argument("--tables", required=True, help="directory of the aggregated tables")
    s.add_argument("--out-dir", required=True, help="where claims.md/.html/.parquet go")
    s.add_argument("--preset", default="", help="preset name, for the page")
    s.add_argument("--note", default="", help="what limits this preset's verdicts (its scale)")


@command("claims", "the paper's claims checked against the aggregated tables", _claims_flags)
def claims(args):
    from lsqueeze.report.claims import ClaimsError
    from lsqueeze.report.claims_report import run

    try:
        s = run(args.plan, args.claims, args.tables, args.out_dir, args.note, args.preset)
    except ClaimsError as exc:
        return _error("claims", exc)
    print(f"{s['reproduced']} of {s['total']} claims reproduced")


def _plan_flags(s):
    s.add_argument("--plan", type=json_value, required=True,
                   help="the plan (JSON), from the workflow")
    s.add_argument("--reference", help="published values (CSV): check every column's lookup")
    s.add_argument("--out", required=True)


@command("plan", "write the tables plan that aggregate and metrics read", _plan_flags)
def plan(args):
    from lsqueeze.runtime.files import atomic_path

    if args.reference:
        import pandas as pd

        from lsqueeze.report.tables import check_published

        try:
            check_published(args.plan, pd.read_csv(args.reference))
        except ValueError as exc:
            print(f"lsqueeze plan: error: {exc}", file=sys.stderr)
            return 2
    with atomic_path(args.out) as tmp:  # a unique temp name: no two writers share one
        tmp.write_text(json.dumps(args.plan, indent=1, sort_keys=True) + "\n")


# --- DVC versioning (lsqueeze.report.dvc_metrics, lsqueeze.plan.restore): the stage in dvc.yaml

def _metrics_flags(s):
    _plan_file(s)
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
        return _error("snapshot", exc)


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
        return _error("restore", exc)
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
        return _error("pull", exc)


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
        return _error("rehearse", exc)
    return run(args.preset, args.dir, cores=args.cores, only_subset=args.subset)


# --- presets: validate, cost, migrate, export, make the paper's

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
            return _error("cost", exc)
        return 0
    preset = args.preset or args.configfile
    if not preset or (args.preset and args.configfile and args.preset != args.configfile):
        return _error("cost", "give one preset: `lsqueeze cost params/<preset>.yaml`")
    try:
        est = estimate(load_config(preset), args.gpu)
    except (OSError, ValueError) as exc:
        return _error("cost", exc)
    print(report(est, preset))


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
        return _error("migrate", exc)
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
