"""The claims stage's pages: claims.md and claims.html (the Snakemake report's page), and the
stage driver that reads a run's aggregated tables and writes them with claims.parquet.

Aggregation layer, like lsqueeze.report.claims: pandas only, no model code (no torch import).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from lsqueeze.report.claims import (
    MASKED,
    SIGMAS,
    UNMEASURED,
    ClaimsError,
    Context,
    evaluate_claims,
    load_claims,
    masking_for,
    summary,
)
from lsqueeze.report.tablemeta import CLAIMS_COLUMNS, PCT, checked_model, read_table, save_table, typed
from lsqueeze.runtime.files import atomic_path, read_json, read_parquet
from lsqueeze.runtime.rehearsal import stamp_html, stamp_markdown
from lsqueeze.runtime.values import missing


def _f(v, sd=None, seeds=None) -> str:
    if missing(v):
        return "—"
    text = f"{v:.2f}"
    if seeds and seeds > 1 and not missing(sd):
        text += f" ± {sd:.2f} ({int(seeds)} seeds)"
    return text


def _scale_line(plan: dict) -> str:
    steps = sorted({int(c["steps"]) for c in plan.get("cells", {}).values()})
    if not steps:
        return ""
    span = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
    return (f"Models in this preset train {span} steps (the paper: 80k–2M, Madry baselines 80k–100k); "
            f"a verdict says what these models show, not what the paper's would.")


def rule(basis: str) -> str:
    """The verdict rule in one paragraph, as claims.md prints it."""
    return (f"Each check compares measured accuracies (%) with the claim's criterion; d is how far "
            f"the criterion holds (d > 0: holds). A check is reproduced only when d exceeds "
            f"{SIGMAS:g} × its spread, not reproduced when d is below −{SIGMAS:g} × spread, and "
            f"not distinguishable in between. The spread combines each side's noise: the sd over "
            f"seeds where a row has several; for one seed, the binomial standard error on the n "
            f"test images together with the training variance between seeds ({basis}), which "
            f"is left out where both sides are the same model. A robustness check on a model "
            f"that a gradient-masking check flags reads \"reproduced under the paper's attack, "
            f"not under …\" and counts as not reproduced. A claim is reproduced only when every "
            f"check is measured and reproduced; one not reproduced (or masked) check makes it "
            f"not reproduced; an unmeasured check makes it partly measured. \"Paper\": the "
            f"published numbers judged by the same rule (one seed, 10,000 test images).")


def _cell(text: str) -> str:
    """A Markdown table cell: a `|` in a label would split it."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_text(r) -> str:
    if r.verdict == MASKED and isinstance(r.masked_by, str):
        return f"reproduced under the paper's attack, not under {r.masked_by}"
    return r.verdict


