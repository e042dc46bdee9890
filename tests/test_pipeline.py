"""End-to-end: the tiny preset through Snakemake in a temp dir (data -> ... -> tables, figure)."""

import pandas as pd
import pytest

from lsqueeze.config import build_plan, load_config
from conftest import run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_config):
    work = tmp_path_factory.mktemp("tiny")
    run_snakemake(work, configfile=tiny_config)
    return work


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
    assert list(t2.columns[:4]) == ["α", "β", "σ", "k"]  # the paper's defense-param columns
    assert {"Train", "Test", "white PGD X-ent", "black FGSM CW"} <= set(t2.columns)
    md = (out / "tables/tables.md").read_text()
    assert "99.21" in md  # Table 2 row 1 published test accuracy beside the measured one
    png = (out / "figures/summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_has_nothing_to_do(tiny_run, tiny_config):
    proc = run_snakemake(tiny_run, "-n", configfile=tiny_config)
    assert "Nothing to be done" in proc.stdout + proc.stderr
