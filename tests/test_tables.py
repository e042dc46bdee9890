"""Aggregation on synthetic fragments: layout, published lookup, Δ, tolerance summary, renderings."""

import hashlib
import json
from datetime import UTC

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO
from lsqueeze.plan.build import attack_record, build_plan, model_name
from lsqueeze.report.tablemeta import checked_model
from lsqueeze.report.tables import aggregate, published

REFERENCE = REPO / "src/lsqueeze/data/paper_tables.csv"


def _plan_json(plan, analyses):
    return {"tables": plan.tables, "cells": plan.cells, "tolerance_pct": 5,
            "pixel_scale": {d: plan.recipe(d)["pixel_scale"]
                            for d in {c["dataset"] for c in plan.cells.values()}},
            "analysis_files": analyses}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def demo_run(tmp_path):
    """Fragments for the demo preset with known values: train 0.9, test 0.8, attacks 0.5."""
    cfg = yaml.safe_load((REPO / "params/demo.yaml").read_text())
    plan = build_plan(cfg)
    files = []
    for cid, cell in plan.cells.items():
        spec = plan.train_spec(cid)
        files.append(_write(tmp_path / "m" / cid / "metrics.json", {
            "spec": spec, "train_accuracy": 0.9, "test_accuracy": 0.8, "mean_logit_norm": 3.0,
            "code_version": "abc", "device": "cpu", "wall_time_s": 1.0, "diverged": False,
            "steps_done": cell["steps"]}))
    for kind, pairs in (("white", [(c, a, None) for c, a in plan.white]),
                        ("black", [(t, a, s) for t, s, a in plan.black])):
        for cid, aid, src in pairs:
            files.append(_write(tmp_path / "e" / kind / cid / f"{aid}-{src}.json", {
                "kind": kind, "cell": plan.cells[cid], "cell_id": cid, "source_id": src,
                "attack": attack_record(plan, aid, plan.cells[cid]["dataset"]), "n": 10,
                "accuracy": 0.5, "code_version": "abc", "device": "cpu", "wall_time_s": 0.1}))
    analyses = {}
    for cid in plan.analyses:  # ε_L of 10 images: 0.05 .. 0.95, so Eq. 4 at ε=0.1 predicts 90%
        p = tmp_path / "a" / cid / "linear.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"eps_L": np.linspace(0.05, 0.95, 10)}).to_parquet(p)
        analyses[str(p)] = cid
        files.append(str(p))
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(_plan_json(plan, analyses), default=str))
    out = tmp_path / "tables"
    long = aggregate(plan_path, files, REFERENCE, out)
    return plan, long, out


def test_layout_has_the_papers_columns(demo_run):
    """The paper's columns under snake_case names with their unit; the titles the Markdown
    prints are in the file's metadata."""
    plan, _, out = demo_run
    t2 = pd.read_parquet(out / "table_2.parquet")
    assert list(t2.index.names) == ["cell_id", "model"]
    assert list(t2.columns) == ["alpha", "beta", "sigma", "k", "train_pct", "test_pct",
                                "white_pgd_40_x_ent_pct", "white_pgd_40_cw_pct",
                                "black_fgsm_cw_pct", "black_pgd_40_cw_pct"]
    titles = {k: v["title"] for k, v in t2.attrs["columns"].items()}
    assert [titles[c] for c in t2.columns] == ["α", "β", "σ", "k", "Train", "Test",
                                               "white PGD-40 X-ent", "white PGD-40 CW",
                                               "black FGSM CW", "black PGD-40 CW"]
    assert t2.attrs["columns"]["train_pct"]["unit"] == "percent"
    field = pq.read_schema(out / "table_2.parquet").field("white_pgd_40_x_ent_pct")
    assert field.metadata == {b"title": b"white PGD-40 X-ent", b"unit": b"percent"}
    row = t2.xs("digits28/ls0-sq0.5-gn0.5-k2k-s0", level="cell_id").iloc[0]
    assert (row["alpha"], row["beta"], row["sigma"], row["k"]) == (0, 0.5, 0.5, 2000)
    assert row["train_pct"] == pytest.approx(90) and row["black_pgd_40_cw_pct"] == pytest.approx(50)
    madry = t2.xs("Madry adv. tr. (ε=0.1)", level="model").iloc[0]
    assert np.isnan(madry["alpha"]) and madry["k"] == 2000  # baselines print no α, β, σ
    t1 = pd.read_parquet(out / "table_1.parquet")
    assert t1["eq_4_pct"].tolist() == pytest.approx([90.0, 90.0])
    t9 = pd.read_parquet(out / "table_9.parquet")
    assert list(t9.columns[4:]) == ["pgd_40_eps_0_1_pct", "pgd_100_unbounded_eps_pct"]


