"""`python -m lsqueeze <command>`: every DAG step, runnable by hand and on a cluster node.

Rules pass resolved specs as JSON so that a job's command line says exactly what it computes.
"""

from __future__ import annotations

import argparse
import json
import sys


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsqueeze", description=__doc__)
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

    for name, hlp in (("evaluate", "white-box accuracy of a model under one attack"),
                      ("craft", "craft a black-box adversarial set on a source model")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--spec", type=_json, required=True)
        s.add_argument("--model", required=True)
        s.add_argument("--data-dir", required=True)
        s.add_argument("--attack", type=_json, required=True)
        s.add_argument("--n", type=int, default=None, help="first n test images (default: all)")
        s.add_argument("--batch-size", type=int, default=500)
        s.add_argument("--out", required=True)

    s = sub.add_parser("analyze", help="linear-model analysis (ε_L) of one model, per image")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--data-dir", required=True)
    s.add_argument("--n", type=int, default=None)
    s.add_argument("--out", required=True)

    s = sub.add_parser("transfer", help="accuracy of a target model on a stored black-box set")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--adv-set", required=True)
    s.add_argument("--attack", type=_json)
    s.add_argument("--out", required=True)

    s = sub.add_parser("aggregate", help="long-form Parquet, paper tables, Markdown/HTML")
    s.add_argument("--plan", required=True, help="tables plan JSON written by the Snakefile")
    s.add_argument("--inputs", nargs="*", default=[], help="metrics/eval JSON fragments")
    s.add_argument("--reference", required=True, help="published values (paper_tables.csv)")
    s.add_argument("--out-dir", required=True)

    s = sub.add_parser("figure", help="summary figure from the long-form table")
    s.add_argument("--measurements", required=True)
    s.add_argument("--out", required=True)

    s = sub.add_parser("validate", help="validate a preset against the schema")
    s.add_argument("config")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "data":
        from lsqueeze.data import DataError, prepare

        try:
            paths = prepare(args.dataset, args.out_dir, args.raw_dir, args.mirror)
        except DataError as exc:
            print(f"lsqueeze data: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    elif args.command == "train":
        from lsqueeze.train import train

        m = train(args.spec, args.data_dir, args.out_dir, progress=not args.no_progress)
        print(f"{m['id']}: test accuracy {m['test_accuracy']:.4f}, diverged={m['diverged']}")
    elif args.command in ("evaluate", "craft"):
        from lsqueeze import evaluate

        fn = evaluate.white_box if args.command == "evaluate" else evaluate.craft
        fn(args.spec, args.model, args.data_dir, args.attack, args.out, n=args.n,
           batch_size=args.batch_size)
    elif args.command == "transfer":
        from lsqueeze.evaluate import transfer

        transfer(args.spec, args.model, args.adv_set, args.out, attack=args.attack)
    elif args.command == "analyze":
        from lsqueeze.evaluate import analyze

        analyze(args.spec, args.model, args.data_dir, args.out, n=args.n)
    elif args.command == "aggregate":
        from lsqueeze.tables import aggregate

        aggregate(args.plan, args.inputs, args.reference, args.out_dir)
    elif args.command == "figure":
        from lsqueeze.figures import summary_figure

        summary_figure(args.measurements, args.out)
    elif args.command == "validate":
        from lsqueeze.schema import ConfigError, validate_file

        try:
            validate_file(args.config)
        except ConfigError as exc:
            print(f"lsqueeze validate: {exc}", file=sys.stderr)
            return 2
        print(f"{args.config}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
