"""Claim verdicts: the paper's headline claims (lsqueeze/data/claims.yaml) checked against a run's tables.

Aggregation layer: reads only what `aggregate` wrote (the per-table compare Parquets, the
long-form measurements for the number of test images, the gradient-masking checks) and the
tables plan; pandas only, no model code.

A claim is a list of checks. A check names its measurements by paper table (or preset table id),
paper row and column properties, so one claims file serves every preset; a measurement a preset
does not have makes its check "not measured in this preset". Each check reduces to a margin d
(how far the criterion holds: d ≥ 0 holds) and the spread s of d, from the seed sd of each side
where a row has several seeds and never below the binomial standard error of an accuracy on n
test images; a one-seed row adds the training variance (lsqueeze.report.evidence, which reads
the measurements). A check is reproduced
only when d > 2 s (d < −2 s: not reproduced; between: not distinguishable). A reproduced
robustness check on a model that a gradient-masking check flags reads "reproduced under the
paper's attack only" (naming the attack that breaks it) and counts as not reproduced. A claim is
reproduced when every check is measured and reproduced; a clearly failed (or masked) check decides
"not reproduced"; an unmeasured check makes it "partly measured", never reproduced. The published
numbers are judged by the same rule (on the paper's 10,000 test images, one seed each).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from lsqueeze.report.evidence import Context, as_number, reduce_entries

REPRODUCED, REFUTED, UNCLEAR, UNMEASURED = ("reproduced", "not reproduced", "not distinguishable",
                                            "not measured in this preset")
PARTLY = "partly measured"                                # a claim with an unmeasured check
MASKED = "reproduced under the paper's attack only"       # a check on a flagged model
VERDICTS = (REPRODUCED, REFUTED, UNCLEAR, PARTLY, UNMEASURED)
SIGMAS = 2.0  # d must exceed 2 spreads (~98% one-sided) to decide a check either way
CHECK_KINDS = ("at_least", "at_most", "within", "flat", "same_order")
COLUMNS = ["claim", "claim_verdict", "check", "kind", "criterion", "lhs", "lhs_value", "lhs_sd",
           "lhs_seeds", "lhs_published", "rhs", "rhs_value", "rhs_sd", "rhs_seeds",
            "rhs_published", "d", "spread", "verdict", "masked_by", "paper_holds",
           "paper_verdict", "cells"]


class ClaimsError(ValueError):
    pass


# --- the claims file ------------------------------------------------------------------------

def load_claims(path) -> list[dict]:
    """The claims of a claims file, checked for the keys the evaluation needs."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    claims = doc.get("claims")
    if not isinstance(claims, list) or not claims:
        raise ClaimsError(f"{path}: `claims` must be a non-empty list")
    ids = set()
    for i, c in enumerate(claims):
        where = f"{path}: claims[{i}]"
        for key in ("id", "statement", "source", "criterion", "checks"):
            if not c.get(key):
                raise ClaimsError(f"{where}: missing key {key!r}")
        if c["id"] in ids:
            raise ClaimsError(f"{where}: duplicate id {c['id']!r}")
        ids.add(c["id"])
        for j, chk in enumerate(c["checks"]):
            if chk.get("kind") not in CHECK_KINDS:
                raise ClaimsError(f"{where}.checks[{j}].kind: {chk.get('kind')!r} is not allowed "
                                  f"(allowed: {', '.join(CHECK_KINDS)})")
            sides = ("lhs", "rhs") if chk["kind"] not in ("flat",) else ("lhs",)
            for side in sides:
                sel = chk.get(side)
                if side == "rhs" and isinstance(sel, (int, float)):
                    continue
                if not isinstance(sel, dict) or "table" not in sel or "column" not in sel:
                    raise ClaimsError(f"{where}.checks[{j}].{side}: needs `table` and `column`"
                                      f"{' (or a number)' if side == 'rhs' else ''}")
                if side == "lhs" and not isinstance(chk.get("masking", True), bool):
                    raise ClaimsError(f"{where}.checks[{j}].masking: must be true or false")
                if sel.get("reduce") not in (None, "min", "max"):
                    raise ClaimsError(f"{where}.checks[{j}].{side}.reduce: {sel['reduce']!r} "
                                      f"is not allowed (allowed: min, max)")
    return claims