def test_column_slugs_are_ascii_snake_case_and_distinct():
    from lsqueeze.plan.build import SD_SUFFIX
    from lsqueeze.report.tablemeta import layout_names, slug

    assert slug("white PGD-40+Rand X-ent") == "white_pgd_40_rand_x_ent"
    assert slug("PGD-100 x10 restarts, β=2") == "pgd_100_x10_restarts_beta_2"
    assert slug("ε_L > ε") == "eps_l_eps" and slug("10 restarts") == "c_10_restarts"
    assert slug("Δ%") == "delta"
    names = layout_names(["X-ent", "X ent", "x_ent sd"], SD_SUFFIX)
    assert names["X-ent"] == "x_ent_pct" and names["X ent"] == "x_ent_2_pct"
    assert names["X-ent sd"] == "x_ent_sd_pct" and names["x_ent sd"] == "x_ent_sd_2_pct"
    assert len(set(names.values())) == len(names)


def test_published_values_and_deltas(demo_run):
    _, _, out = demo_run
    cmp = pd.read_parquet(out / "table_2_compare.parquet")
    test = cmp[(cmp.row == 1) & (cmp.column == "Test")].iloc[0]
    assert test.published_pct == pytest.approx(99.21)
    assert test.delta_pct == pytest.approx(80 - 99.21) and test.measured_pct == pytest.approx(80)
    assert not test.within
    bb = cmp[(cmp.row == 8) & (cmp.column == "black FGSM CW")].iloc[0]
    ref = pd.read_csv(REFERENCE)
    want = ref[(ref.table == 2) & (ref.row == 8) & (ref.threat == "black") & (ref.attack == "fgsm")]
    assert bb.published_pct == pytest.approx(float(want.value_percent.iloc[0]))


def test_markdown_and_html_show_published_beside_measured(demo_run):
    _, _, out = demo_run
    md = (out / "tables.md").read_text()
    assert "80.00 (99.21, Δ -19.21)" in md
    ordering = md.split("## White-box PGD-40")[1].split("\n## ")[0]  # a table the paper lacks
    assert "No published number to compare with" in ordering and "0 of 0" not in md
    cmp = pd.concat(pd.read_parquet(p) for p in out.glob("*_compare.parquet"))
    both = cmp.dropna(subset=["delta_pct"])
    assert both.status.notna().all() and cmp[cmp.delta_pct.isna()].status.isna().all()
    # the headline counts distinct measurements, each once however many tables print it
    distinct = both.groupby("measurement").status.agg(set)
    agree = sum(st <= {"within", "uninformative"} and "within" in st for st in distinct)
    assert f"{agree} of {len(distinct)} distinct measurements within ±5 points" in md
    assert f"{len(both)} published numbers compared, {int((both.status == 'within').sum())} within" in md
    html = (out / "tables.html").read_text()
    assert "80.00 (99.21, Δ -19.21)" in html and "class='off'" in html


def test_rows_without_a_label_name_the_method(demo_run):
    """The demo's Table 2 labels only its Madry row: the others read as the paper's words for the
    method (their α, β, σ, k columns give the values), not as cell ids."""
    _, _, out = demo_run
    models = pd.read_parquet(out / "table_2.parquet").index.get_level_values("model").tolist()
    assert models == ["logit squeezing + noise", "label smoothing", "label smoothing + noise",
                      "Madry adv. tr. (ε=0.1)"]
    md = (out / "tables.md").read_text()
    assert "| logit squeezing + noise | 0 | 0.5 | 0.5 | 2k |" in md and "| digits28/" not in md


