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

from lsqueeze.commandline import command, json_value, model_flags, plan_file, real, refuse, whole, with_flags
from lsqueeze.registries.figure_kinds import FIGURE_KINDS


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
        return refuse("data", text)
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

def _aggregate_flags(s):
    plan_file(s)
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
    plan_file(s)
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
        return refuse("claims", exc)
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


# The commands around the DAG (versioning, rehearsal, presets, export), after these in --help.
import lsqueeze.tools  # noqa: E402, F401
