"""Gradient-masking flags on synthetic long-form frames."""

import pandas as pd
import pytest

from lsqueeze.report.masking import COLUMNS, masking_flags


def row(cell, threat, attack, value, eps, loss="xent", steps=None, restarts=1, dataset="cifar10",
        source=None, aid=None):
    return {"cell_id": cell, "dataset": dataset, "threat": threat, "attack": attack, "loss": loss,
            "attack_steps": steps, "eps": eps, "restarts": restarts, "metric": "accuracy",
            "value": value, "source_id": source,
            "attack_id": aid or f"{attack}-{loss}-n{steps}-e{eps}-r{restarts}"}


def flags(rows, **kw):
    out = masking_flags(pd.DataFrame(rows), **kw)
    assert list(out.columns) == COLUMNS
    return out


def test_unbounded_eps_not_reaching_zero_is_flagged():
    rows = [  # Table 9 style sweep, CIFAR units (ε / 255)
        row("sq", "white", "pgd", 0.1448, 50, steps=30), row("sq", "white", "pgd", 0.0207, 100, steps=50),
        row("sq", "white", "pgd", 0.0022, 150, steps=50), row("sq", "white", "pgd", 0.0, 255, steps=200),
        # a masked model: even ε = 255 leaves 30% accuracy
        row("masked", "white", "pgd", 0.35, 150, steps=50),
        row("masked", "white", "pgd", 0.30, 255, steps=200),
        # an ordinary bounded evaluation: no unbounded check for this cell
        row("plain", "white", "pgd", 0.5, 8, steps=20),
    ]
    out = flags(rows).set_index("cell_id")
    assert set(out.index) == {"sq", "masked"}
    assert not out.loc["sq", "flagged"] and out.loc["sq", "accuracy_pct"] == 0.0
    assert out.loc["masked", "flagged"] and out.loc["masked", "accuracy_pct"] == pytest.approx(30)
    assert out.loc["masked", "attack_id"].endswith("e255-r1")
    # ε = 100/255 ≈ 0.39 < 0.5 is not "unbounded" by default; a lower threshold includes it
    assert flags([rows[1]]).empty and len(flags([rows[1]], large_eps=0.3)) == 1


def test_unbounded_eps_null_and_mnist_units():
    rows = [row("m", "white", "pgd", 0.2, None, steps=100, dataset="mnist"),
            row("n", "white", "pgd", 0.0, 0.6, steps=100, dataset="mnist"),
            row("o", "white", "pgd", 0.9, 0.3, steps=40, dataset="mnist")]
    out = flags(rows).set_index("cell_id")
    assert set(out.index) == {"m", "n"}
    assert out.loc["m", "flagged"] and not out.loc["n", "flagged"]


def test_black_box_stronger_than_white_box_is_flagged():
    rows = [
        row("ok", "white", "pgd", 0.50, 8, steps=20), row("ok", "white", "fgsm", 0.60, 8, steps=1),
        row("ok", "black", "pgd", 0.70, 8, steps=7, source="src"),
        row("bad", "white", "pgd", 0.50, 8, steps=20), row("bad", "white", "pgd", 0.45, 8, steps=40),
        row("bad", "black", "pgd", 0.20, 8, steps=7, source="src"),
        # within tolerance: 0.445 vs 0.45
        row("bad", "black", "fgsm", 0.445, 8, steps=1, source="src"),
    ]
    out = flags(rows)
    bb = out[out["check"] == "black_beats_white"]
    assert len(bb) == 3
    ok = bb[bb.cell_id == "ok"].iloc[0]
    assert not ok["flagged"] and ok["reference_pct"] == 50 and ok["source_id"] == "src"
    bad = bb[bb.cell_id == "bad"].sort_values("accuracy_pct")
    assert list(bad["flagged"]) == [True, False]
    assert bad.iloc[0]["reference_pct"] == pytest.approx(45)  # the strongest comparable white-box
    assert bad.iloc[0]["reference_attack_id"].startswith("pgd-xent-n40")