def test_masking_checks_name_the_model(demo_run):
    """masking.parquet and the masking lines name each model as the tables do (its first
    labelled row), beside the cell id."""
    plan, _, out = demo_run
    masking = pd.read_parquet(out / "masking.parquet")
    squeeze = masking[masking.cell_id == "digits28/ls0-sq0.5-gn0.5-k2k-s0"]
    assert len(squeeze) and set(squeeze.model) == {"logit squeezing β=0.5 + noise σ=0.5"}
    row = squeeze.iloc[0]
    assert checked_model(row) == "logit squeezing β=0.5 + noise σ=0.5 (`digits28/ls0-sq0.5-gn0.5-k2k-s0`)"
    assert checked_model(row, html=True).endswith("(<code>digits28/ls0-sq0.5-gn0.5-k2k-s0</code>)")
    assert checked_model(pd.Series({"cell_id": "c", "model": None})) == "`c`"


def test_model_name_of_each_method():
    base = {"dataset": "mnist", "steps": 10, "seed": 0, "alpha": 0.0, "beta": 0.0, "sigma": 0.0}
    assert model_name({**base, "method": "natural"}) == "natural"
    assert model_name({**base, "method": "regularized", "sigma": 0.5}) == "Gaussian noise"
    assert model_name({**base, "method": "regularized", "alpha": 0.1, "beta": 2.0, "sigma": 0.3}) \
        == "label smoothing + logit squeezing + noise"
    adv = {"steps": 7, "eps": 8.0, "step_size": 2.0, "random_start": True, "loss": "xent"}
    assert model_name({**base, "method": "adv", "adv": adv}) == "adv. trained (PGD-7, ε=8)"


def test_long_form_has_every_measurement(demo_run):
    plan, long, out = demo_run
    on_disk = pd.read_parquet(out / "measurements.parquet")
    assert len(on_disk) == len(long)
    lock = (REPO / "requirements.lock").read_bytes()
    assert on_disk.attrs["environment_lock"] == "sha256:" + hashlib.sha256(lock).hexdigest()
    assert len(on_disk[on_disk.metric == "accuracy"]) == len(plan.white) + len(plan.black)
    eq4 = {r["cell_id"] for t in plan.tables for r in t["rows"]
           if any(c.get("metric") == "predicted_accuracy" for c in t["columns"])}
    assert set(on_disk[on_disk.metric == "predicted_accuracy"].cell_id) == eq4
    assert {"alpha", "beta", "sigma", "steps", "attack_steps", "eps", "code_version",
            "config_hash", "device", "wall_time_s"} <= set(on_disk.columns)


def test_published_lookup_is_numeric_and_rejects_ambiguity():
    ref = pd.read_csv(REFERENCE)
    table = {"id": "x", "paper_table": 11}
    col = {"name": "PGD-40", "paper": {"attack_steps": 40, "loss": "CW"}}
    assert published(ref, table, {}, col) == pytest.approx(45.33)  # 40 matches the CSV's 40.0
    with pytest.raises(ValueError, match="narrow it"):
        published(ref, table, {}, {"name": "any", "paper": {"loss": "cw"}})
    with pytest.raises(ValueError, match="bogus"):
        published(ref, table, {}, {"name": "bad", "paper": {"bogus": 1}})