# --- verdicts ---------------------------------------------------------------------------------

def verdict(d: float | None, s: float) -> str:
    """A check's verdict from its margin d (≥ 0: the criterion holds) and the spread of d."""
    if d is None:
        return UNMEASURED
    if abs(d) <= SIGMAS * s:
        return UNCLEAR
    return REPRODUCED if d > 0 else REFUTED


def claim_verdict(verdicts: list[str]) -> str:
    """Every check measured and reproduced; a failed or masked check refutes; else partly
    measured (an unmeasured check) or not distinguishable."""
    measured = [v for v in verdicts if v != UNMEASURED]
    if not measured:
        return UNMEASURED
    if REFUTED in measured or MASKED in measured:
        return REFUTED
    if len(measured) < len(verdicts):
        return PARTLY
    return UNCLEAR if UNCLEAR in measured else REPRODUCED


def _criterion(chk: dict, lhs: str, rhs: str) -> str:
    scale, margin, tol = chk.get("scale", 1), chk.get("margin", 0), chk.get("tol", 0)
    r = f"{scale:g} × {rhs}" if scale != 1 else rhs
    r += f" {'+' if margin >= 0 else '−'} {abs(margin):g}" if margin else ""
    return {"at_least": f"{lhs} ≥ {r}", "at_most": f"{lhs} ≤ {r}",
            "within": f"|{lhs} − {rhs}| ≤ {tol:g}", "flat": f"max − min of {lhs} ≤ {tol:g}",
            "same_order": f"{lhs} and {rhs} rank the models alike"}[chk["kind"]]


def _margin(kind, a, b, chk):
    """d (criterion holds when ≥ 0) from two values; None when one is missing."""
    if a is None or b is None:
        return None
    scale, margin = float(chk.get("scale", 1)), float(chk.get("margin", 0))
    if kind == "at_least":
        return a - (scale * b + margin)
    if kind == "at_most":
        return scale * b + margin - a
    return float(chk.get("tol", 0)) - abs(a - b)  # within


def _result(chk, label, lhs, rhs, d, s, paper_d, cells, lhs_text, rhs_text, paper_s=0.0):
    side = lambda e, k: None if e is None else e.get(k)  # noqa: E731
    return {"check": label, "kind": chk["kind"],
            "criterion": chk.get("text") or _criterion(chk, "measured", "reference"),
            "lhs": lhs_text, "lhs_value": side(lhs, "value"), "lhs_sd": side(lhs, "sd"),
            "lhs_seeds": side(lhs, "seeds"), "lhs_published": side(lhs, "published"),
            "rhs": rhs_text, "rhs_value": side(rhs, "value"), "rhs_sd": side(rhs, "sd"),
            "rhs_seeds": side(rhs, "seeds"), "rhs_published": side(rhs, "published"),
            "d": d, "spread": s, "verdict": verdict(d, s), "masked_by": None,
            "paper_holds": None if paper_d is None else bool(paper_d >= 0),
            "paper_verdict": None if paper_d is None else verdict(paper_d, paper_s),
            "cells": sorted(set(cells)),
            # the models the check calls robust: a gradient-masking flag on one of them matters
            # (the worst case already counts every attack at its ε: no flag can add one)
            "robust_cells": sorted(set(lhs.get("cells") or [])) if (
                lhs is not None and chk["kind"] == "at_least"
                and lhs.get("threat") in ("white", "black")) else [],
            "robust_attack": None if lhs is None else lhs.get("attack_id"),
            "robust_eps": None if lhs is None else lhs.get("eps"),
            "masking": chk.get("masking", True)}


