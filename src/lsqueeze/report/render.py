"""The aggregated tables as text: tables.md and tables.html, every number as "measured
(published, Δ)" with the tolerance summary, the provenance and the masking checks."""

from __future__ import annotations

import html

import pandas as pd

from lsqueeze.plan.build import (
    PAPER_PARAMS,
    steps_tag,
)
from lsqueeze.report.agreement import counts, headline
from lsqueeze.report.tablemeta import (
    caption,
    masking_section,
    missing,
    provenance_lines,
)


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