def test_measurements_schema_units_and_dtypes(demo_run):
    _, _, out = demo_run
    long = pd.read_parquet(out / "measurements.parquet")
    cols = list(long.columns)
    assert cols[cols.index("value") + 1] == "unit"
    units = long.groupby("metric")["unit"].unique().map(list).to_dict()
    assert units["mean_logit_norm"] == ["logit L2 norm"]
    assert all(units[m] == ["fraction"] for m in ("accuracy", "test_accuracy", "train_accuracy",
                                                  "predicted_accuracy"))
    for col in ("attack_steps", "restarts", "n", "steps_done", "steps", "seed"):
        assert str(long[col].dtype) == "Int64", (col, long[col].dtype)
    for col in ("random_start", "diverged", "clip_noise"):
        assert str(long[col].dtype) == "boolean", (col, long[col].dtype)
    pgd = long[(long.attack == "pgd") & (long.threat == "white")]
    assert len(pgd) and pgd.random_start.notna().all() and set(pgd.attack_steps) == {40, 100}
    # clean accuracies: the whole split (the digits: 1,500 training, 297 test images)
    assert set(long[long.metric == "test_accuracy"].n) == {297}
    assert set(long[long.metric == "train_accuracy"].n) == {1500}


def test_split_sizes_are_the_datasets(digits):
    """The n of a clean accuracy is its split's size: the digits as lsqueeze.jobs.data writes them,
    MNIST's training split without the 5,000 validation images."""
    import torch

    from lsqueeze.jobs.data import MNIST_VALIDATION
    from lsqueeze.report.tablemeta import SPLIT_IMAGES, split_images

    for split in ("train", "test"):
        y = torch.load(digits / f"{split}.pt")["y"]
        assert SPLIT_IMAGES["digits28"][split] == SPLIT_IMAGES["digits32"][split] == len(y)
    assert SPLIT_IMAGES["mnist"] == {"train": 60_000 - MNIST_VALIDATION, "test": 10_000}
    assert split_images("test_accuracy", "mnist") == 10_000
    assert split_images("train_accuracy", "mnist", {"n_train": 123}) == 123  # a record's own
    assert split_images("accuracy", "mnist") is None


def test_tables_carry_provenance_captions_and_masking(demo_run):
    _, _, out = demo_run
    md, html = (out / "tables.md").read_text(), (out / "tables.html").read_text()
    for text in (md, html):
        head = text[:1500]
        assert "code abc" in head and "Device(s): cpu" in head and "(n): 10" in head
        assert "tables built 20" in head and "UTC" in head
        assert "Paper, Table 2: MNIST: accuracy of different classifiers" in text
        assert "Gradient-masking checks" in text and "checks on the measurements above" in text
    assert "<caption>Paper, Table 1: Experimental and predicted accuracy" in html


def test_provenance_names_every_device_and_version():
    from datetime import datetime

    from lsqueeze.report.tablemeta import provenance, provenance_lines

    long = pd.DataFrame({"metric": ["accuracy", "accuracy", "test_accuracy"], "n": [100, 50, None],
                         "code_version": ["v1", "v2", "v1"], "device": ["gpu A", "cpu", None]})
    prov = provenance({"preset": "demo"}, long, now=datetime(2024, 1, 2, 3, 4, tzinfo=UTC))
    lock = "sha256:" + hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert prov == {"preset": "demo", "code": "v1, v2", "date": "2024-01-02 03:04 UTC",
                    "devices": "cpu; gpu A", "n": "50, 100", "lock": lock, "precision": []}
    assert f"environment: requirements.lock {lock[:19]}" in provenance_lines(prov)[1]
    # the models' training precision; two when `auto` resolved differently on two machines
    long["precision"] = [None, None, "bf16"]
    assert "Device(s): cpu; gpu A · trained in bf16 · " in provenance_lines(
        provenance({}, long))[1]
    long = pd.concat([long, long.assign(precision=[None, None, "fp32"])])
    line = provenance_lines(provenance({}, long))[1]
    assert "trained in bf16 and fp32: the models of these tables differ in training precision" in line


