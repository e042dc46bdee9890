"""Aggregation: per-job JSON fragments -> one long-form Parquet -> the paper's tables.

Each paper table comes out twice: in the paper's layout (measured values, percent) and as a
measured | published | Δ comparison, rendered to Markdown and HTML with a tolerance summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from lsqueeze.analysis import predicted_accuracy
from lsqueeze.config import cell_id, config_hash
from lsqueeze.io import atomic_path, save_parquet

CELL_COLS = ["cell_id", "dataset", "method", "alpha", "beta", "sigma", "steps", "seed", "clip_noise"]
ATTACK_COLS = ["threat", "attack_id", "attack", "loss", "attack_steps", "eps", "step_size",
               "restarts", "random_start", "source_id"]


def _cell_cols(cell: dict) -> dict:
    out = {k: cell.get(k) for k in CELL_COLS if k != "cell_id"}
    out["cell_id"] = cell_id(cell)
    return out


def _attack_cols(threat: str, attack: dict | None, source_id=None) -> dict:
    a = (attack or {}).get("paper", {})
    return {"threat": threat, "attack_id": (attack or {}).get("id"), "attack": a.get("attack"),
            "loss": a.get("loss"), "attack_steps": a.get("steps"), "eps": a.get("eps"),
            "step_size": a.get("step_size"), "restarts": a.get("restarts"),
            "random_start": a.get("random_start"), "source_id": source_id}


def measurement_rows(path: Path) -> list[dict]:
    """Long-form rows from one fragment: metrics.json (training) or an evaluation JSON."""
    rec = json.loads(Path(path).read_text())
    if "spec" in rec:  # training metrics
        cell = rec["spec"]["cell"]
        prov = {"code_version": rec["code_version"], "config_hash": config_hash(rec["spec"]),
                "device": rec["device"], "wall_time_s": rec["wall_time_s"],
                "diverged": rec["diverged"], "steps_done": rec["steps_done"]}
        return [{**_cell_cols(cell), **_attack_cols("none", None), "metric": m, "value": rec[m],
                 "n": None, **prov} for m in ("train_accuracy", "test_accuracy", "mean_logit_norm")]
    cell = rec["cell"]
    prov = {"code_version": rec["code_version"], "config_hash": config_hash(rec["attack"]),
            "device": rec["device"], "wall_time_s": rec["wall_time_s"], "diverged": None,
            "steps_done": None}
    return [{**_cell_cols(cell), **_attack_cols(rec["kind"], rec["attack"], rec.get("source_id")),
             "metric": "accuracy", "value": rec["accuracy"], "n": rec["n"], **prov}]


def _published(reference: pd.DataFrame, table: dict, row: dict, col: dict):
    if "paper_table" not in table or "paper_row" not in row:
        return None
    ref = reference[(reference["table"] == table["paper_table"]) & (reference["row"] == row["paper_row"])]
    for key, want in col.get("paper", {}).items():
        ref = ref[ref[key].astype(str).str.lower() == str(want).lower()]
    if len(ref) > 1:
        raise ValueError(f"table {table['id']} column {col['name']!r}: its `paper` filter matches "
                         f"{len(ref)} published values for row {row['paper_row']}; narrow it")
    return float(ref["value_percent"].iloc[0]) if len(ref) else None


def _lookup(long: pd.DataFrame, plan_row: dict, col: dict, analyses: dict, scale: float):
    cid = plan_row["cell_id"]
    metric = col.get("metric", "accuracy")
    if metric == "predicted_accuracy":
        if cid not in analyses:
            return None
        eps = float(col["attack_paper"]["eps"]) / scale
        return 100 * predicted_accuracy(analyses[cid], eps)
    sel = long[(long["cell_id"] == cid) & (long["metric"] == metric)]
    if col.get("threat", "none") != "none":
        sel = sel[(sel["threat"] == col["threat"]) & (sel["attack_id"] == col["attack_id"])]
    return 100 * float(sel["value"].iloc[0]) if len(sel) else None


def build_tables(plan: dict, long: pd.DataFrame, reference: pd.DataFrame, analyses: dict):
    """Return {table id: (paper-layout frame, comparison frame)}."""
    out = {}
    for table in plan["tables"]:
        layout, compare = [], []
        for row in table["rows"]:
            cell = plan["cells"][row["cell_id"]]
            scale = plan["pixel_scale"][cell["dataset"]]
            rec = {"label": row.get("label", ""), "alpha": cell["alpha"], "beta": cell["beta"],
                   "sigma": cell["sigma"], "k": cell["steps"], "cell_id": row["cell_id"]}
            for col in table["columns"]:
                measured = _lookup(long, row, col, analyses, scale)
                published = _published(reference, table, row, col)
                rec[col["name"]] = measured
                delta = None if measured is None or published is None else measured - published
                compare.append({"table": table["id"], "row": row.get("paper_row"),
                                "cell_id": row["cell_id"], "column": col["name"],
                                "measured": measured, "published": published, "delta": delta})
            layout.append(rec)
        out[table["id"]] = (pd.DataFrame(layout), pd.DataFrame(compare))
    return out


def _fmt(v):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def render_markdown(plan: dict, tables: dict, tolerance: float) -> str:
    lines = ["# Measured vs published", "",
             f"Each cell: measured % (published %, Δ). Within tolerance: |Δ| ≤ {tolerance:g} points.", ""]
    total = within = 0
    for table in plan["tables"]:
        layout, compare = tables[table["id"]]
        lines += [f"## {table.get('title', 'Table ' + table['id'])}", ""]
        head = ["row", "α", "β", "σ", "k"] + [c["name"] for c in table["columns"]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, rec in layout.iterrows():
            cells = [rec["label"] or rec["cell_id"], f"{rec['alpha']:g}", f"{rec['beta']:g}",
                     f"{rec['sigma']:g}", str(rec["k"])]
            for col in table["columns"]:
                c = compare[(compare["cell_id"] == rec["cell_id"]) & (compare["column"] == col["name"])].iloc[0]
                text = _fmt(c["measured"])
                if c["published"] is not None and not pd.isna(c["published"]):
                    text += f" ({_fmt(c['published'])}, Δ {_fmt(c['delta'])})"
                    if c["delta"] is not None and not pd.isna(c["delta"]):
                        total += 1
                        within += abs(c["delta"]) <= tolerance
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.insert(4, f"**{within} of {total} numbers within ±{tolerance:g} points of the paper.**\n")
    return "\n".join(lines)


def aggregate(plan_path, inputs, reference_path, out_dir) -> pd.DataFrame:
    plan = json.loads(Path(plan_path).read_text())
    out_dir = Path(out_dir)
    rows, analyses = [], {}
    for p in inputs:
        p = Path(p)
        if p.suffix == ".parquet":
            analyses[plan["analysis_files"][str(p)]] = pd.read_parquet(p)
        else:
            rows += measurement_rows(p)
    long = pd.DataFrame(rows)
    reference = pd.read_csv(reference_path)
    tables = build_tables(plan, long, reference, analyses)
    for table in plan["tables"]:  # Eq. 4 values also go into the long-form table
        for col in (c for c in table["columns"] if c.get("metric") == "predicted_accuracy"):
            for row in table["rows"]:
                cid = row["cell_id"]
                cell = plan["cells"][cid]
                if cid in analyses:
                    eps = float(col["attack_paper"]["eps"]) / plan["pixel_scale"][cell["dataset"]]
                    rows.append({**_cell_cols(cell), **_attack_cols("white", None),
                                 "attack": "eq4", "eps": col["attack_paper"]["eps"],
                                 "metric": "predicted_accuracy", "n": len(analyses[cid]),
                                 "value": predicted_accuracy(analyses[cid], eps)})
    long = pd.DataFrame(rows).drop_duplicates(subset=["cell_id", "threat", "attack_id", "attack",
                                                      "eps", "source_id", "metric"])
    save_parquet(long, out_dir / "measurements.parquet")
    for tid, (layout, compare) in tables.items():
        save_parquet(layout, out_dir / f"table_{tid}.parquet")
        save_parquet(compare, out_dir / f"table_{tid}_compare.parquet")
    md = render_markdown(plan, tables, plan.get("tolerance_pct", 5.0))
    with atomic_path(out_dir / "tables.md") as tmp:
        tmp.write_text(md)
    html = ["<html><head><meta charset='utf-8'><title>Tables</title></head><body>"]
    for table in plan["tables"]:
        html.append(f"<h2>{table.get('title', table['id'])}</h2>")
        html.append(tables[table["id"]][1].to_html(index=False, float_format=lambda v: f"{v:.2f}"))
    html.append("</body></html>")
    with atomic_path(out_dir / "tables.html") as tmp:
        tmp.write_text("\n".join(html))
    return long
