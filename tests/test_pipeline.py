"""End-to-end: the tiny preset through Snakemake in a temp dir (data -> ... -> tables, figure)."""

import os
import re

import pandas as pd
import pytest

from conftest import cell_dir, run_snakemake
from lsqueeze.plan.build import build_plan, load_config

pytestmark = pytest.mark.slow


def test_every_model_attack_pair_measured(tiny_run, tiny_config):
    plan = build_plan(load_config(tiny_config))
    long = pd.read_parquet(tiny_run / "results/tiny/tables/measurements.parquet")
    acc = long[long["metric"] == "accuracy"]
    for cell, attack in plan.white:
        sel = acc[(acc.cell_id == cell) & (acc.attack_id == attack) & (acc.threat == "white")]
        assert len(sel) == 1, (cell, attack)
    for target, source, attack in plan.black:
        sel = acc[(acc.cell_id == target) & (acc.attack_id == attack) & (acc.threat == "black")]
        assert len(sel) == 1 and sel.source_id.iloc[0] == source
    assert acc.value.between(0, 1).all()
    assert (acc.n == 100).all()
    clean = long[long.metric == "test_accuracy"]
    assert set(clean.cell_id) == set(plan.cells)
    assert (clean.value > 0.3).all(), "tiny models should beat chance (10%) clearly"
    assert {"code_version", "config_hash", "device", "wall_time_s"} <= set(long.columns)


def test_tables_and_figure(tiny_run):
    out = tiny_run / "results/tiny"
    t2 = pd.read_parquet(out / "tables/table_2.parquet")
    assert list(t2.columns[:4]) == ["alpha", "beta", "sigma", "k"]  # the paper's defense params
    assert {"train_pct", "test_pct", "white_pgd_x_ent_pct", "black_fgsm_cw_pct"} <= set(t2.columns)
    md = (out / "tables/tables.md").read_text()
    assert "99.21" in md  # Table 2 row 1 published test accuracy beside the measured one
    png = (out / "figures/summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_worst_case_over_every_attack_from_the_stored_vectors(tiny_run, tiny_config):
    """Per model and ε, the worst case counts an image only if it survives every attack (white
    and black): never above any one attack, and recomputed here from the stored vectors."""
    import json

    import numpy as np

    from lsqueeze.plan.perexample import unpack, unpack_members

    out = tiny_run / "results/tiny"
    long = pd.read_parquet(out / "tables/measurements.parquet")
    acc = long[long.metric == "accuracy"]
    worst = acc[acc.threat == "worst"]
    assert len(worst) == len(set(acc[acc.threat.isin(["white", "black"])].cell_id))
    for w in worst.itertuples():
        attacks = acc[(acc.cell_id == w.cell_id) & acc.threat.isin(["white", "black"])
                      & (acc.eps == w.eps)]
        assert w.value <= attacks.value.min() + 1e-12 and w.n == 100
        # a list: clean correctness (where a white-box record carries it), then every attack
        assert list(w.worst_of)[0] == "clean" and len(w.worst_of) == len(attacks) + 1
        # the cell's evaluations in the model store (every attack of this run: one subset)
        files = sorted((tiny_run / cell_dir(tiny_config, w.cell_id)).glob("eval-*/**/*.json"))
        assert len(files) == len(attacks), files
        recs = [json.loads(p.read_text()) for p in files]
        bits = [unpack(r["per_example"], 100)[1] for r in recs]
        clean = [unpack(r["clean_per_example"], 100)[1] for r in recs if "clean_per_example" in r]
        assert clean and all((c == clean[0]).all() for c in clean)  # one model, one clean pass
        assert w.value == pytest.approx(np.logical_and.reduce(bits + clean[:1]).mean())
        # AutoAttack's record says which member broke each image
        for r in recs:
            if r["attack"]["id"].startswith("aa-"):
                members, codes = unpack_members(r["members"], 100)
                assert members == ["apgd-ce", "apgd-t", "fab-t", "square"]
                assert np.array_equal(codes == -1, unpack(r["per_example"], 100)[1])
                assert np.array_equal(codes == 0, ~unpack(r["clean_per_example"], 100)[1])
    strong = pd.read_parquet(out / "tables/table_strong.parquet")
    row = strong.iloc[0]
    assert row["worst_case_pct"] <= min(row["white_pgd_x_ent_pct"], row["white_pgd_100_x_ent_pct"],
                                        row["autoattack_pct"])
    assert row["aa_after_apgd_t_pct"] >= row["autoattack_pct"]  # later members only take away


def test_second_run_has_nothing_to_do(tiny_run, tiny_config):
    proc = run_snakemake(tiny_run, "-n", configfile=tiny_config)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_report_shows_tables_as_html_with_clean_captions(tiny_run, tiny_config):
    """`snakemake --report` on the finished run: no Docutils error box, tables as HTML tables
    (not base64 Parquet), the summary figure, the workflow description."""
    import base64

    report = tiny_run / "report.html"
    run_snakemake(tiny_run, "--report", str(report), configfile=tiny_config)
    text = report.read_text()
    assert "System Message" not in text and "Undefined substitution" not in text
    assert "Reproduction of Shafahi et al. (2019)" in text  # workflow/report/workflow.rst
    names = set(re.findall(r";filename=([\w.-]+);base64", text))
    assert {"tables.html", "table_1.html", "table_2.html", "measurements.html",
            "summary.png"} <= names, names
    assert not any(n.endswith((".parquet", ".md")) for n in names), names
    pages = {name: base64.b64decode(blob).decode() for name, blob in re.findall(
        r"data:text/html;charset=utf8;filename=([\w.-]+);base64,([A-Za-z0-9+/=]+)", text)}
    assert "<table" in pages["table_2.html"] and "99.21" in pages["table_2.html"]
    assert "<caption>Paper, Table 2:" in pages["table_2.html"]
    assert "Gradient-masking checks" in pages["tables.html"]
    assert "<table" in pages["measurements.html"] and "logit L2 norm" in pages["measurements.html"]


def test_logs_show_progress_and_outputs_are_world_readable(tiny_run):
    out = tiny_run / "results/tiny"
    for log in (out / "logs/train").rglob("*.log"):  # --no-progress: the final line at least
        assert re.search(r": step 60/60 \(100%\), \d+ images/s, loss [\d.]+, ETA", log.read_text())
    for log in (out / "logs/white").rglob("*.log"):
        assert re.search(r": batch 1/1 \(100%\), .*robust \d+/100", log.read_text())
    mask = os.umask(0o022)
    os.umask(mask)
    if mask == 0o022:  # under the usual umask every output is 0644, readable by the group
        modes = {p.relative_to(out): p.stat().st_mode & 0o777 for p in out.rglob("*")
                 if p.is_file() and p.suffix in (".pt", ".json", ".parquet", ".md", ".html",
                                                 ".png", ".pdf")}
        assert modes and set(modes.values()) == {0o644}, modes
    assert (out / "figures/summary.pdf").read_bytes()[:5] == b"%PDF-"
