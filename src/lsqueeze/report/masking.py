"""Gradient-masking checks on the long-form measurements (Athalye et al. 2018's sanity list).

A defense that only hides its gradients looks robust to gradient attacks but not to attacks that
do not trust them. Mosbach et al. (2018) report exactly this for logit squeezing. Three signs,
each computed per model cell from rows that are already in measurements.parquet:

- unbounded_eps: a white-box attack whose ε covers (most of) the [0,1] box should reach ~0%
  accuracy (Table 9's sanity sweep). Accuracy above `zero_tol` there means the attacker's
  gradients do not lead anywhere.
- black_beats_white: transfer from another model should not beat attacking the model itself
  (the attack success of black-box above white-box). A black-box accuracy *below* the white-box
  accuracy of the strongest comparable attack (same ε, same loss, the white-box attack at least
  as many steps) means the model's own gradients mislead the white-box attacker.
- autoattack_gap: AutoAttack (its Square member needs no gradient) far below PGD at the same ε.
- not_converged: a bigger budget at the same ε — more PGD steps or restarts, or AutoAttack —
  lowers a PGD accuracy by more than `converge_tol` (Carlini et al. 2019's checklist: more
  iterations must not keep finding adversarial examples). One row per cell: its largest gap.
  The number a table reports for the smaller budget then overstates the robustness.

`masking_flags` returns one row per check performed, flagged or not, so a table can say "checked".
Its accuracies are percent points (accuracy_pct, reference_pct, gap_pct = accuracy − reference),
as the tables print them; the long form it reads holds fractions.
"""

from __future__ import annotations

import math

import pandas as pd

from lsqueeze.plan.build import RECIPES
from lsqueeze.registries.attack_kinds import budget
from lsqueeze.report.tablemeta import typed
from lsqueeze.runtime.values import missing

COLUMNS = ["cell_id", "dataset", "check", "flagged", "accuracy_pct", "reference_pct", "gap_pct",
           "attack_id", "reference_attack_id", "source_id", "detail"]
STRINGS = ["cell_id", "dataset", "check", "attack_id", "reference_attack_id", "source_id", "detail"]


def _eps_pixel(eps, dataset, pixel_scale) -> float:
    """ε in [0,1] pixel units; None/NaN/inf (unbounded) -> inf."""
    if missing(eps):
        return math.inf
    scale = (pixel_scale or {}).get(dataset) or RECIPES.get(dataset, {}).get("pixel_scale", 1.0)
    return float(eps) / float(scale)


def _accuracy_rows(long: pd.DataFrame, pixel_scale) -> pd.DataFrame:
    if not {"metric", "threat", "value"} <= set(long.columns):
        return long.iloc[0:0]
    df = long[(long["metric"] == "accuracy") & long["threat"].isin(["white", "black"])].copy()
    if df.empty:
        return df
    df["eps_pixel"] = [_eps_pixel(e, d, pixel_scale) for e, d in zip(df["eps"], df["dataset"])]
    df["eff_steps"] = [budget(r) for _, r in df.iterrows()]
    return df


def _pct(fraction: float) -> str:
    """A tolerance as the report prints accuracies: percent (0.05 -> "5")."""
    return f"{100 * fraction:g}"


def _row(r, check, flagged, value, reference, ref_attack=None, source=None, detail=""):
    """One check's row; value and reference are fractions (the long form's), stored as percent."""
    return {"cell_id": r["cell_id"], "dataset": r["dataset"], "check": check,
            "flagged": bool(flagged), "accuracy_pct": 100 * float(value),
            "reference_pct": None if reference is None else 100 * float(reference),
            "gap_pct": None if reference is None else 100 * (float(value) - float(reference)),
            "attack_id": r["attack_id"], "reference_attack_id": ref_attack,
            "source_id": source, "detail": detail}