def evaluate_check(chk: dict, ctx: Context) -> list[dict]:
    """One result per compared row (or pair of rows, for same_order)."""
    kind, out = chk["kind"], []
    lhs_rows = ctx.select(chk["lhs"])
    if kind == "flat":
        for _, text, entries in lhs_rows:
            if len(entries) < 2:
                out.append(_result(chk, text, None, None, None, 0.0, None, [], text, ""))
                continue
            hi, lo = max(entries, key=lambda e: e["value"]), min(entries, key=lambda e: e["value"])
            d = float(chk["tol"]) - (hi["value"] - lo["value"])
            s = math.hypot(ctx.spread(hi, False), ctx.spread(lo, False))  # one model
            pubs = [e["published"] for e in entries]
            pd_ = None if None in pubs else float(chk["tol"]) - (max(pubs) - min(pubs))
            ps = 0.0
            if pd_ is not None:
                phi = max(entries, key=lambda e: e["published"])
                plo = min(entries, key=lambda e: e["published"])
                ps = math.hypot(ctx.paper_spread(phi, False), ctx.paper_spread(plo, False))
            out.append(_result(chk, text, hi, lo, d, s, pd_, hi["cells"],
                               f"{hi['column']} (max)", f"{lo['column']} (min)", ps))
        return out
    if kind == "same_order":
        rhs_rows = {key: e for key, _, e in ctx.select(chk["rhs"])}
        by_table: dict = {}
        for key, text, entries in lhs_rows:
            x, y = reduce_entries(entries, chk["lhs"].get("reduce")), reduce_entries(rhs_rows.get(key, []),
                                                                       chk["rhs"].get("reduce"))
            by_table.setdefault(key[0], []).append((text, x, y))
        for rows in by_table.values():
            for i in range(len(rows)):
                for j in range(i + 1, len(rows)):
                    out.append(_order(chk, rows[i], rows[j], ctx))
        if not out:
            out.append(_result(chk, f"Table {chk['lhs']['table']}: fewer than two models", None,
                               None, None, 0.0, None, [], "", ""))
        return out
    const = chk["rhs"] if isinstance(chk["rhs"], (int, float)) else None
    rhs_rows = [] if const is not None else ctx.select(chk["rhs"])
    rhs_by_key = {key: reduce_entries(e, chk["rhs"].get("reduce")) for key, _, e in rhs_rows}
    only = rhs_rows[0] if len(rhs_rows) == 1 else None  # one reference row: every lhs row vs it
    for key, text, entries in lhs_rows:
        a = reduce_entries(entries, chk["lhs"].get("reduce"))
        if const is not None:
            b, b_text = {"value": float(const), "published": float(const), "n": None}, "fixed"
        elif only is not None:
            b, b_text = rhs_by_key[only[0]], only[1]
        else:
            b, b_text = rhs_by_key.get(key), next((t for k, t, _ in rhs_rows if k == key), "—")
        a_text = a["column"] if a else ""
        if b and b.get("column"):  # the reference's row, unless it is the compared row itself
            b_text = b["column"] if b["row"] == text else f"{b['row']} · {b['column']}"
        d = _margin(kind, None if a is None else a["value"], None if b is None else b["value"], chk)
        show = {"value": float(const)} if const is not None else b  # a fixed number: no paper
        if d is None:
            out.append(_result(chk, text, a, show, None, 0.0, None, [], a_text, b_text))
            continue
        scale = float(chk.get("scale", 1)) if kind in ("at_least", "at_most") else 1.0
        # two models: training variance counts; one model under two attacks: it moves both alike
        other = const is None and set(b.get("cells") or ()) != set(a["cells"])
        one = const is None and not other
        s = math.hypot(ctx.spread(a, not one), scale * ctx.spread(b, other) if const is None else 0.0)
        pd_ = _margin(kind, a["published"], b["published"], chk)
        ps = math.hypot(ctx.paper_spread(a, not one),
                        scale * ctx.paper_spread(b, other) if const is None else 0.0)
        out.append(_result(chk, text, a, show, d, s, pd_,
                           a["cells"] + (b.get("cells") or []), a_text, b_text, ps))
    return out


def _order(chk, one, two, ctx):
    """Do both columns order two models the same way? Unclear when both gaps are in the noise;
    not reproduced when one column separates the models clearly and the other ranks them equal
    (Eq. 4 predicting the same accuracy for models that FGSM puts 50 points apart tracks
    nothing)."""
    (t1, x1, y1), (t2, x2, y2) = one, two
    label = f"{t1} vs {t2}"
    if None in (x1, y1, x2, y2):
        return _result(chk, label, None, None, None, 0.0, None, [], "", "")
    dx, dy = x1["value"] - x2["value"], y1["value"] - y2["value"]
    sx, sy = (math.hypot(ctx.spread(x1), ctx.spread(x2)),
              math.hypot(ctx.spread(y1), ctx.spread(y2)))
    d, s = _order_margin(dx, dy, sx, sy)
    pubs = (x1["published"], x2["published"], y1["published"], y2["published"])
    paper_d = paper_s = None
    if None not in pubs:  # the published ranks, by the same rule
        paper_d, paper_s = _order_margin(
            pubs[0] - pubs[1], pubs[2] - pubs[3],
            math.hypot(ctx.paper_spread(x1), ctx.paper_spread(x2)),
            math.hypot(ctx.paper_spread(y1), ctx.paper_spread(y2)))
    return _result(chk, label, {**x1, "value": dx, "sd": None, "published": None},
                   {**y1, "value": dy, "sd": None, "published": None}, d, s, paper_d,
                   x1["cells"] + x2["cells"], f"Δ {x1['column']}", f"Δ {y1['column']}",
                   paper_s or 0.0)


