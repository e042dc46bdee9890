"""Long-form rows from the jobs' records: one row per model x attack x metric, with every cell and
attack parameter as a column (training metrics, evaluations, AutoAttack's members, and the worst
case per model and ε), what the aggregation (lsqueeze.report.tables) stacks into
measurements.parquet."""

from __future__ import annotations

import math
import sys

import pandas as pd

from lsqueeze.plan.build import (
    cell_id,
    config_hash,
)
from lsqueeze.plan.perexample import (
    WORST,
    accuracy_after,
    eps_key,
    unpack_members,
    worst_case_id,
    worst_cases,
)
from lsqueeze.registries.attack_kinds import member_metric
from lsqueeze.report.tablemeta import (
    split_images,
)

CELL_COLS = ["cell_id", "dataset", "method", "alpha", "beta", "sigma", "steps", "seed", "clip_noise"]
ATTACK_COLS = ["threat", "attack_id", "attack", "loss", "attack_steps", "eps", "step_size",
               "restarts", "random_start", "source_id"]


def predicted_accuracy(frame: pd.DataFrame, eps: float) -> float:
    """Eq. 4: share of images whose ε_L exceeds ε (misclassified images have ε_L < 0)."""
    return float((frame["eps_L"] > eps).mean())


def cell_cols(cell: dict) -> dict:
    out = {k: cell.get(k) for k in CELL_COLS if k != "cell_id"}
    out["cell_id"] = cell_id(cell)
    return out


def attack_cols(threat: str, attack: dict | None, source_id=None) -> dict:
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
                "diverged": rec["diverged"], "steps_done": rec["steps_done"],
                "precision": rec.get("precision")}  # the model's training precision
        # n: the images of the split the metric was computed on (the whole train or test split)
        return [{**cell_cols(cell), **attack_cols("none", None), "metric": m, "value": rec.get(m),
                 "n": split_images(m, cell["dataset"], rec), **prov}
                for m in ("train_accuracy", "test_accuracy", "mean_logit_norm")]
    cell = rec["cell"]
    prov = {"code_version": rec["code_version"], "config_hash": config_hash(rec["attack"]),
            "device": rec["device"], "wall_time_s": rec["wall_time_s"], "diverged": None,
            "steps_done": None, "precision": None}
    return [{**cell_cols(cell), **attack_cols(rec["kind"], rec["attack"], rec.get("source_id")),
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
        rows.append({**cell_cols(w["cell"]), **attack_cols(WORST, attack), "metric": "accuracy",
                     "value": w["accuracy"], "n": w["n"], "worst_of": list(w["attacks"]),
                     "code_version": None, "config_hash": None, "device": None,
                     "wall_time_s": None, "diverged": None, "steps_done": None,
                     "precision": None})
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
