"""How far the measured tables agree with the paper, counted honestly.

- Distinct measurements, not published comparisons: the paper prints one measurement in several
  places (Table 2 ⊂ 6, 3 ⊂ 7, 4 ⊂ 8, FGSM and restart columns shared between tables), so 710
  published values cover far fewer measurements. Each comparison carries the key of what was
  measured (`measurement`); a measurement agrees when all its informative comparisons do.
- Uninformative pairs: a broken model (clean accuracy near chance) reproduces any small published
  number — a collapsed network scores at or below chance under every attack. An attack entry of
  such a model whose measured and published values both sit at or below chance + BROKEN_MARGIN
  counts as "uninformative", neither agreement nor disagreement.
- The paper's own replicate spread: rows of one table with the same parameters (Table 6 rows 2/14
  and 3/15, trained separately) differ by up to ~2 points, which is the scale against which a
  tolerance of ±2 must be read. Each comparison carries the spread of its replicate group.
"""

from __future__ import annotations

import pandas as pd

from lsqueeze.report.tablemeta import missing

# Clean accuracy within this many points of chance marks a model as broken, and attack accuracies
# at or below chance + this many points are what a broken model scores anyway.
BROKEN_MARGIN = 5.0
STATUS = ("within", "outside", "uninformative")


def measurement_key(row: dict, col: dict) -> str:
    """What a table entry measures, independent of the table it is printed in."""
    cid = row["cell_id"]
    metric = col.get("metric", "accuracy")
    if metric == "predicted_accuracy":
        return f"{cid}|predicted_accuracy|{col['attack_paper']['eps']}"
    if col.get("threat", "none") == "none":
        return f"{cid}|{metric}"
    aid = (row.get("attack_ids") or {}).get(col["name"], col.get("attack_id"))
    return f"{cid}|{col['threat']}|{aid}"


def chance_pct(plan: dict, dataset: str) -> float:
    """Chance accuracy in percent: 1 / number of classes (the plan's num_classes; 10 if absent)."""
    return 100.0 / float((plan.get("num_classes") or {}).get(dataset, 10))


def clean_accuracy_pct(long: pd.DataFrame, cell_ids) -> float | None:
    """Measured clean test accuracy (percent) averaged over the row's cells; None if not trained."""
    if long is None or long.empty or "metric" not in long.columns:
        return None
    sel = long[long["cell_id"].isin(list(cell_ids)) & (long["metric"] == "test_accuracy")]
    vals = [float(v) for v in sel["value"] if not missing(v)]
    return 100 * sum(vals) / len(vals) if vals else None


def judge(cmp: pd.DataFrame, table: dict, plan: dict, long: pd.DataFrame,
          tolerance: float) -> pd.DataFrame:
    """Add `measurement`, `status` (within | outside | uninformative | None when not compared)
    and `replicate_spread_pct` (the paper's max − min over this entry's replicate rows) to one
    table's comparison frame, whose rows follow table rows × columns in order."""
    cmp = cmp.copy()
    keys, status, groups = [], [], []
    entries = [(row, col) for row in table["rows"] for col in table["columns"]]
    if len(entries) != len(cmp):
        raise ValueError(f"table {table['id']}: {len(cmp)} comparisons for {len(entries)} entries")
    for (row, col), rec in zip(entries, cmp.to_dict("records")):
        cell = plan["cells"][row["cell_id"]]
        keys.append(measurement_key(row, col))
        # Replicates: same printed parameters and label, any seed.
        groups.append((col["name"], row.get("label", ""), cell["dataset"], cell["method"],
                       cell.get("alpha"), cell.get("beta"), cell.get("sigma"), cell["steps"]))
        m, p = rec["measured_pct"], rec["published_pct"]
        if missing(m) or missing(p):
            status.append(None)
            continue
        attack_entry = col.get("threat", "none") != "none" or col.get("metric") == "predicted_accuracy"
        floor = chance_pct(plan, cell["dataset"]) + BROKEN_MARGIN
        clean = clean_accuracy_pct(long, row.get("cell_ids") or [row["cell_id"]])
        if attack_entry and clean is not None and clean <= floor and m <= floor and p <= floor:
            status.append("uninformative")
        else:
            status.append("within" if abs(m - p) <= tolerance else "outside")
    cmp["measurement"] = keys
    cmp["status"] = pd.Series(status, index=cmp.index, dtype=object)
    spreads = _spreads(groups, cmp["published_pct"])
    cmp["replicate_spread_pct"] = pd.Series([spreads.get(g) for g in groups], index=cmp.index,
                                            dtype="float64")
    return cmp


def _spreads(groups: list, published: pd.Series) -> dict:
    """{group: max − min of its published values} for groups printed more than once."""
    vals: dict = {}
    for g, p in zip(groups, published):
        if not missing(p):
            vals.setdefault(g, []).append(float(p))
    return {g: max(v) - min(v) for g, v in vals.items() if len(v) > 1}


def counts(cmp: pd.DataFrame | None) -> dict:
    """Agreement counts of comparison frames (one or several tables, concatenated).

    compared/within/uninformative count printed numbers; measurements/measurements_within/
    measurements_uninformative count distinct measurements: one agrees when every informative
    comparison of it is within tolerance, and is uninformative when all of its comparisons are.
    """
    out = dict.fromkeys(["published", "compared", "within", "uninformative", "missing_measured",
                         "measurements", "measurements_within", "measurements_uninformative"], 0)
    out["replicate_spread"] = None
    if cmp is None or cmp.empty:
        return out
    both = cmp[cmp["status"].notna()]
    per = both.groupby("measurement")["status"].agg(set)
    spread = cmp["replicate_spread_pct"].dropna()
    out.update({
        "published": int(cmp["published_pct"].notna().sum()), "compared": len(both),
        "within": int((both["status"] == "within").sum()),
        "uninformative": int((both["status"] == "uninformative").sum()),
        "missing_measured": int((cmp["published_pct"].notna() & cmp["measured_pct"].isna()).sum()),
        "measurements": len(per),
        "measurements_within": int(sum("within" in st and "outside" not in st for st in per)),
        "measurements_uninformative": int(sum(st == {"uninformative"} for st in per)),
        "replicate_spread": round(float(spread.max()), 4) if len(spread) else None})
    return out


def headline(s: dict, tolerance: float) -> str:
    informative = s["measurements"] - s["measurements_uninformative"]
    text = (f"{s['measurements_within']} of {informative} distinct measurements within "
            f"±{tolerance:g} points of the paper")
    if s.get("replicate_spread") is not None:
        text += (f" (the paper's own replicates, same parameters trained again, differ by up to "
                 f"{s['replicate_spread']:.2f} points)")
    text += (f"; {s['measurements_uninformative']} uninformative (a broken model: clean accuracy "
             f"and both values within {BROKEN_MARGIN:g} points of chance). "
             f"{s['compared']} published numbers compared, {s['within']} within; "
             f"{s['published']} published values, {s['missing_measured']} not measured.")
    return text
