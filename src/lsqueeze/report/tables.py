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

import html
import math
import sys
from pathlib import Path

import pandas as pd

from lsqueeze.plan.build import (
    PAPER_PARAMS,
    SD_SUFFIX,
    cell_id,
    config_hash,
    model_name,
    steps_tag,
    table_files,
)
from lsqueeze.plan.perexample import (
    WORST,
    accuracy_after,
    eps_key,
    unpack_members,
    worst_case_id,
    worst_cases,
)
from lsqueeze.plan.records import check_record, worst_case_gaps
from lsqueeze.registries.attack_kinds import member_metric
from lsqueeze.registries.regularizers import REGULARIZERS
from lsqueeze.report.agreement import counts, headline, judge
from lsqueeze.report.names import display_names, with_names
from lsqueeze.report.tablemeta import (
    COMPARE_COLUMNS,
    MASKING_COLUMNS,
    caption,
    layout_names,
    masking_section,
    measurements_html,
    missing,
    provenance,
    provenance_lines,
    save_table,
    split_images,
    typed,
    typed_measurements,
)
from lsqueeze.runtime.files import atomic_path, read_json, read_parquet
from lsqueeze.runtime.rehearsal import stamp_html, stamp_markdown

CELL_COLS = ["cell_id", "dataset", "method", "alpha", "beta", "sigma", "steps", "seed", "clip_noise"]
ATTACK_COLS = ["threat", "attack_id", "attack", "loss", "attack_steps", "eps", "step_size",
               "restarts", "random_start", "source_id"]


def predicted_accuracy(frame: pd.DataFrame, eps: float) -> float:
    """Eq. 4: share of images whose ε_L exceeds ε (misclassified images have ε_L < 0)."""
    return float((frame["eps_L"] > eps).mean())


def _cell_cols(cell: dict) -> dict:
    out = {k: cell.get(k) for k in CELL_COLS if k != "cell_id"}
    out["cell_id"] = cell_id(cell)
    return out


def _attack_cols(threat: str, attack: dict | None, source_id=None) -> dict:
    """An attack's columns; an attack without a bound (eps null in a preset) has ε = +inf, so
    that a missing ε (NaN) only ever means "no attack" (the clean rows)."""
    a = (attack or {}).get("paper", {})
    eps = a.get("eps")
    if attack is not None and threat != "none" and eps is None:
        eps = math.inf
    return {"threat": threat, "attack_id": (attack or {}).get("id"), "attack": a.get("attack"),
            "loss": a.get("loss"), "attack_steps": a.get("steps"), "eps": eps,
            "step_size": a.get("step_size"), "restarts": a.get("restarts"),
            "random_start": a.get("random_start"), "source_id": source_id}


def measurement_rows(rec: dict) -> list[dict]:
    """Long-form rows from one fragment: metrics.json (training) or an evaluation JSON."""
    if "spec" in rec:  # training metrics
        cell = rec["spec"]["cell"]
        prov = {"code_version": rec["code_version"], "config_hash": config_hash(rec["spec"]),
                "device": rec["device"], "wall_time_s": rec["wall_time_s"],
                "diverged": rec["diverged"], "steps_done": rec["steps_done"]}
        # n: the images of the split the metric was computed on (the whole train or test split)
        return [{**_cell_cols(cell), **_attack_cols("none", None), "metric": m, "value": rec.get(m),
                 "n": split_images(m, cell["dataset"], rec), **prov}
                for m in ("train_accuracy", "test_accuracy", "mean_logit_norm")]
    cell = rec["cell"]
    prov = {"code_version": rec["code_version"], "config_hash": config_hash(rec["attack"]),
            "device": rec["device"], "wall_time_s": rec["wall_time_s"], "diverged": None,
            "steps_done": None}
    return [{**_cell_cols(cell), **_attack_cols(rec["kind"], rec["attack"], rec.get("source_id")),
             "metric": "accuracy", "value": rec["accuracy"], "n": rec["n"], **prov}]


def worst_case_rows(records: list[dict]) -> list[dict]:
    """Long-form rows of the worst case per (model, ε): robust only if the image is right clean
    and every attack failed (lsqueeze.plan.perexample); `worst_of` lists what was combined. A
    model measured only by black-box attacks gets its worst transfer accuracy (attack
    "worst_transfer", id worst-transfer-e<ε>), which no table or card reports as robust accuracy.
    What a worst case does not cover is printed as one line each (the aggregate job's log)."""
    rows = []
    for w in worst_cases(records):
        for note in w["warnings"]:
            print(f"lsqueeze aggregate: warning: {w['cell_id']}, ε = {eps_key(w['eps'])}: {note}",
                  file=sys.stderr)
        if w["accuracy"] is None:
            continue
        attack = {"id": worst_case_id(w["eps"], w["kind"]),
                  "paper": {"attack": w["kind"], "eps": w["eps"]}}
        rows.append({**_cell_cols(w["cell"]), **_attack_cols(WORST, attack), "metric": "accuracy",
                     "value": w["accuracy"], "n": w["n"], "worst_of": list(w["attacks"]),
                     "code_version": None, "config_hash": None, "device": None,
                     "wall_time_s": None, "diverged": None, "steps_done": None})
    return rows


def member_rows(rec: dict) -> list[dict]:
    """AutoAttack's accuracy after each member (metric accuracy_after_<member>, e.g.
    accuracy_after_apgd_t), from the per-image breakdown its record keeps: where the accuracy
    fell, gradient-based members or only the gradient-free Square."""
    if "members" not in rec:
        return []
    members, codes = unpack_members(rec["members"], rec["n"])
    base = measurement_rows(rec)[0]
    return [{**base, "metric": member_metric(member), "value": value}
            for member, value in accuracy_after(members, codes).items() if member != "clean"]


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


