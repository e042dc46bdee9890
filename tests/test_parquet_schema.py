"""Every Parquet file the aggregation writes, on a real run (the tiny preset): snake_case names,
a stated unit for every accuracy, n for every accuracy, real types (no untyped or mixed columns),
nested types where a cell holds a list."""

import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lsqueeze.report.tablemeta import UNITS

pytestmark = pytest.mark.slow

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PARAMS = {"alpha", "beta", "sigma"}  # the defenses' hyperparameters: numbers without a unit


@pytest.fixture(scope="module")
def files(tiny_run):
    found = sorted((tiny_run / "results/tiny/tables").glob("*.parquet"))
    names = {p.name for p in found}
    assert {"measurements.parquet", "masking.parquet", "claims.parquet", "table_2.parquet",
            "table_2_compare.parquet", "table_strong_compare.parquet"} <= names, names
    return found


def test_column_names_are_ascii_snake_case(files):
    for path in files:
        frame = pd.read_parquet(path)
        for name in [*frame.columns, *(n for n in frame.index.names if n is not None)]:
            assert NAME.match(name), (path.name, name)


def test_every_accuracy_states_its_unit(files):
    """Percent columns end in _pct and say so in their metadata; any other float column is a
    hyperparameter, has a unit in its name (_s) or its metadata, or is the long form's value with
    its unit beside it."""
    for path in files:
        frame, schema = pd.read_parquet(path), pq.read_schema(path)
        meta = frame.attrs.get("columns", {})
        for name in frame.columns:
            if not pd.api.types.is_float_dtype(frame[name]):
                continue
            field = schema.field(name)
            if name.endswith("_pct"):
                assert meta[name]["unit"] == "percent", (path.name, name)
                assert field.metadata[b"unit"] == b"percent", (path.name, name)
                assert meta[name]["title"], (path.name, name)
            elif name == "value":
                assert frame["unit"].isin(set(UNITS.values())).all(), path.name
            else:
                assert name in PARAMS or name.endswith("_s") or "unit" in meta.get(name, {}), (
                    path.name, name)
    # percent, not fractions: the tiny models' clean accuracies are well above 1
    cmp = pd.read_parquet(next(p for p in files if p.name == "table_2_compare.parquet"))
    assert cmp["measured_pct"].between(0, 100).all() and cmp["measured_pct"].max() > 30
    masking = pd.read_parquet(next(p for p in files if p.name == "masking.parquet"))
    assert len(masking) and masking["accuracy_pct"].between(0, 100).all()


def test_layout_titles_are_the_markdown_column_names(files, tiny_run):
    t2 = pd.read_parquet(next(p for p in files if p.name == "table_2.parquet"))
    titles = {v["title"] for v in t2.attrs["columns"].values()}
    md = (tiny_run / "results/tiny/tables/tables.md").read_text()
    head = next(ln for ln in md.split("## Table 2 (tiny)")[1].splitlines() if ln.startswith("| model"))
    printed = {c.strip() for c in head.strip("|").split("|")} - {"model"}
    assert printed <= titles, (printed, titles)


def test_every_accuracy_has_its_n(files):
    long = pd.read_parquet(next(p for p in files if p.name == "measurements.parquet"))
    acc = long[long["unit"] == "fraction"]
    assert set(acc["metric"]) >= {"accuracy", "train_accuracy", "test_accuracy"}
    assert acc["n"].notna().all() and (acc["n"] > 0).all()
    digits = {"train_accuracy": 1500, "test_accuracy": 297}  # the whole digits28 splits
    for metric, n in digits.items():
        assert (acc.loc[acc["metric"] == metric, "n"] == n).all(), metric


def test_types_are_real(files):
    """No untyped (all-null) Parquet column, no object column holding numbers, and a list of
    cell ids as a Parquet list."""
    for path in files:
        schema = pq.read_schema(path)
        for field in schema:
            assert not pa.types.is_null(field.type), (path.name, field.name)
        frame = pd.read_parquet(path)
        for name in frame.columns:
            if frame[name].dtype == object:
                assert not any(isinstance(v, float) for v in frame[name]), (path.name, name)
    claims = next(p for p in files if p.name == "claims.parquet")
    assert pq.read_schema(claims).field("cells").type == pa.list_(pa.string()) or \
        pa.types.is_list(pq.read_schema(claims).field("cells").type)
    cells = pd.read_parquet(claims)["cells"]
    assert any(len(c) for c in cells) and all(isinstance(x, str) for c in cells for x in c)
    cmp = pd.read_parquet(next(p for p in files if p.name == "table_strong_compare.parquet"))
    assert str(cmp["within"].dtype) == "boolean" and str(cmp["row"].dtype) == "Int64"
    long = next(p for p in files if p.name == "measurements.parquet")
    assert pa.types.is_list(pq.read_schema(long).field("worst_of").type)
    worst = pd.read_parquet(long).query("threat == 'worst'")
    assert len(worst) and all(len(v) > 1 and all(isinstance(a, str) for a in v)
                              for v in worst["worst_of"])


def test_unbounded_eps_is_inf_and_no_attack_is_missing(tmp_path):
    """ε = +inf marks an unbounded attack; NaN only the rows of no attack (clean accuracy)."""
    import numpy as np

    from lsqueeze.plan.perexample import pack
    from lsqueeze.report.measurements import measurement_rows, worst_case_rows
    from lsqueeze.report.tablemeta import save_table, typed_measurements
    from lsqueeze.report.tables import MEASUREMENT_COLUMNS

    cell = {"dataset": "digits28", "method": "regularized", "alpha": 0.0, "beta": 0.5,
            "sigma": 0.5, "steps": 60, "seed": 0, "clip_noise": False}
    rec = {"kind": "white", "cell_id": "digits28/ls0-sq0.5-gn0.5-k60-s0", "cell": cell, "n": 4,
           "correct": 1, "accuracy": 0.25, "per_example": pack(np.array([1, 0, 0, 0], bool)),
           "clean_per_example": pack(np.array([1, 1, 1, 0], bool)),
           "attack": {"id": "pgd-xent-n5-einf-a0.1-r1", "paper": {
               "attack": "pgd", "loss": "xent", "steps": 5, "eps": None, "step_size": 0.1}},
           "code_version": "x", "device": "cpu", "wall_time_s": 1.0}
    rows = measurement_rows(rec) + worst_case_rows([rec])
    rows.append({**rows[0], "threat": "none", "attack_id": None, "attack": None, "eps": None,
                 "metric": "test_accuracy"})
    save_table(typed_measurements(pd.DataFrame(rows)), tmp_path / "m.parquet", MEASUREMENT_COLUMNS)
    assert pa.types.is_floating(pq.read_schema(tmp_path / "m.parquet").field("eps").type)
    back = pd.read_parquet(tmp_path / "m.parquet").set_index("threat")
    assert np.isinf(back.loc["white", "eps"]) and np.isinf(back.loc["worst", "eps"])
    assert np.isnan(back.loc["none", "eps"])
    assert list(back.loc["worst", "worst_of"]) == ["clean", "white:pgd-xent-n5-einf-a0.1-r1"]
