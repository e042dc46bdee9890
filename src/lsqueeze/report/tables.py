"""Aggregation: per-job JSON fragments -> one long-form Parquet -> the paper's tables.

Outputs (all under the preset's results/tables/):
- measurements.parquet: one row per model x attack x metric, every cell and attack parameter as
  a column, plus provenance (code version, config hash, device, wall time); threat "worst" rows
  give the worst case per model and ε over every attack run at that ε (`worst_of` names them);
- table_<id>.parquet: the paper's layout, measured values in percent; the index is (cell_id,
  model) and the columns are the paper's: alpha, beta, sigma, k, then the table's columns (Train,
  Test, attacks, Eq. 4) as snake_case names ending in `_pct` (train_pct, white_pgd_40_x_ent_pct);
  the titles the Markdown prints are in the file's metadata (lsqueeze.report.tablemeta);
- table_<id>_compare.parquet: one row per number: measured_pct, published_pct, delta_pct, within
  tolerance;
- tables.md / tables.html: every number as "measured (published, Δ)" and a tolerance summary.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from lsqueeze.plan.build import (
    PAPER_PARAMS,
    SD_SUFFIX,
    model_name,
    table_files,
)
from lsqueeze.plan.records import check_record, worst_case_gaps
from lsqueeze.registries.regularizers import REGULARIZERS
from lsqueeze.report.agreement import judge
from lsqueeze.report.measurements import (
    attack_cols,
    cell_cols,
    measurement_rows,
    member_rows,
    predicted_accuracy,
    worst_case_rows,
)
from lsqueeze.report.names import display_names, with_names
from lsqueeze.report.render import render_html, render_markdown
from lsqueeze.report.tablemeta import (
    COMPARE_COLUMNS,
    MASKING_COLUMNS,
    layout_names,
    masking_section,
    measurements_html,
    missing,
    provenance,
    save_table,
    typed,
    typed_measurements,
)
from lsqueeze.runtime.files import atomic_path, read_json, read_parquet
from lsqueeze.runtime.rehearsal import stamp_html, stamp_markdown


def _same(have, want) -> bool:
    """CSV cells vs preset filter values: 40.0 == 40, 'False' == false, 'xent' == 'XENT'."""
    if missing(have):
        return False
    try:
        return math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(have).strip().lower() == str(want).strip().lower()


MODEL_KEYS = ["dataset", "model", "alpha", "beta", "sigma", "k"]  # a model in the reference CSV


def published(reference: pd.DataFrame, table: dict, row: dict, col: dict):
    """The published percent for (row, column): the CSV row of the same paper table, the row's
    paper_row (when given) and every key of the column's `paper` filter; None if there is none.
    A row without paper_row has a published value only where the paper's table is of one model
    (Tables 9-11): in a table of several, it is a model the paper did not train (a preset's own
    addition)."""
    if "paper_table" not in table or "paper" not in col:
        return None
    ref = reference[reference["table"] == table["paper_table"]]
    if "paper_row" in row:
        ref = ref[ref["row"] == row["paper_row"]]
    elif len(ref[MODEL_KEYS].drop_duplicates()) > 1:
        return None
    for key, want in col["paper"].items():
        if key not in ref.columns:
            raise ValueError(f"table {table['id']} column {col['name']!r}: paper filter key "
                             f"{key!r} is not a column of the reference CSV")
        ref = ref[[_same(v, want) for v in ref[key]]]
    if len(ref) > 1:
        raise ValueError(f"table {table['id']} column {col['name']!r}: its `paper` filter matches "
                         f"{len(ref)} published values for row {row.get('paper_row')}; narrow it")
    return float(ref["value_percent"].iloc[0]) if len(ref) else None


def check_published(plan: dict, reference: pd.DataFrame) -> None:
    """Look up every (row, column)'s published value once, so that an ambiguous `paper` filter
    fails when a run starts (the tables plan job), not in the aggregation hours later."""
    for table in plan["tables"]:
        for row in table["rows"]:
            for col in table["columns"]:
                published(reference, table, row, col)


def _measured(long: pd.DataFrame, plan_row: dict, col: dict, analyses: dict, scale: float):
    cid = plan_row["cell_id"]
    metric = col.get("metric", "accuracy")
    if metric == "predicted_accuracy":
        if cid not in analyses:
            return None
        return 100 * predicted_accuracy(analyses[cid], float(col["attack_paper"]["eps"]) / scale)
    if long.empty:
        return None
    sel = long[(long["cell_id"] == cid) & (long["metric"] == metric)]
    if col.get("threat", "none") != "none":
        # a row may be measured with another attack than its column's (`attacks:` on the row)
        aid = (plan_row.get("attack_ids") or {}).get(col["name"], col["attack_id"])
        sel = sel[(sel["threat"] == col["threat"]) & (sel["attack_id"] == aid)]
    if not len(sel) or missing(sel["value"].iloc[0]):
        return None
    return 100 * float(sel["value"].iloc[0])


def _params(cell: dict) -> dict:
    """α, β, σ as the paper prints them; baselines (adversarial training) have none."""
    adv = cell["method"] == "adv"
    return {**{r.column: None if adv else cell[r.key] for r in REGULARIZERS.values() if r.column},
            "k": int(cell["steps"])}


def _over_seeds(long, row: dict, col: dict, analyses: dict, scale: float):
    """(mean, sd, seeds measured) of one table entry over the row's seeds (`seeds:` in a preset
    row: one cell per seed). The sample sd needs two seeds: with one it is None."""
    vals = [v for v in (_measured(long, {**row, "cell_id": c}, col, analyses, scale)
                        for c in row.get("cell_ids") or [row["cell_id"]]) if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, sd, len(vals)


def build_tables(plan: dict, long: pd.DataFrame, reference: pd.DataFrame, analyses: dict,
                 tolerance: float = 5.0) -> dict:
    """{table id: (paper-layout frame, comparison frame)}."""
    out = {}
    for table in plan["tables"]:
        layout, compare = [], []
        seeded = any(len(r.get("cell_ids") or ()) > 1 for r in table["rows"])
        for row in table["rows"]:
            cell = plan["cells"][row["cell_id"]]
            scale = plan["pixel_scale"][cell["dataset"]]
            label = row.get("label") or model_name(cell)
            rec = {"cell_id": row["cell_id"], "model": label, **_params(cell)}
            for col in table["columns"]:
                m, sd, n_seeds = _over_seeds(long, row, col, analyses, scale)
                p = published(reference, table, row, col)
                d = None if m is None or p is None else m - p
                rec[col["name"]] = m
                if seeded:  # mean and sd columns where a row of the table has several seeds
                    rec[f"{col['name']}{SD_SUFFIX}"] = sd
                    rec["seeds"] = len(row["cell_ids"])
                compare.append({"table": table["id"], "paper_table": table.get("paper_table"),
                                "row": row.get("paper_row"), "cell_id": row["cell_id"],
                                "model": label, "column": col["name"],
                                "measured_pct": m, "sd_pct": sd, "n_seeds": n_seeds,
                                "published_pct": p, "delta_pct": d,
                                "within": None if d is None else abs(d) <= tolerance})
            layout.append(rec)
        names = [c["name"] for c in table["columns"]]
        sds = [f"{n}{SD_SUFFIX}" for n in names] + ["seeds"] if seeded else []
        frame = pd.DataFrame(layout, columns=["cell_id", "model", *PAPER_PARAMS, *names, *sds])
        frame = frame.astype({n: "float64" for n in names + sds[:-1]})
        frame = frame.set_index(["cell_id", "model"])
        cmp = pd.DataFrame(compare, columns=COMPARE)
        cmp = typed(cmp, ints=["paper_table", "row", "n_seeds"], bools=["within"],
                    floats=["measured_pct", "sd_pct", "published_pct", "delta_pct"],
                    strings=["table", "cell_id", "model", "column"])
        # + measurement key, within/outside/uninformative, the paper's replicate spread
        out[table["id"]] = (frame, judge(cmp, table, plan, long, tolerance))
    return out


COMPARE = ["table", "paper_table", "row", "cell_id", "model", "column", "measured_pct", "sd_pct",
           "n_seeds", "published_pct", "delta_pct", "within"]
# the long form's columns with a title or a unit of their own (`value`'s unit: the `unit` column)
MEASUREMENT_COLUMNS = {
    "value": {"title": "the metric's value", "unit": "per row: the unit column"},
    "n": {"title": "images the value was measured on"},
    "eps": {"title": "ε of the attack", "unit": "the paper's units for the dataset "
                                                 "(MNIST: [0,1] pixels; CIFAR: 0-255)"},
    "step_size": {"title": "step of the attack", "unit": "as eps"},
    "wall_time_s": {"title": "wall time of the job", "unit": "seconds"},
}


def layout_parquet(table: dict, layout: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A paper-layout frame as its Parquet stores it: snake_case columns (alpha, beta, sigma, k,
    then <column>_pct), and {column: {"title", "unit"}} for its metadata, the titles being the
    names the Markdown prints."""
    names = layout_names([c["name"] for c in table["columns"]], SD_SUFFIX)
    frame = layout.rename(columns=names)  # k and seeds: plain integers, never missing
    units = {"k": "training steps", "seeds": "count"}
    meta = {new: {"title": old, **({"unit": "percent"} if new.endswith("_pct") else {}),
                  **({"unit": units[new]} if new in units else {})}
            for old, new in names.items() if new in frame.columns}
    return frame, meta