def summary(tables: dict) -> dict:
    """Agreement counts over the given tables: printed comparisons and distinct measurements
    (lsqueeze.report.agreement.counts)."""
    return counts(pd.concat([c for _, c in tables.values()], ignore_index=True))


def _fmt(v) -> str:
    return "—" if missing(v) else f"{v:.2f}"


def _param(v) -> str:
    return "" if missing(v) else f"{v:g}"


def _grid(table: dict, layout: pd.DataFrame, compare: pd.DataFrame, tolerance: float):
    """Rows of (text, out_of_tolerance) per paper-layout cell, for Markdown and HTML alike.

    The comparison frame follows the table's rows × columns in order (build_tables): an entry is
    found by its row's position, since one cell may be printed in several rows (paper rows with
    their own published values)."""
    columns = table["columns"]
    entries = list(compare.itertuples())
    if len(entries) != len(layout) * len(columns):
        raise ValueError(f"table {table['id']}: {len(entries)} comparisons for {len(layout)} rows "
                         f"× {len(columns)} columns")
    rows = []
    for i, ((cid, model), rec) in enumerate(layout.iterrows()):
        seeds = int(rec["seeds"]) if "seeds" in rec and rec["seeds"] > 1 else 0
        name = (model or cid) + (f" ({seeds} seeds)" if seeds else "")
        cells = [(name, False)] + [(_param(rec[k]), False) for k in PAPER_PARAMS[:3]]
        cells.append((steps_tag(rec["k"]), False))
        for j, col in enumerate(columns):
            c = entries[i * len(columns) + j]
            if (c.cell_id, c.column) != (cid, col["name"]):
                raise ValueError(f"table {table['id']}: comparison {c.cell_id} {c.column!r} is "
                                 f"out of place (row {cid}, column {col['name']!r})")
            text = _fmt(c.measured_pct)
            if c.n_seeds > 1:  # mean ± sd over the row's seeds
                text += f" ± {_fmt(c.sd_pct)}"
            if not missing(c.published_pct):
                text += f" ({_fmt(c.published_pct)}, Δ {_fmt(c.delta_pct)})"
            cells.append((text, not missing(c.delta_pct) and abs(c.delta_pct) > tolerance))
        rows.append(cells)
    return ["model", *PAPER_PARAMS] + [c["name"] for c in table["columns"]], rows


def _md_cell(text: str) -> str:
    """A Markdown table cell: a `|` in a label or column name would end the cell, a line break the
    row."""
    return " ".join(str(text).splitlines()).replace("|", r"\|")


def _table_line(ts: dict, tolerance: float) -> str:
    if not ts["compared"]:
        return "No published number to compare with: measured values only."
    line = f"{ts['within']} of {ts['compared'] - ts['uninformative']} within ±{tolerance:g}"
    if ts["uninformative"]:
        line += f"; {ts['uninformative']} uninformative (broken model)"
    if ts.get("replicate_spread") is not None:
        line += f"; the paper's replicate rows differ by up to {ts['replicate_spread']:.2f}"
    return line + "."


def _headline(s: dict, tolerance: float) -> str:
    return headline(s, tolerance)


def render_markdown(plan: dict, tables: dict, tolerance: float, prov: dict | None = None) -> str:
    s = summary(tables)
    lines = ["# Measured vs published", ""]
    if prov:
        lines += ["  \n".join(provenance_lines(prov)), ""]
    lines += [f"Each number: measured % (published %, Δ = measured − published). "
              f"**{_headline(s, tolerance)}**", ""]
    for table in plan["tables"]:
        layout, compare = tables[table["id"]]
        ts = summary({table["id"]: (layout, compare)})
        head, rows = _grid(table, layout, compare, tolerance)
        lines += [f"## {table.get('title', 'Table ' + table['id'])}", ""]
        if caption(table):
            lines += [f"*{caption(table)}*", ""]
        lines += [_table_line(ts, tolerance), "",
                  "| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
        for cells in rows:
            lines.append("| " + " | ".join(f"**{_md_cell(t)}**" if bad else _md_cell(t)
                                           for t, bad in cells) + " |")
        lines.append("")
    lines.append(f"Bold: |Δ| > {tolerance:g} points.")
    return "\n".join(lines) + "\n"


def render_html(plan: dict, tables: dict, tolerance: float, prov: dict | None = None,
                masking: pd.DataFrame | None = None) -> str:
    s = summary(tables)
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Measured vs published</title>",
           "<style>table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;"
           "padding:2px 6px;text-align:right}td:first-child{text-align:left}.off{background:#fdd}"
           "caption{text-align:left;font-style:italic;padding:2px 0}"
           "</style></head><body>", "<h1>Measured vs published</h1>",
           *([f"<p>{'<br>'.join(provenance_lines(prov, html=True))}</p>"] if prov else []),
           f"<p>Each number: measured % (published %, Δ). <b>{html.escape(_headline(s, tolerance))}</b>"
           f" Shaded: |Δ| &gt; {tolerance:g} points.</p>"]
    for table in plan["tables"]:
        layout, compare = tables[table["id"]]
        head, rows = _grid(table, layout, compare, tolerance)
        out.append(f"<h2>{html.escape(table.get('title', 'Table ' + table['id']))}</h2><table>")
        if caption(table):
            out.append(f"<caption>{html.escape(caption(table))}</caption>")
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for cells in rows:
            out.append("<tr>" + "".join(f"<td class='off'>{html.escape(t)}</td>" if bad
                                        else f"<td>{html.escape(t)}</td>" for t, bad in cells) + "</tr>")
        out.append("</table>")
    if masking is not None:
        out.append(masking_section(masking, html=True))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
                rows.append({**_cell_cols(cell), **_attack_cols("white", None), "attack": "eq4",
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