def _order_margin(dx, dy, sx, sy) -> tuple[float, float]:
    """(d, spread) of "two columns rank two models alike" from the two gaps and their spreads:
    both gaps clear -> ± the smaller gap, decided (spread 0); one clear -> minus that gap against
    the larger spread (a column that ranks them equal); neither -> 0, not distinguishable."""
    clear_x, clear_y = abs(dx) > SIGMAS * sx, abs(dy) > SIGMAS * sy
    if clear_x and clear_y:
        return (1.0 if dx * dy > 0 else -1.0) * min(abs(dx), abs(dy)), 0.0
    if clear_x or clear_y:
        return -abs(dx if clear_x else dy), max(sx, sy)
    return 0.0, max(sx, sy)


# --- a run's verdicts -------------------------------------------------------------------------

def masked_by(result: dict, ctx: Context) -> str | None:
    """The attack that breaks a reproduced robustness check: a gradient-masking flag on one of the
    models it calls robust, named by the flag's stronger attack (the lower accuracy)."""
    if result["verdict"] != REPRODUCED or not result["robust_cells"] or ctx.masking is None \
            or not len(ctx.masking):
        return None
    m = ctx.masking
    flagged = m[m["cell_id"].isin(result["robust_cells"]) & m["flagged"].astype(bool)]
    names = []
    for f in flagged.itertuples():
        ref = getattr(f, "reference_attack_id", None)
        stronger = ref if isinstance(ref, str) and as_number(f.reference_pct) is not None \
            and f.reference_pct < f.accuracy_pct else f.attack_id
        # a flag matters at the check's ε, and only if the check did not measure that attack
        if stronger == result["robust_attack"] or (
                stronger in ctx.attack_eps and result["robust_eps"] is not None
                and not _same_eps(ctx.attack_eps[stronger], result["robust_eps"])):
            continue
        names.append(ctx.attack_names.get(stronger, stronger))
    return ", ".join(dict.fromkeys(names)) or None


def _same_eps(a, b) -> bool:
    a, b = as_number(a), as_number(b)
    return a is None and b is None or (a is not None and b is not None and math.isclose(a, b))


def evaluate_claims(claims: list[dict], ctx: Context) -> pd.DataFrame:
    """One row per compared measurement, with its claim's verdict beside it."""
    rows = []
    for c in claims:
        results = [r for chk in c["checks"] for r in evaluate_check(chk, ctx)]
        for r in results:
            r["masked_by"] = masked_by(r, ctx) if r["masking"] else None
            if r["masked_by"]:
                r["verdict"] = MASKED
        cv = claim_verdict([r["verdict"] for r in results])
        rows += [{"claim": c["id"], "claim_verdict": cv, **r} for r in results]
    return pd.DataFrame(rows, columns=COLUMNS)


def masking_for(masking: pd.DataFrame | None, cells) -> pd.DataFrame:
    """The gradient-masking checks run on the models a claim rests on."""
    if masking is None or not len(masking):
        return pd.DataFrame(columns=["cell_id", "check", "flagged", "detail"])
    return masking[masking["cell_id"].isin(set(cells))]


def summary(results: pd.DataFrame) -> dict:
    """Claims per verdict (the DVC metric): reproduced / total and the rest."""
    per_claim = results.drop_duplicates("claim")["claim_verdict"].tolist()
    out = {"total": len(per_claim)}
    for v in VERDICTS:
        out[v.replace(" in this preset", "").replace(" ", "_")] = per_claim.count(v)
    return out