def _eq4_rows(plan: dict, analyses: dict) -> list[dict]:
    """Eq. 4 predictions go into the long-form table too, one per (cell, ε)."""
    rows = []
    for table in plan["tables"]:
        for col in (c for c in table["columns"] if c.get("metric") == "predicted_accuracy"):
            ids = (c for row in table["rows"] for c in row.get("cell_ids") or [row["cell_id"]])
            for cid in ids:  # every seed of a row
                if cid not in analyses:
                    continue
                cell = plan["cells"][cid]
                eps = float(col["attack_paper"]["eps"]) / plan["pixel_scale"][cell["dataset"]]
                rows.append({**cell_cols(cell), **attack_cols("white", None), "attack": "eq4",
                             "eps": col["attack_paper"]["eps"], "metric": "predicted_accuracy",
                             "n": len(analyses[cid]), "value": predicted_accuracy(analyses[cid], eps)})
    return rows


def aggregate(plan_path, inputs, reference_path, out_dir) -> pd.DataFrame:
    plan = read_json(plan_path)
    tolerance = float(plan.get("tolerance_pct", 5.0))
    out_dir = Path(out_dir)
    rows, analyses, records = [], {}, []
    for p in inputs:
        p = Path(p)
        if p.suffix == ".parquet":
            analyses[plan["analysis_files"][str(p)]] = read_parquet(p)
        else:
            records.append(check_record(p, read_json(p)))  # the record its path names
            rows += measurement_rows(records[-1]) + member_rows(records[-1])
    rows += worst_case_rows(records)
    for gap in worst_case_gaps(plan, records):  # a worst case over fewer attacks than it shows
        print(f"lsqueeze aggregate: warning: {gap}", file=sys.stderr)
    reference = pd.read_csv(reference_path)
    tables = build_tables(plan, pd.DataFrame(rows), reference, analyses, tolerance)
    long = pd.DataFrame(rows + _eq4_rows(plan, analyses))
    long = long.drop_duplicates(subset=["cell_id", "threat", "attack_id", "attack", "eps",
                                        "source_id", "metric"], ignore_index=True)
    long = with_names(long, plan)  # the model's display name and preset cell name by its id
    prov = provenance(plan, long)
    # pandas.read_parquet(...).attrs["environment_lock"]: what the tables were built with
    save_table(typed_measurements(long), out_dir / "measurements.parquet", MEASUREMENT_COLUMNS,
               attrs={"environment_lock": prov["lock"]})
    from lsqueeze.report.masking import masking_flags  # gradient-masking checks, one row per check

    masking = masking_flags(long, pixel_scale=plan.get("pixel_scale"))
    masking.insert(1, "model", masking["cell_id"].map(display_names(plan)).astype("string"))
    save_table(masking, out_dir / "masking.parquet", MASKING_COLUMNS)
    for table in plan["tables"]:
        layout, compare = tables[table["id"]]
        layout_file, compare_file, _ = table_files(table["id"])
        frame, columns = layout_parquet(table, layout)
        save_table(frame, out_dir / layout_file, columns, index=True)  # (cell_id, model) index
        save_table(compare, out_dir / compare_file, COMPARE_COLUMNS)
    for table in plan["tables"]:  # one page per table, for the Snakemake report
        with atomic_path(out_dir / table_files(table["id"])[2]) as tmp:
            tmp.write_text(stamp_html(render_html({"tables": [table]},
                                                  {table["id"]: tables[table["id"]]},
                                                  tolerance, prov)))
    with atomic_path(out_dir / "measurements.html") as tmp:
        tmp.write_text(stamp_html(measurements_html(typed_measurements(long), prov)))
    for name, text in (("tables.md", stamp_markdown(render_markdown(plan, tables, tolerance, prov)
                                                    + masking_section(masking))),
                       ("tables.html", stamp_html(render_html(plan, tables, tolerance, prov,
                                                              masking)))):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(text)
    return long
