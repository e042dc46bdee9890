"""Summary numbers of a run for `dvc metrics` / `dvc plots` (written by the DVC stage).

The metrics are a directory, `metrics/<preset>/`, and `dvc metrics show` prints one line per file
in it: `summary.json` (numbers compared and within tolerance, claims, the environment lock), one
`tables/<table>.json` per table (numbers compared, within tolerance, mean |Δ|) and one
`models/<cell>.json` per model with its headline accuracies in percent (`clean`, `pgd` the paper's
white-box PGD, `aa` AutoAttack, `worst` the worst case) and `model`, the name the tables, claims
and figures print for it: a line a reader can take in, for the paper too. Every number beside
its published value sits in the comparison CSV instead, the data of `dvc plots show` /
`dvc plots diff`. Names are stable across parameter edits — table id, the
preset's cell name, the column name — not canonical cell ids, which change with a cell's values;
so a diff after editing one cell shows that cell's numbers changing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from lsqueeze.report.agreement import counts
from lsqueeze.report.names import row_label
from lsqueeze.report.tablemeta import read_table
from lsqueeze.runtime.files import atomic_dir, atomic_path, lock_digest, read_json, read_parquet
from lsqueeze.runtime.values import missing

CSV_COLUMNS = ["table", "cell", "column", "measured", "published", "delta"]
# The headline accuracies of a model (percent), each from the first table column of its kind that
# shows the model, in the preset's table order: `dvc metrics show` keys accuracy_pct.<cell>.<key>.
MODELS = "accuracy_pct"
NAMES = "model"  # models/<cell>.json's `model`: its display name (lsqueeze.report.names)
HEADLINE = {
    "clean": "clean test accuracy",
    "pgd": "white-box PGD on the cross-entropy, one restart, bounded ε (the paper's main attack)",
    "aa": "AutoAttack",
    "worst": "the worst case per image over every attack at one ε",
}


def _num(v):
    return None if missing(v) else round(float(v), 4)


def headline_kind(col: dict) -> str | None:
    """Which headline number a table column gives (a HEADLINE key), or None."""
    attack = col.get("attack_paper") or {}
    if col.get("metric") == "test_accuracy":
        return "clean"
    if col.get("threat") == "worst":
        return "worst"
    if col.get("threat") != "white" or col.get("metric", "accuracy") != "accuracy":
        return None
    if attack.get("attack") == "autoattack":
        return "aa"
    if attack.get("attack") == "pgd" and attack.get("loss") == "xent" \
            and (attack.get("restarts") or 1) == 1 and attack.get("eps") is not None:
        return "pgd"
    return None


def cell_name(row: dict) -> str:
    """A table row's model as the preset names it (its cell), else its cell id."""
    return row["cell"] if isinstance(row.get("cell"), str) else row["cell_id"]


def headline_columns(plan: dict) -> dict:
    """{cell name: {headline key: (table id, row cell id, column name)}} for every model a table
    shows: per key the first column of that kind, tables and columns in the preset's order."""
    out: dict = {}
    for table in plan["tables"]:
        first: dict = {}
        for col in table.get("columns", []):
            kind = headline_kind(col)
            if kind and kind not in first:
                first[kind] = col["name"]
        for row in table["rows"]:
            mine = out.setdefault(cell_name(row), {})
            for kind, name in first.items():
                mine.setdefault(kind, (str(table["id"]), row["cell_id"], name))
    return {cell: {k: where[k] for k in HEADLINE if k in where} for cell, where in out.items()
            if where}


def summarize(plan_path, tables_dir) -> tuple[dict, list[dict]]:
    """Return (metrics, comparison rows) from the tables plan and the per-table compare Parquets."""
    plan = read_json(plan_path)
    tol = float(plan.get("tolerance_pct", 5.0))
    metrics = {"tolerance_pct": tol, "tables": {}}
    rows, frames, measured = [], [], {}
    for table in plan["tables"]:
        tid = str(table["id"])
        compare = read_table(Path(tables_dir) / f"table_{tid}_compare.parquet", "compare")
        frames.append(compare)
        name_of = {r["cell_id"]: cell_name(r) for r in table["rows"]}
        deltas = []
        for rec in compare.to_dict("records"):
            cell = name_of.get(rec["cell_id"], rec["cell_id"])
            m, p, d = (_num(rec[k]) for k in ("measured_pct", "published_pct", "delta_pct"))
            measured.setdefault((tid, rec["cell_id"], rec["column"]), m)
            if d is not None:
                deltas.append(d)
            rows.append({"table": tid, "cell": cell, "column": rec["column"],
                         "measured": m, "published": p, "delta": d})
        c = counts(compare)  # within: informative comparisons only (lsqueeze.report.agreement)
        metrics["tables"][tid] = {
            "compared": c["compared"], "within_tolerance": c["within"],
            "uninformative": c["uninformative"],
            "mean_abs_delta": _num(sum(abs(d) for d in deltas) / len(deltas)) if deltas else None}
    # The headline counts distinct measurements: the paper prints many of them in two tables.
    c = counts(pd.concat(frames, ignore_index=True) if frames else None)
    metrics.update({"compared": c["compared"], "within_tolerance": c["within"],
                    **{k: c[k] for k in ("uninformative", "measurements", "measurements_within",
                                         "measurements_uninformative", "replicate_spread")}})
    metrics[MODELS] = _models(plan, measured, Path(tables_dir) / "measurements.parquet")
    # each key's model by the name the tables, the claims and the figures print
    labels = {cell_name(r): row_label(plan, r) for t in reversed(plan["tables"])
              for r in reversed(t["rows"])}  # the first row that names a cell
    metrics[NAMES] = {cell: labels[cell] for cell in metrics[MODELS] if cell in labels}
    # what the summary was computed in: the environment lock's digest (requirements.lock)
    metrics["environment_lock"] = lock_digest()
    claims = Path(tables_dir) / "claims.parquet"
    if claims.exists():  # the claims stage's verdicts: claims reproduced / total, and the rest
        from lsqueeze.report.claims import summary as claims_summary

        metrics["claims"] = claims_summary(read_parquet(claims))
    return metrics, rows