def render(claims: list[dict], results: pd.DataFrame, masking: pd.DataFrame | None,
           preset: str = "", note: str = "", plan: dict | None = None, basis: str = "") -> str:
    s = summary(results)
    lines = ["# The paper's claims, checked", ""]
    if preset:
        lines.append(f"Preset `{preset}`." + (f" {note.strip()}" if note else ""))
    scale = _scale_line(plan or {})
    if scale:
        lines.append(scale)
    lines += ["", f"**{s['reproduced']} of {s['total']} claims reproduced**; {s['not_reproduced']} "
              f"not reproduced, {s['not_distinguishable']} not distinguishable, "
              f"{s['partly_measured']} partly measured, {s['not_measured']} not measured in this "
              f"preset.", "", rule(basis or "default"), ""]
    for i, c in enumerate(claims, 1):
        res = results[results["claim"] == c["id"]]
        cv = res["claim_verdict"].iloc[0] if len(res) else UNMEASURED
        lines += [f"## {i}. {c['statement'].strip()} — **{cv}**", "",
                  f"Source: {c['source']}. Criterion: {c['criterion'].strip()}", ""]
        unmeasured = int((res["verdict"] == UNMEASURED).sum())
        if unmeasured and unmeasured < len(res):
            lines += [f"{unmeasured} of {len(res)} checks not measured in this preset.", ""]
        lines += ["| check | measured | reference | d ± spread | verdict | paper |",
                  "|---|---|---|---|---|---|"]
        for r in res.itertuples():
            meas = f"{r.lhs}: {_f(r.lhs_value, r.lhs_sd, r.lhs_seeds)}" if r.lhs else "—"
            if not missing(r.lhs_published):
                meas += f" (paper {_f(r.lhs_published)})"
            ref = "" if not r.rhs else f"{r.rhs}: {_f(r.rhs_value, r.rhs_sd, r.rhs_seeds)}"
            ref = "—" if ref.endswith(": —") and "·" not in ref else ref
            if ref and not missing(r.rhs_published):
                ref += f" (paper {_f(r.rhs_published)})"
            dd = "—" if missing(r.d) else f"{r.d:+.2f} ± {r.spread:.2f}"
            paper = r.paper_verdict if isinstance(r.paper_verdict, str) else "—"
            cells = (r.check, meas, ref, dd, _verdict_text(r), paper)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        cells = [x for cs in res["cells"] for x in cs]
        m = masking_for(masking, cells)
        flagged = m[m["flagged"].astype(bool)] if len(m) else m
        lines += ["", f"Gradient-masking checks on these models: {len(m)} run, {len(flagged)} flagged."]
        for f in flagged.itertuples():
            lines.append(f"- **{f.check}** on {checked_model(f)}: {f.detail}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_html(markdown: str, title: str = "Claims") -> str:
    """The page render() writes, as HTML: headings, paragraphs, pipe tables and lists only."""
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
           f"<title>{html.escape(title)}</title><style>table{{border-collapse:collapse;"
           "margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
           "</style></head><body>"]
    table, items = None, False
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if set("".join(cells)) <= set("-"):
                continue  # the header rule
            tag = "th" if table is None else "td"
            table = (table or []) + ["<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>"
                                                     for c in cells) + "</tr>"]
            continue
        if table is not None:
            out += ["<table>", *table, "</table>"]
            table = None
        if line.startswith("- "):
            out.append(("" if items else "<ul>") + f"<li>{_inline(line[2:])}</li>")
            items = True
            continue
        if items:
            out.append("</ul>")
            items = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out + ["</body></html>"]) + "\n"


# claims.parquet's accuracies (percent points: values, sds, published numbers, the margin d and
# its spread) carry the unit in their names
PCT_COLUMNS = ["lhs_value", "lhs_sd", "lhs_published", "rhs_value", "rhs_sd", "rhs_published", "d",
               "spread"]


def claims_parquet(results: pd.DataFrame) -> pd.DataFrame:
    """The verdicts as claims.parquet stores them: accuracies as `<name>_pct`, seeds as integers,
    paper_holds as a nullable boolean, `cells` as a list of cell ids."""
    out = results.copy()
    out["cells"] = [list(c) for c in out["cells"]]  # a Parquet list<string>
    out = typed(out, ints=["lhs_seeds", "rhs_seeds"], bools=["paper_holds"], floats=PCT_COLUMNS,
                strings=[c for c in out.columns if c not in (*PCT_COLUMNS, "cells", "lhs_seeds",
                                                            "rhs_seeds", "paper_holds")])
    return out.rename(columns={c: f"{c}{PCT}" for c in PCT_COLUMNS})


def run(plan_path, claims_path, tables_dir, out_dir, note: str = "", preset: str = "") -> dict:
    """The claims stage: claims.md and claims.parquet from the aggregated tables."""
    plan = read_json(plan_path)
    tables_dir, out_dir = Path(tables_dir), Path(out_dir)
    claims = load_claims(claims_path)
    compare = {}
    for t in plan["tables"]:
        p = tables_dir / f"table_{t['id']}_compare.parquet"
        if not p.exists():
            raise ClaimsError(f"{p}: missing (run the aggregate step first)")
        compare[str(t["id"])] = read_table(p, "compare")
    long_path, masking_path = tables_dir / "measurements.parquet", tables_dir / "masking.parquet"
    long = read_parquet(long_path) if long_path.exists() else None
    masking = read_table(masking_path, "masking") if masking_path.exists() else None
    ctx = Context(plan, compare, long, masking)
    results = evaluate_claims(claims, ctx)
    text = render(claims, results, masking, preset or plan.get("preset") or "", note, plan,
                  ctx.train_basis)
    save_table(claims_parquet(results), out_dir / "claims.parquet", CLAIMS_COLUMNS)
    for name, page in (("claims.md", stamp_markdown(text)), ("claims.html", stamp_html(to_html(text)))):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(page)
    return summary(results)
