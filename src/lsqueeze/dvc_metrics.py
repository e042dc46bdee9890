"""Summary numbers of a run for `dvc metrics` / `dvc plots` (written by the DVC stage).

`dvc metrics show` gets a few scalars per table (numbers compared, within tolerance, mean |Δ|):
a row a reader can take in, for the paper too. Every number sits in the comparison CSV instead,
the data of `dvc plots show` / `dvc plots diff`. Its keys are stable across parameter edits —
table id, the preset's cell name, the column name — not canonical cell ids, which change with a
cell's values; so a diff after editing one cell shows that cell's numbers changing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd

from lsqueeze.agreement import counts
from lsqueeze.io import atomic_path, read_json, read_parquet


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def summarize(plan_path, tables_dir) -> tuple[dict, list[dict]]:
    """Return (metrics, comparison rows) from the tables plan and the per-table compare Parquets."""
    plan = read_json(plan_path)
    tol = float(plan.get("tolerance_pct", 5.0))
    metrics = {"tolerance_pct": tol, "tables": {}}
    rows, frames = [], []
    for table in plan["tables"]:
        tid = str(table["id"])
        compare = read_parquet(Path(tables_dir) / f"table_{tid}_compare.parquet")
        frames.append(compare)
        name_of = {r["cell_id"]: r["cell"] for r in table["rows"]}
        deltas = []
        for rec in compare.to_dict("records"):
            cell = name_of.get(rec["cell_id"], rec["cell_id"])
            measured, published, delta = (_num(rec[k]) for k in ("measured", "published", "delta"))
            if delta is not None:
                deltas.append(delta)
            rows.append({"table": tid, "cell": cell, "column": rec["column"],
                         "measured": measured, "published": published, "delta": delta})
        c = counts(compare)  # within: informative comparisons only (lsqueeze.agreement)
        metrics["tables"][tid] = {
            "compared": c["compared"], "within_tolerance": c["within"],
            "uninformative": c["uninformative"],
            "mean_abs_delta": _num(sum(abs(d) for d in deltas) / len(deltas)) if deltas else None}
    # The headline counts distinct measurements: the paper prints many of them in two tables.
    c = counts(pd.concat(frames, ignore_index=True) if frames else None)
    metrics.update({"compared": c["compared"], "within_tolerance": c["within"],
                    **{k: c[k] for k in ("uninformative", "measurements", "measurements_within",
                                         "measurements_uninformative", "replicate_spread")}})
    claims = Path(tables_dir) / "claims.parquet"
    if claims.exists():  # the claims stage's verdicts: claims reproduced / total, and the rest
        from lsqueeze.claims import summary as claims_summary

        metrics["claims"] = claims_summary(read_parquet(claims))
    return metrics, rows


def write_metrics(plan_path, tables_dir, out, csv_out=None) -> dict:
    metrics, rows = summarize(plan_path, tables_dir)
    with atomic_path(out, digest=False) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    if csv_out:
        # measured vs published, one row per number: the scatter plot `dvc plots` draws
        with atomic_path(csv_out, digest=False) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, ["table", "cell", "column", "measured", "published", "delta"])
            w.writeheader()
            w.writerows(rows)
    return metrics
