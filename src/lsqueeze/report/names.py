"""One name per model, the same in every output.

A model has three names: its canonical cell id (`mnist/ls0-sq2-gn0.5-k100k-s0-clip`: what the
store, the records and the joins use), the preset's name for its cell (`lsq-noise`: what a user
wrote and `dvc metrics` keys), and its display name, what a reader sees: the label of the first
labelled table row that shows it or another seed of its training (else the method in the
paper's words), made distinct where several models would share it (the seeds of a headline
row: "… (seed 1)"). measurements.parquet carries all three side by side (`cell_id`, `model`,
`cell_name`); the masking checks and the summary figure print the display name, the claims and
the metrics, whose rows are means over a row's seeds, the same name without the seed.
"""

from __future__ import annotations

import json

import pandas as pd

from lsqueeze.plan.build import model_name, steps_tag
from lsqueeze.runtime.values import missing

MODEL, CELL_NAME = "model", "cell_name"


def _g(v) -> str:
    return f"{float(v):g}"


# what tells two models of one name apart, in this order
DISTINGUISH = (("alpha", "α={}", _g), ("beta", "β={}", _g), ("sigma", "σ={}", _g),
               ("steps", "k={}", steps_tag), ("seed", "seed {}", lambda v: str(int(v))),
               ("clip_noise", "{}", lambda v: "clipped noise" if v else "unclipped noise"))


def distinct(base: dict, cells: dict) -> dict:
    """{cell id: name}: where several cells share a name, the values that tell them apart are
    added ("… (seed 1)"), else the cell's tag."""
    names = {}
    for cid, name in base.items():
        group = [cells[c] for c in base if base[c] == name]
        if len(group) > 1:
            vary = [(k, fmt, f) for k, fmt, f in DISTINGUISH
                    if len({None if missing(c.get(k)) else c.get(k) for c in group}) > 1]
            c = cells[cid]
            extra = [fmt.format(f(c[k])) for k, fmt, f in vary if not missing(c.get(k))]
            name = f"{name} ({', '.join(extra) if extra else cid.split('/', 1)[-1]})"
        names[cid] = name
    return names


def _rows(plan: dict):
    """(cell id, row) for every cell of every table row (each seed of a row), tables and rows
    in the preset's order."""
    for table in plan.get("tables", []):
        for row in table["rows"]:
            for cid in row.get("cell_ids") or [row["cell_id"]]:
                yield cid, row


def base_names(plan: dict) -> dict:
    """{cell id: the model's name, seeds not told apart}: the label of the first labelled table
    row that shows the cell or another seed of its training, else the method in the paper's
    words; the dataset added where one name would stand for models of several datasets."""
    cells = {cid: c for cid, c in plan.get("cells", {}).items() if "method" in c}

    def family(cid):  # the seeds of one training share a name
        return json.dumps({k: v for k, v in cells[cid].items() if k != "seed"}, sort_keys=True,
                          default=str)
    first = {}
    for cid, row in _rows(plan):
        if cid in cells and row.get("label"):
            first.setdefault(family(cid), row["label"])
    base = {cid: first.get(family(cid)) or model_name(cell) for cid, cell in cells.items()}
    clash = {n for n in base.values() if len({cells[c]["dataset"] for c in base
                                              if base[c] == n}) > 1}
    return {cid: f"{cells[cid]['dataset']}: {n}" if n in clash else n for cid, n in base.items()}


def row_label(plan: dict, row: dict) -> str:
    """What the claims and the metrics call a table row's model (a row is the mean over its
    seeds): its base name; a plan without the cell's settings gives the row's own label, else
    the preset's name of the cell, else its id."""
    name = base_names(plan).get(row["cell_id"])
    if name:
        return name
    if row.get("label"):
        return row["label"]
    return row["cell"] if isinstance(row.get("cell"), str) else row["cell_id"]


def display_names(plan: dict) -> dict:
    """{cell id: display name} of every cell of a tables plan: its base name, the seed added
    where seeds share it ("… (seed 1)"), so that every model has a name of its own."""
    cells = {cid: c for cid, c in plan.get("cells", {}).items() if "method" in c}
    return distinct(base_names(plan), cells)


def cell_names(plan: dict) -> dict:
    """{cell id: the preset's name of its cell}, for cells a table row names by a preset name
    (a cell written out in a row, or only a black-box source, has none; the seeds of a row
    share its name, as they share its entry in the preset)."""
    out = {}
    for cid, row in _rows(plan):
        if isinstance(row.get("cell"), str):
            out.setdefault(cid, row["cell"])
    return out


def with_names(long: pd.DataFrame, plan: dict) -> pd.DataFrame:
    """The long-form measurements with `model` (the display name) and `cell_name` (the preset's
    name, where it has one) beside `cell_id`."""
    long = long.drop(columns=[c for c in (MODEL, CELL_NAME) if c in long.columns])
    at = list(long.columns).index("cell_id") + 1 if "cell_id" in long.columns else 0
    ids = long["cell_id"] if "cell_id" in long.columns else pd.Series([], dtype=object)
    names, cells = display_names(plan), cell_names(plan)
    long.insert(at, MODEL, pd.Series([names.get(c) for c in ids], index=long.index, dtype=object))
    long.insert(at + 1, CELL_NAME, pd.Series([cells.get(c) for c in ids], index=long.index,
                                             dtype=object))
    return long