def _one_table(rows, columns):
    """Tables built in memory for one paper-Table-2 table of digits28 rows: every model measured
    with train 0.9, test 0.8; (plan dict, {id: (layout, compare)})."""
    from lsqueeze.report.tables import build_tables

    cfg = {"preset": "t", "results": "r",
           "cells": {"sq": {"dataset": "digits28", "beta": 0.5, "sigma": 0.5, "steps": 10}},
           "tables": [{"id": "2", "paper_table": 2, "rows": rows, "columns": columns}]}
    plan = build_plan(cfg)
    long = pd.DataFrame([{"cell_id": cid, "metric": metric, "value": value, "threat": "none",
                          "attack_id": None}
                         for cid in plan.cells
                         for metric, value in (("train_accuracy", 0.9), ("test_accuracy", 0.8))])
    pj = {**_plan_json(plan, {}), "num_classes": {"digits28": 10}}
    return pj, build_tables(pj, long, pd.read_csv(REFERENCE), {}, 5.0)


TEST_COLUMN = {"name": "Test", "metric": "test_accuracy", "paper": {"metric": "test_accuracy"}}


def test_one_cell_in_two_rows_shows_each_rows_published_value():
    """Paper rows 1 and 8 of one cell: each row shows its own published number and Δ, not the
    last row's in both."""
    from lsqueeze.report.render import render_html, render_markdown

    plan, tables = _one_table([{"cell": "sq", "label": "first", "paper_row": 1},
                               {"cell": "sq", "label": "eighth", "paper_row": 8}], [TEST_COLUMN])
    ref = pd.read_csv(REFERENCE)
    pub = {r: float(ref[(ref.table == 2) & (ref.row == r) & (ref.metric == "test_accuracy")]
                    .value_percent.iloc[0]) for r in (1, 8)}
    assert pub[1] != pub[8]
    md = render_markdown(plan, tables, 5.0)
    html = render_html(plan, tables, 5.0)
    for label, r in (("first", 1), ("eighth", 8)):
        text = f"80.00 ({pub[r]:.2f}, Δ {80 - pub[r]:.2f})"
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
        assert text in line, (label, line)
        row = next(tr for tr in html.splitlines() if f"<td>{label}</td>" in tr)
        assert text in row, (label, row)
    _, compare = tables["2"]
    assert compare["published_pct"].tolist() == pytest.approx([pub[1], pub[8]])


def test_a_bar_in_a_label_or_column_name_keeps_the_markdown_cells_in_place():
    from lsqueeze.report.render import render_markdown

    plan, tables = _one_table([{"cell": "sq", "label": "β | σ = 0.5", "paper_row": 1}],
                              [{**TEST_COLUMN, "name": "Test|clean"}])
    md = render_markdown(plan, tables, 5.0)
    head = next(ln for ln in md.splitlines() if ln.startswith("| model |"))
    row = next(ln for ln in md.splitlines() if ln.startswith("| β"))
    assert r"| β \| σ = 0.5 |" in row and r"Test\|clean" in head

    def cells(line):  # columns as a Markdown renderer splits them: on unescaped bars
        return len([c for c in line.replace(r"\|", "").split("|")])

    assert cells(row) == cells(head) == len(["", "model", "α", "β", "σ", "k", "Test", ""])


def test_runs_of_an_older_version_read_with_this_versions_columns():
    """The committed runs (reproduced/) keep the column names they were written with: the
    readers (claims, DVC metrics) rename them, and masking's fractions become percent."""
    from lsqueeze.report.tablemeta import read_table

    run = REPO / "reproduced" / "mnist_cpu"  # written before the snake_case, unit-suffixed names
    old = pd.read_parquet(run / "table_2_compare.parquet")
    new = read_table(run / "table_2_compare.parquet", "compare")
    assert {"measured", "published", "delta"} <= set(old.columns)
    assert new["measured_pct"].tolist() == old["measured"].tolist()
    assert {"published_pct", "delta_pct", "sd_pct", "replicate_spread_pct"} <= set(new.columns)
    masking_old = pd.read_parquet(run / "masking.parquet")
    masking = read_table(run / "masking.parquet", "masking")
    assert masking["accuracy_pct"].tolist() == pytest.approx((100 * masking_old["value"]).tolist())
    assert masking["gap_pct"].dropna().tolist() == pytest.approx(
        (100 * masking_old["gap"]).dropna().tolist())
    assert read_table(run / "table_2_compare.parquet", "compare").equals(new)  # files untouched
