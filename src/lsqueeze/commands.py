"""One handler per CLI command: `lsqueeze <command>` runs COMMANDS[<command>](args).

A handler imports what its command needs when it runs, so `lsqueeze validate` or `lsqueeze plan`
never load torch. It returns the exit status (None: 0); a refusal it can explain is one line on
stderr and status 2.
"""

from __future__ import annotations

import json
import sys


def _error(command: str, exc) -> int:
    print(f"lsqueeze {command}: error: {exc}", file=sys.stderr)
    return 2


def _device(args):
    """The device of a GPU command, checked before it reads anything (train: its own options)."""
    from lsqueeze.runtime.devices import pick_device

    return pick_device("auto", args.device)


def data(args):
    from lsqueeze.jobs.data import DataError, prepare

    try:
        paths = prepare(args.dataset, args.out_dir, args.raw_dir, args.mirror)
    except DataError as exc:
        return _error("data", exc)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


def train(args):
    from lsqueeze.jobs.train import train

    m = train(args.spec, args.data_dir, args.out_dir, progress=not args.no_progress,
              options=args.options, device_policy=args.device, log_every=args.log_every)
    print(f"{m['id']}: test accuracy {m['test_accuracy']:.4f}, diverged={m['diverged']}")


def evaluate(args):
    from lsqueeze.jobs.evaluate import white_box

    white_box(args.spec, args.model, args.data_dir, args.attack, args.out, n=args.n,
              batch_size=args.batch_size, device=_device(args))


def craft(args):
    from lsqueeze.jobs.evaluate import craft

    craft(args.spec, args.model, args.data_dir, args.attack, args.out, n=args.n,
          batch_size=args.batch_size, device=_device(args))


def transfer(args):
    from lsqueeze.jobs.evaluate import transfer

    transfer(args.spec, args.model, args.adv_set, args.out, attack=args.attack,
             source_metrics=args.source_metrics)


def analyze(args):
    from lsqueeze.jobs.analysis import run_analyze

    run_analyze(args.spec, args.model, args.data_dir, args.out, n=args.n, device=_device(args))


def landscape(args):
    from lsqueeze.jobs.analysis import run_landscape

    run_landscape(args.spec, args.model, args.data_dir, args.out, args.eps, args.points,
                  args.images, device=_device(args))


def activations(args):
    from lsqueeze.jobs.analysis import run_activations

    run_activations(args.spec, args.model, args.data_dir, args.out, n=args.n,
                    rel_tol=args.inactive_tol, device=_device(args))


def aggregate(args):
    from lsqueeze.report.tables import aggregate

    aggregate(args.plan, args.inputs, args.reference, args.out_dir)


def figure(args):
    from lsqueeze.report import figures

    if args.kind == "summary":
        figures.summary_figure(args.measurements, args.out)
        return
    spec = args.spec
    figures.draw(args.kind, args.inputs, spec.get("labels", args.inputs),
                 spec.get("title", args.kind), args.out,
                 pixel_scales=spec.get("pixel_scales"), eps=spec.get("eps"))


def claims(args):
    from lsqueeze.report.claims import ClaimsError
    from lsqueeze.report.claims_report import run

    try:
        s = run(args.plan, args.claims, args.tables, args.out_dir, args.note, args.preset)
    except ClaimsError as exc:
        return _error("claims", exc)
    print(f"{s['reproduced']} of {s['total']} claims reproduced")


def metrics(args):
    from lsqueeze.report.dvc_metrics import write_metrics

    m = write_metrics(args.plan, args.tables, args.out, args.csv)
    print(f"{m['within_tolerance']} of {m['compared']} numbers within ±{m['tolerance_pct']:g}")


def snapshot(args):
    from lsqueeze.plan import restore
    from lsqueeze.plan.schema import ConfigError

    try:
        print(restore.snapshot(args.configfile, args.outs))
    except (restore.RestoreError, ConfigError) as exc:
        return _error("snapshot", exc)


def restore(args):
    from lsqueeze.plan import restore
    from lsqueeze.plan.schema import ConfigError

    try:
        done = restore.restore(state_file=args.state, stage=None if args.no_check else args.stage)
    except (restore.RestoreError, ConfigError) as exc:
        return _error("restore", exc)
    print(f"restored Snakemake metadata of {done['records']} outputs and the time order of "
          f"{done['files']} files; skipped (absent or changed): {len(done['skipped'])}")


def cost(args):
    from lsqueeze.jobs.cost import estimate, readme_table, report
    from lsqueeze.plan.build import load_config

    if args.readme:
        print(readme_table(args.gpu))
        return 0
    preset = args.preset or args.configfile
    if not preset or (args.preset and args.configfile and args.preset != args.configfile):
        return _error("cost", "give one preset: `lsqueeze cost params/<preset>.yaml`")
    try:
        est = estimate(load_config(preset), args.gpu)
    except (OSError, ValueError) as exc:
        return _error("cost", exc)
    print(report(est, preset))


def pull(args):
    from lsqueeze.jobs import remote
    from lsqueeze.plan.restore import RestoreError

    try:
        return remote.pull(name=args.remote, restore=not args.no_restore)
    except (remote.RemoteError, RestoreError) as exc:
        return _error("pull", exc)


def validate(args):
    from lsqueeze.plan.schema import ConfigError, validate_file

    try:
        validate_file(args.config)
    except ConfigError as exc:
        print(f"lsqueeze validate: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: valid")


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


def export(args):
    from lsqueeze.jobs.export import export as run

    paths = run(args.model_dir, args.out, args.measurements)
    for path in paths.values():
        print(path)


def make_preset(args):
    from lsqueeze.jobs.paper_presets import PAPER_CSV, write_presets

    for path in write_presets(args.out_dir, args.csv or PAPER_CSV):
        print(path)


COMMANDS = {"data": data, "train": train, "evaluate": evaluate, "craft": craft,
            "transfer": transfer, "analyze": analyze, "landscape": landscape,
            "activations": activations, "aggregate": aggregate, "figure": figure,
            "claims": claims, "metrics": metrics, "snapshot": snapshot, "restore": restore,
            "cost": cost, "pull": pull, "validate": validate, "plan": plan,
            "make-preset": make_preset, "migrate": migrate, "export": export}
