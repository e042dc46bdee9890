"""The committed real runs (reproduced/<preset>/): their preset still validates, their tables and
verdicts parse, and every kept model is the file its training recorded (sha256)."""

import hashlib
import json
import re

import pandas as pd
import pytest

from conftest import REPO
from lsqueeze.plan.schema import validate_file

RUNS = sorted(p for p in (REPO / "reproduced").iterdir() if p.is_dir())


def test_there_are_real_runs():
    assert {"mnist_cpu", "mnist_100k_cpu"} <= {p.name for p in RUNS}


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_preset_validates_and_tables_parse(run):
    validate_file(REPO / "params" / f"{run.name}.yaml")
    for name in ("measurements", "claims", "masking"):
        assert len(pd.read_parquet(run / f"{name}.parquet"))
    layouts = [p for p in run.glob("table_*.parquet") if not p.stem.endswith("_compare")]
    assert layouts and all(len(pd.read_parquet(p)) for p in layouts)
    md = (run / "tables.md").read_text()
    assert md.startswith("# Measured vs published") and "claims reproduced" in (
        run / "claims.md").read_text()
    assert (run / "README.md").exists() and (run / "summary.png").read_bytes()[:4] == b"\x89PNG"


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kept_models_are_the_trained_files():
    run = REPO / "reproduced" / "mnist_100k_cpu"
    models = sorted(run.glob("models/*/model.pt"))
    assert len(models) >= 3
    sums = dict(line.split()[::-1] for line in (run / "SHA256SUMS").read_text().splitlines())
    for model in models:
        metrics = json.loads((model.parent / "metrics.json").read_text())
        assert _sha256(model) == metrics["model_sha256"] == sums[str(model.relative_to(run))]
        assert metrics["steps_done"] == metrics["spec"]["cell"]["steps"]  # fully trained
        assert not metrics["diverged"]


def test_100k_tables_show_every_cell_beside_the_published_numbers():
    run = REPO / "reproduced" / "mnist_100k_cpu"
    cmp = pd.read_parquet(run / "table_6_compare.parquet")
    for column in ("Test", "white PGD-40+Rand X-ent", "white PGD-40+Rand CW"):
        rows = cmp[cmp["column"] == column]
        assert {1, 8} <= set(rows["row"])
        assert rows["measured_pct"].notna().all() and rows["published_pct"].notna().all()
        assert (rows["delta_pct"] - (rows["measured_pct"] - rows["published_pct"])).abs().max() < 1e-9
    md = (run / "tables.md").read_text()
    assert re.search(r"\| \d+\.\d\d \(67\.93, Δ -?\d+\.\d\d\)", md)  # row 8, PGD-40 X-ent
    strong = pd.read_parquet(run / "table_strong.parquet")
    assert {"autoattack_pct", "worst_case_pct"} <= set(strong.columns)
    attacks = [c for c in strong.columns if c.endswith("_pct") and c != "worst_case_pct"]
    assert (strong["worst_case_pct"] <= strong[attacks].min(axis=1) + 1e-9).all()


def test_100k_autoattack_is_recorded_member_by_member():
    """Every AutoAttack of the kept run says which member broke each image: the accuracy after
    each member falls member by member to AutoAttack's own."""
    run = REPO / "reproduced" / "mnist_100k_cpu"
    long = pd.read_parquet(run / "measurements.parquet")
    aa = long[long["attack_id"].str.startswith("aa-", na=False) & (long["threat"] == "white")]
    assert len(aa[aa["metric"] == "accuracy"])
    for cid, rows in aa.groupby("cell_id"):
        by = dict(zip(rows["metric"], rows["value"]))
        after = [by[f"accuracy_after_{m}"] for m in ("apgd_ce", "apgd_t", "fab_t", "square")]
        assert after == sorted(after, reverse=True) and after[-1] == by["accuracy"], cid


README_FACTS = {"command", "code", "machine", "wall time", "date"}  # the run's record, not numbers