def _models(plan: dict, measured: dict, long_path: Path) -> dict:
    """{cell name: {headline key: percent}}: from the tables' columns; a model no table shows
    with a Test column gets its clean accuracy from the long form (mean over the row's seeds)."""
    clean = {}
    if long_path.exists():
        long = read_parquet(long_path)
        acc = long[long["metric"] == "test_accuracy"].dropna(subset=["value"])
        clean = acc.groupby("cell_id")["value"].mean().mul(100).to_dict()
    ids = {cell_name(r): r.get("cell_ids") or [r["cell_id"]] for t in reversed(plan["tables"])
           for r in reversed(t["rows"])}  # the first row that names a cell
    where_all = headline_columns(plan)
    models = {}
    for cell in ids:
        where = where_all.get(cell, {})
        values = {k: measured.get(w) for k, w in where.items()}
        if values.get("clean") is None:
            seeds = [clean[c] for c in ids[cell] if c in clean]
            values["clean"] = sum(seeds) / len(seeds) if seeds else None
        values = {k: round(values[k], 2) for k in HEADLINE if values.get(k) is not None}
        if values:
            models[cell] = values
    return dict(sorted(models.items()))


def plotted(rows: list[dict]) -> list[dict]:
    """The comparison rows `dvc plots` draws: those with a measured and a published number (a
    point needs both; an unpublished number would otherwise sit on an axis)."""
    return [r for r in rows if r["measured"] is not None and r["published"] is not None]


def metric_files(metrics: dict) -> dict:
    """{relative path: content} of the metrics directory: the summary, one file per table and one
    per model. A model named by its cell id (no cell name) sits in a folder per dataset."""
    summary = {k: v for k, v in metrics.items() if k not in ("tables", MODELS, NAMES)}
    files = {"summary.json": summary}
    files.update({f"tables/{tid}.json": t for tid, t in metrics["tables"].items()})
    names = metrics.get(NAMES, {})
    files.update({f"models/{cell}.json": {**m, **({NAMES: names[cell]} if cell in names else {})}
                  for cell, m in metrics[MODELS].items()})
    return files


def compare_png(rows: list[dict], out) -> None:
    """The plot of the comparison CSV as a PNG: `dvc plots show` draws the CSV with Vega-Lite,
    which its HTML loads from the internet, so offline it is blank; this one is drawn here, and
    `dvc plots show` puts it in the same page. One point per published number, coloured by table,
    and the line measured = published."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = plotted(rows)
    fig, ax = plt.subplots(figsize=(6, 5.2))
    ax.plot([0, 100], [0, 100], color="0.6", lw=1, label="measured = published")
    tables = sorted({r["table"] for r in points}, key=lambda t: (len(t), t))
    for i, table in enumerate(tables):
        mine = [r for r in points if r["table"] == table]
        ax.scatter([r["published"] for r in mine], [r["measured"] for r in mine], s=14,
                   color=plt.get_cmap("tab20")(i % 20), label=f"table {table}")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="published accuracy (%)",
           ylabel="measured accuracy (%)", title="measured vs published accuracy (%)")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    with atomic_path(out, digest=False) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def write_metrics(plan_path, tables_dir, out, csv_out=None, png_out=None) -> dict:
    """The metrics directory `out` (replaced whole: a model no longer in the preset leaves no
    file behind), the comparison CSV and its plot as a PNG; returns the metrics as one dict."""
    metrics, rows = summarize(plan_path, tables_dir)
    with atomic_dir(out) as tmp:
        for rel, content in metric_files(metrics).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    if csv_out:
        # measured vs published (percent), one row per published number: the scatter plot
        # `dvc plots` draws (.dvc/plots/measured_vs_published.json)
        with atomic_path(csv_out, digest=False) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, CSV_COLUMNS)
            w.writeheader()
            w.writerows(plotted(rows))
    if png_out:
        compare_png(rows, png_out)
    return metrics