def test_black_box_needs_a_comparable_white_box_attack():
    rows = [
        row("c", "white", "pgd", 0.9, 8, loss="cw", steps=20),     # other loss
        row("c", "white", "pgd", 0.9, 16, steps=20),               # other ε
        row("c", "white", "fgsm", 0.9, 8, steps=1),                # fewer steps than the black PGD-7
        row("c", "black", "pgd", 0.1, 8, steps=7, source="src"),
    ]
    assert flags(rows).empty
    # restarts count as iterations: 1 step × 9 restarts ≥ 7 steps
    rows.append(row("c", "white", "pgd", 0.8, 8, steps=1, restarts=9))
    out = flags(rows).query("check == 'black_beats_white'")
    assert len(out) == 1 and out.iloc[0]["flagged"]


def test_autoattack_far_below_pgd_is_flagged():
    rows = [row("sq", "white", "pgd", 0.70, 0.3, steps=40, dataset="mnist"),
            row("sq", "white", "autoattack", 0.05, 0.3, loss=None, dataset="mnist"),
            row("at", "white", "pgd", 0.90, 0.3, steps=40, dataset="mnist"),
            row("at", "white", "autoattack", 0.88, 0.3, loss=None, dataset="mnist"),
            row("at", "black", "pgd", 0.95, 0.3, steps=40, source="nat", dataset="mnist")]
    out = flags(rows)
    aa = out[out.check == "autoattack_gap"].set_index("cell_id")
    assert aa.loc["sq", "flagged"] and not aa.loc["at", "flagged"]
    assert aa.loc["sq", "gap_pct"] == pytest.approx(-65)
    # AutoAttack is comparable to any black-box attack at its ε, whatever the loss
    bb = out[out.check == "black_beats_white"]
    assert len(bb) == 1 and bb.iloc[0]["reference_pct"] == pytest.approx(88) and not bb.iloc[0]["flagged"]


def test_ignores_other_metrics_and_empty_frames():
    rows = [{**row("x", "none", None, 0.99, None), "metric": "test_accuracy"}]
    assert flags(rows).empty
    assert masking_flags(pd.DataFrame(columns=["metric", "threat"])).empty
    assert masking_flags(pd.DataFrame()).empty


def test_accuracy_that_falls_with_a_bigger_budget_is_flagged():
    rows = [row("sq", "white", "pgd", 0.33, 0.3, steps=40, dataset="mnist"),
            row("sq", "white", "pgd", 0.23, 0.3, steps=40, restarts=5, dataset="mnist"),
            row("sq", "white", "pgd", 0.05, 0.3, steps=100, restarts=10, dataset="mnist"),
            row("sq", "white", "autoattack", 0.01, 0.3, loss=None, dataset="mnist"),
            row("sq", "white", "pgd", 0.00, None, steps=100, dataset="mnist"),  # another ε: apart
            row("at", "white", "pgd", 0.90, 0.3, steps=40, dataset="mnist"),
            row("at", "white", "pgd", 0.89, 0.3, steps=100, restarts=10, dataset="mnist"),
            row("at", "white", "autoattack", 0.88, 0.3, loss=None, dataset="mnist")]
    out = flags(rows)
    nc = out[out.check == "not_converged"].set_index("cell_id")
    assert len(nc) == 2  # one row per cell: its largest gap
    assert nc.loc["sq", "flagged"] and nc.loc["sq", "gap_pct"] == pytest.approx(32)
    assert nc.loc["sq", "accuracy_pct"] == pytest.approx(33)
    assert nc.loc["sq", "reference_pct"] == pytest.approx(1)
    assert not nc.loc["at", "flagged"] and nc.loc["at", "gap_pct"] == pytest.approx(2)
    assert nc.loc["sq", "detail"].endswith("lower by more than 5 points")  # percent, as printed
    assert flags(rows, converge_tol=0.5).query("check == 'not_converged'")["flagged"].sum() == 0