def masking_flags(long: pd.DataFrame, *, large_eps: float = 0.5, zero_tol: float = 0.02,
                  black_tol: float = 0.01, autoattack_gap: float = 0.10,
                  converge_tol: float = 0.05, pixel_scale: dict | None = None) -> pd.DataFrame:
    """One row per check and cell; `flagged` marks a sign of gradient masking.

    long: the long-form measurements (columns as measurements.measurement_rows writes them; accuracy
    values in [0,1], ε in the paper's units). large_eps: the ε in pixel units from which an
    attack counts as unbounded (0.5: any image can be moved to mid-grey). zero_tol: accuracy
    still counted as ~0. black_tol: how far black-box accuracy may sit below white-box before it
    is flagged (sampling noise of a reused subset). converge_tol: how much a bigger attack budget
    may lower a PGD accuracy (the paper's own restart and step sweeps move it by ≤ 2.4 points).
    pixel_scale: {dataset: scale}, defaults to the built-in recipes.
    """
    df = _accuracy_rows(long, pixel_scale)
    out = []
    if df.empty:
        return _frame(out)
    white, black = df[df["threat"] == "white"], df[df["threat"] == "black"]
    for _, rows in white.groupby("cell_id"):
        big = rows[rows["eps_pixel"] >= large_eps]
        if len(big):
            best = big.loc[big["value"].idxmin()]  # the strongest unbounded attack decides
            out.append(_row(best, "unbounded_eps", best["value"] > zero_tol, best["value"], 0.0,
                            detail=f"min accuracy over {len(big)} attack(s) with ε ≥ {large_eps:g} "
                                   f"(pixel units); expected ≤ {_pct(zero_tol)}%"))
        aa = rows[rows["attack"] == "autoattack"]
        for _, a in aa.iterrows():
            pgd = rows[(rows["attack"] == "pgd") & (rows["eps_pixel"] == a["eps_pixel"])]
            if len(pgd):
                p = pgd.loc[pgd["value"].idxmin()]
                out.append(_row(a, "autoattack_gap", p["value"] - a["value"] > autoattack_gap,
                                a["value"], p["value"], ref_attack=p["attack_id"],
                                detail=f"AutoAttack vs strongest PGD at the same ε; flagged when "
                                       f"lower by more than {_pct(autoattack_gap)} points"))
        gaps = []  # (gap, weaker PGD row, stronger row) at one ε
        for _, p in rows[rows["attack"] == "pgd"].iterrows():
            more = rows[(rows["eps_pixel"] == p["eps_pixel"]) & (rows["eff_steps"] > p["eff_steps"])]
            if len(more):
                m = more.loc[more["value"].idxmin()]
                gaps.append((p["value"] - m["value"], p, m))
        if gaps:
            gap, p, m = max(gaps, key=lambda g: g[0])
            out.append(_row(p, "not_converged", gap > converge_tol, p["value"], m["value"],
                            ref_attack=m["attack_id"],
                            detail=f"PGD vs the lowest accuracy of a bigger attack budget at the "
                                   f"same ε; flagged when lower by more than {_pct(converge_tol)} points"))
    for _, b in black.iterrows():
        w = white[(white["cell_id"] == b["cell_id"]) & (white["eps_pixel"] == b["eps_pixel"])
                  & (white["eff_steps"] >= b["eff_steps"])
                  & ((white["loss"] == b["loss"]) | (white["attack"] == "autoattack"))]
        if w.empty:
            continue
        best = w.loc[w["value"].idxmin()]
        out.append(_row(b, "black_beats_white", b["value"] < best["value"] - black_tol, b["value"],
                        best["value"], ref_attack=best["attack_id"], source=b.get("source_id"),
                        detail=f"black-box vs strongest comparable white-box attack; flagged when "
                               f"the black-box accuracy is lower by more than {_pct(black_tol)} points"))
    return _frame(out)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The checks with Parquet types: floats (NaN where no reference), strings, a bool flag."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["flagged"] = frame["flagged"].astype(bool)
    for col in ("accuracy_pct", "reference_pct", "gap_pct"):
        frame[col] = pd.to_numeric(frame[col]).astype("float64")
    return typed(frame, strings=STRINGS)