def _readme_table_rows(run):
    """The data rows of the README's Markdown tables (the run's own record table left out)."""
    rows = []
    for line in (run / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (line.strip().startswith("| ") and cells[0] not in README_FACTS
                and not cells[0].startswith("model") and re.search(r"\d\.\d", line)):
            rows.append(line.strip())
    return rows


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_readme_numbers_are_the_kept_tables(run):
    """Every number a kept run's README shows in a table is in its tables.md, with its seed sd
    where it has one; a README that was not updated after the tables changed fails here."""
    md = (run / "tables.md").read_text()
    rows = _readme_table_rows(run)
    assert rows
    for row in rows:
        for number in re.findall(r"\d+\.\d\d(?: ± \d+\.\d\d)?(?: \(\d+\.\d\d, Δ -?\d+\.\d\d\))?",
                                 row):
            assert number in md, f"{run.name}/README.md: {number!r} is not in tables.md ({row[:60]})"


def test_100k_readme_prose_is_the_kept_measurements():
    """The 100k README's sentences about its numbers: the largest distance to the paper, and the
    accuracy after each AutoAttack member (measurements.parquet)."""
    run = REPO / "reproduced" / "mnist_100k_cpu"
    text = " ".join((run / "README.md").read_text().split())
    rows = _readme_table_rows(run)
    md = (run / "tables.md").read_text()
    assert all(row in md for row in rows if "Δ" in row)  # the Table 6 rows, verbatim
    cmp = pd.read_parquet(run / "table_6_compare.parquet")
    within = re.search(r"within ([\d.]+) points of the published", text)
    assert within and float(within.group(1)) == round(cmp["delta_pct"].abs().max(), 2)
    long = pd.read_parquet(run / "measurements.parquet")
    said = re.findall(r"([\d.]+)% after (APGD-CE|APGD-T|FAB-T|Square)", text)
    assert said
    for value, member in said:
        member_rows = long[long["metric"] == f"accuracy_after_{member.lower().replace('-', '_')}"]
        assert any(abs(100 * v - float(value)) < 0.05 for v in member_rows["value"]), (member, value)


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_verdicts_are_todays_rules_on_the_stored_tables(run, tmp_path):
    """claims.* of a kept run are what today's claims file and verdict rules say of its stored
    tables, judged with the run's own tables plan (plan.json): a changed criterion or rule that
    moves a verdict must regenerate them (README: re-judge a kept run)."""
    from lsqueeze.report.claims_report import run as judge

    judge(run / "plan.json", REPO / "src/lsqueeze/data/claims.yaml", run, tmp_path, "", run.name)
    got, kept = (pd.read_parquet(d / "claims.parquet") for d in (tmp_path, run))
    cols = ["claim", "claim_verdict", "check", "criterion", "verdict", "paper_verdict"]
    pd.testing.assert_frame_equal(got[cols], kept[cols])
    pd.testing.assert_series_equal(got["d_pct"], kept["d_pct"], atol=1e-9)
    assert (tmp_path / "claims.md").read_text().split("\n## ")[1:] == \
        (run / "claims.md").read_text().split("\n## ")[1:]  # every claim's text and table


@pytest.mark.parametrize("run", [r for r in RUNS if (r / "eval").is_dir()], ids=lambda p: p.name)
def test_tables_are_the_aggregation_of_the_kept_records(run, tmp_path):
    """A kept run's measurements and paper tables are what today's aggregation makes of the
    records kept beside them (models/*/metrics.json, eval/**/*.json) under the run's own plan:
    no number in them that its records do not give."""
    from lsqueeze.report.tables import aggregate

    inputs = sorted(run.glob("models/*/metrics.json")) + sorted(run.glob("eval/**/*.json"))
    assert len(inputs) >= 3
    aggregate(run / "plan.json", inputs, REPO / "src/lsqueeze/data/paper_tables.csv", tmp_path)
    key = ["cell_id", "threat", "attack_id", "metric"]
    got, kept = (pd.read_parquet(d / "measurements.parquet") for d in (tmp_path, run))
    got = got[got["metric"].isin(kept["metric"].unique())]  # a newer run may add metrics
    merged = kept[key + ["value", "n"]].merge(got[key + ["value", "n"]], on=key, how="outer",
                                              suffixes=("_kept", "_now"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    assert (merged["value_kept"] - merged["value_now"]).abs().max() < 1e-12
    assert (merged["n_kept"] == merged["n_now"]).all()
    for table in sorted(run.glob("table_*_compare.parquet")):
        a, b = pd.read_parquet(table), pd.read_parquet(tmp_path / table.name)
        measured = "measured_pct" if "measured_pct" in a else "measured"
        assert a[measured].round(9).tolist() == b["measured_pct"].round(9).tolist(), table.name
