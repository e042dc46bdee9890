"""What the aggregated tables say about themselves: units, column names and dtypes of the Parquet
files, the provenance header, the paper's table captions and the gradient-masking section of the
HTML.

The Parquet convention: column names are ASCII snake_case, and every number states its unit.
Accuracies (and their differences, sds and spreads) outside the long form are percent points and
their column names end in `_pct`; the long form (measurements.parquet) keeps one `value` column
for several metrics, so a `unit` column beside it says which unit each row's value is in. A
column's title (a paper table's column name as the Markdown prints it: "white PGD-40 X-ent") and
unit are in the file's metadata: `pandas.read_parquet(path).attrs["columns"]`, or each field's
metadata for other Parquet readers (`pyarrow.parquet.read_schema(path).field(name).metadata`).
"""

from __future__ import annotations

import html as _html
import json
import re
import unicodedata
from datetime import UTC, datetime

import pandas as pd

from lsqueeze.plan.perexample import worst_of_list
from lsqueeze.registries.attack_kinds import AUTOATTACK_MEMBER_METRICS
from lsqueeze.runtime.values import missing

# `value` holds accuracies and logit norms side by side: each row says which.
UNITS = {"train_accuracy": "fraction", "test_accuracy": "fraction", "accuracy": "fraction",
         "predicted_accuracy": "fraction", "mean_logit_norm": "logit L2 norm",
         **{m: "fraction" for m in AUTOATTACK_MEMBER_METRICS}}
INT_COLS = ["steps", "seed", "attack_steps", "restarts", "n", "steps_done"]
BOOL_COLS = ["clip_noise", "random_start", "diverged"]
FLOAT_COLS = ["alpha", "beta", "sigma", "eps", "step_size", "value", "wall_time_s"]
# Images in each dataset's training and test split (lsqueeze.jobs.data writes them; not imported here,
# so that aggregation needs no torch): the n of the clean train/test accuracies a training job
# records. MNIST trains on 55,000 images (mnist_challenge holds out 5,000 for validation); the
# scikit-learn digits split 1,797 images into 1,500 and 297.
SPLIT_IMAGES = {"mnist": {"train": 55_000, "test": 10_000},
                "cifar10": {"train": 50_000, "test": 10_000},
                "cifar100": {"train": 50_000, "test": 10_000},
                "digits28": {"train": 1_500, "test": 297},
                "digits32": {"train": 1_500, "test": 297}}
# The split a training metric is computed on (the logit norm: averaged over the test images).
TRAINING_METRIC_SPLIT = {"train_accuracy": "train", "test_accuracy": "test",
                         "mean_logit_norm": "test"}
PCT = "_pct"  # the suffix of a column holding percent points
# A paper table's parameter columns in the Parquet (the Markdown keeps the paper's symbols)
PARAM_SLUGS = {"α": "alpha", "β": "beta", "σ": "sigma", "k": "k"}
_SYMBOLS = {"α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "Δ": "delta", "ε": "eps",
            "λ": "lambda", "μ": "mu", "σ": "sigma", "×": "x", "±": "pm", "≥": "ge", "≤": "le"}
# What each paper table is (abridged from the paper's captions), printed under its heading.
PAPER_CAPTIONS = {
    1: "Experimental and predicted accuracy of classifiers for MNIST and CIFAR-10: FGSM accuracy "
       "on the X-ent and CW losses beside the linear model's prediction (Eq. 4: the share of "
       "images with ε < ε_L).",
    2: "MNIST: accuracy of different classifiers against PGD and FGSM attacks on the X-ent and CW "
       "losses, white-box and black-box (ℓ∞, ε = 0.3; iterative white-box attacks start at a "
       "random point; black-box attacks are crafted on the naturally trained model).",
    3: "CIFAR-10: white-box attacks (ℓ∞, ε = 8; 20-step PGD with a random start, FGSM without).",
    4: "CIFAR-10: black-box attacks (ℓ∞, ε = 8; 7-step PGD and FGSM crafted on an adversarially "
       "trained model).",
    5: "CIFAR-100: white-box iterative attacks on the X-ent loss (ℓ∞, ε = 8) with different "
       "numbers of PGD steps.",
    6: "MNIST: models trained for different numbers of steps k against 40-step PGD and FGSM on "
       "the X-ent and CW losses, white-box and black-box (ℓ∞, ε = 0.3).",
    7: "CIFAR-10 (appendix): white-box attacks on more models (ℓ∞, ε = 8; 20-step PGD with a "
       "random start).",
    8: "CIFAR-10 (appendix): black-box attacks on more models (ℓ∞, ε = 8; crafted on an "
       "adversarially trained model).",
    9: "The effect of unbounded ε on accuracy: a sanity check that the model does not break the "
       "PGD attack by obfuscating its gradients.",
    10: "The effect of the number of PGD random restarts on the accuracy of a logit-squeezed "
        "model.",
    11: "The effect of the number of white-box PGD steps on the CW loss for the CIFAR-10 "
        "logit-squeezing model (β = 10, σ = 30, 160k steps).",
}




def slug(name) -> str:
    """An ASCII snake_case column name for a table column's title: "white PGD-40+Rand X-ent" ->
    "white_pgd_40_rand_x_ent", "Eq. 4" -> "eq_4", "PGD-40 ε 0.1" -> "pgd_40_eps_0_1"."""
    text = "".join(f" {_SYMBOLS[c]} " if c in _SYMBOLS else c for c in str(name))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return text if text[:1].isalpha() else f"c_{text}".rstrip("_")


def layout_names(columns, sd_suffix: str) -> dict:
    """{title: Parquet column} of a paper-layout table: the paper's α, β, σ, k as alpha, beta,
    sigma, k; each table column as its slug + `_pct` (its sd over seeds: `_sd_pct`), two titles
    of one slug told apart by a number (`_2`); `seeds` stays."""
    out, taken = dict(PARAM_SLUGS), set(PARAM_SLUGS.values()) | {"seeds", "cell_id", "model"}
    for name in columns:
        base = slug(name)
        key, i = base, 1
        while f"{key}{PCT}" in taken or f"{key}_sd{PCT}" in taken:
            i += 1
            key = f"{base}_{i}"
        out[name], out[f"{name}{sd_suffix}"] = f"{key}{PCT}", f"{key}_sd{PCT}"
        taken |= {f"{key}{PCT}", f"{key}_sd{PCT}"}
    out["seeds"] = "seeds"
    return out


def percent(title: str) -> dict:
    return {"title": title, "unit": "percent"}


# What each column of the comparison, masking and claims Parquets holds: {column: (title, unit)}
COMPARE_COLUMNS = {
    "measured_pct": percent("measured accuracy (mean over the row's seeds)"),
    "sd_pct": percent("sd of the measured accuracy over the row's seeds"),
    "published_pct": percent("published accuracy"),
    "delta_pct": percent("measured − published"),
    "replicate_spread_pct": percent("max − min of the paper's replicate rows' published values"),
}
MASKING_COLUMNS = {
    "accuracy_pct": percent("the accuracy the check looks at"),
    "reference_pct": percent("the accuracy it is compared with"),
    "gap_pct": percent("accuracy − reference"),
}
CLAIMS_COLUMNS = {**{f"{side}_{k}{PCT}": percent(f"{side}: {t}") for side in ("lhs", "rhs")
                     for k, t in (("value", "measured accuracy (a difference, for same_order)"),
                                  ("sd", "sd over seeds"), ("published", "published accuracy"))},
                  "d_pct": percent("margin by which the criterion holds (≥ 0: holds)"),
                  "spread_pct": percent("spread (noise) of the margin")}
# The names an older version wrote (committed runs under reproduced/ keep them): read_table
# renames them; masking's accuracies were fractions then.
LEGACY = {"compare": {"measured": "measured_pct", "sd": "sd_pct", "published": "published_pct",
                      "delta": "delta_pct", "replicate_spread": "replicate_spread_pct"},
          "masking": {"value": "accuracy_pct", "reference": "reference_pct", "gap": "gap_pct"}}


def typed(frame: pd.DataFrame, ints=(), bools=(), floats=(), strings=()) -> pd.DataFrame:
    """Columns as Parquet types: nullable integers and booleans, floats (NaN for none), text
    (None for none; save_table writes a column of Nones as strings, not Parquet's untyped null)."""
    frame = frame.copy()
    for col in ints:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col].map(lambda v: None if missing(v) else v)
                                       ).round().astype("Int64")
    for col in bools:
        if col in frame.columns:
            frame[col] = frame[col].map(lambda v: pd.NA if missing(v) else bool(v)).astype("boolean")
    for col in floats:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col].map(lambda v: None if missing(v) else v)
                                       ).astype("float64")
    for col in strings:
        if col in frame.columns:
            frame[col] = pd.Series([None if missing(v) else str(v) for v in frame[col]],
                                   index=frame.index, dtype=object)
    return frame


def save_table(frame: pd.DataFrame, path, columns: dict | None = None, index: bool = False,
               attrs: dict | None = None):
    """Write a Parquet (atomically, with its digest) whose metadata carries each column's title
    and unit: `columns` {name: {"title": ..., "unit": ...}}, in `attrs["columns"]` for pandas and
    in each field's metadata for any Parquet reader; `attrs`: more of pandas' attrs (provenance)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lsqueeze.runtime.files import atomic_path
    from lsqueeze.runtime.rehearsal import banner, stamp_frame

    frame = stamp_frame(frame)  # a rehearsal's banner, as a column (identity in a real run)
    meta = {k: v for k, v in (columns or {}).items() if k in frame.columns}
    table = pa.Table.from_pandas(frame, preserve_index=index)
    # a text column without any value yet (no black-box source, no masked check) is still text
    fields = [f.with_type(pa.large_string()) if pa.types.is_null(f.type) else f
              for f in table.schema]
    fields = [f.with_metadata({k.encode(): str(v).encode() for k, v in meta[f.name].items()})
              if f.name in meta else f for f in fields]
    schema_meta = dict(table.schema.metadata or {})
    attrs = {**({"columns": meta} if meta else {}), **(attrs or {})}
    if attrs:
        schema_meta[b"PANDAS_ATTRS"] = json.dumps(attrs, ensure_ascii=False).encode()
    if banner():
        schema_meta[b"rehearsal"] = banner().encode()
    table = table.cast(pa.schema(fields, metadata=schema_meta))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path, kind: str) -> pd.DataFrame:
    """A comparison ("compare") or masking ("masking") Parquet with this version's columns; one an
    older version wrote (the committed runs under reproduced/) is renamed on reading."""
    from lsqueeze.runtime.files import read_parquet

    frame = read_parquet(path)
    old = {k: v for k, v in LEGACY[kind].items() if k in frame.columns and v not in frame.columns}
    if old and kind == "masking":  # fractions then, percent now
        frame[list(old)] = frame[list(old)].astype("float64") * 100
    return frame.rename(columns=old)


def split_images(metric: str, dataset: str, rec: dict | None = None):
    """How many images a training job's clean metric was computed on: its split's size (the
    record's own count, where it has one)."""
    split = TRAINING_METRIC_SPLIT.get(metric)
    if split is None:
        return None
    own = (rec or {}).get(f"n_{split}")
    return own if own is not None else SPLIT_IMAGES.get(dataset, {}).get(split)


def typed_measurements(long: pd.DataFrame) -> pd.DataFrame:
    """The long form as stored: a `unit` per row beside `value`, counts as nullable integers
    (Int64), flags as nullable booleans, numbers as floats and text as strings, instead of object
    columns."""
    long = long.copy()
    if "metric" in long.columns:
        at = list(long.columns).index("value") + 1 if "value" in long.columns else len(long.columns)
        long.insert(at, "unit", long["metric"].map(UNITS).fillna(""))
    if "worst_of" in long.columns:  # what a worst-case row combines: a list of strings
        long["worst_of"] = [worst_of_list(v) for v in long["worst_of"]]
    return typed(long, ints=INT_COLS, bools=BOOL_COLS, floats=FLOAT_COLS,
                 strings=[c for c in long.columns
                          if c not in (*INT_COLS, *BOOL_COLS, *FLOAT_COLS, "worst_of")])



def provenance(plan: dict, long: pd.DataFrame, now: datetime | None = None) -> dict:
    """Where the numbers come from: preset, code version(s), date, device(s), the models' training
    precision(s), test images, the environment lock."""
    from lsqueeze.runtime.files import lock_digest

    def distinct(col):
        return sorted({str(v) for v in long[col] if not missing(v)}) if col in long else []

    acc = long[long["metric"] == "accuracy"] if "metric" in long else long.iloc[0:0]
    ns = sorted({int(v) for v in acc["n"] if not missing(v)}) if "n" in acc else []
    return {"preset": str(plan.get("preset") or "?"),
            "code": ", ".join(distinct("code_version")) or "?",
            "date": (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
            "devices": "; ".join(distinct("device")) or "?",
            # more than one: `precision: auto` resolved differently on the machines that trained
            "precision": distinct("precision"),
            "n": ", ".join(map(str, ns)) or "—",
            # the environment lock of the checkout that built the tables (None: not a checkout)
            "lock": lock_digest()}


def _precision_note(precisions) -> str:
    if not precisions:
        return ""
    if len(precisions) == 1:
        return f" · trained in {precisions[0]}"
    return (f" · trained in {' and '.join(precisions)}: the models of these tables differ in"
            " training precision (set train.precision to make them alike)")


def provenance_lines(prov: dict, html: bool = False) -> list[str]:
    esc = _html.escape if html else str
    b = ("<b>", "</b>") if html else ("**", "**")
    return [f"Preset {b[0]}{esc(prov['preset'])}{b[1]} · code {esc(prov['code'])} · "
            f"tables built {esc(prov['date'])}",
            f"Device(s): {esc(prov['devices'])}" + _precision_note(prov.get("precision"))
            + f" · test images per attack (n): {esc(prov['n'])}"
            + (f" · environment: requirements.lock {esc(prov['lock'][:19])}" if prov.get("lock") else "")]


def caption(table: dict) -> str | None:
    """`Paper, Table N: <what the table is>` for a table that reproduces a paper table."""
    try:
        number = int(table.get("paper_table"))
    except (TypeError, ValueError):
        return None
    text = PAPER_CAPTIONS.get(number)
    return f"Paper, Table {number}: {text}" if text else None


def checked_model(r, html: bool = False) -> str:
    """How a gradient-masking line names its model: the tables' name for it and its cell id."""
    model = getattr(r, "model", None)
    if html:
        cid = f"<code>{_html.escape(str(r.cell_id))}</code>"
        return cid if missing(model) else f"{_html.escape(str(model))} ({cid})"
    return f"`{r.cell_id}`" if missing(model) else f"{model} (`{r.cell_id}`)"


def _masking_line(r, html: bool) -> str:
    """One flagged check: its model, the accuracy it flags, what that was compared with, why."""
    esc = _html.escape if html else str
    ref = "" if missing(r.reference_pct) else f" against {r.reference_pct:.2f}%" + (
        "" if missing(r.reference_attack_id) else f" ({esc(str(r.reference_attack_id))})")
    check = f"<b>{esc(str(r.check))}</b>" if html else f"**{r.check}**"
    return (f"{check} on {checked_model(r, html)}: {r.accuracy_pct:.2f}% ({esc(str(r.attack_id))})"
            f"{ref}; {esc(str(r.detail))}")


def masking_section(masking: pd.DataFrame, html: bool = False) -> str:
    """The gradient-masking section of tables.md (or tables.html): how many checks ran, and each
    one that fired."""
    flagged = masking[masking["flagged"]] if len(masking) else masking
    count = f"{len(masking)} checks on the measurements above; {len(flagged)} flagged."
    lines = [_masking_line(r, html) for r in flagged.itertuples()]
    if html:
        out = ["<h2>Gradient-masking checks</h2>", f"<p>{count}</p>"]
        if lines:
            out.append("<ul>" + "".join(f"<li>{t}</li>" for t in lines) + "</ul>")
        return "\n".join(out)
    head = ["", "## Gradient-masking checks", "", count]
    return "\n".join(head + [f"- {t}" for t in lines]) + "\n"


def measurements_html(long: pd.DataFrame, prov: dict | None = None) -> str:
    """The long form as one HTML table (the Snakemake report shows HTML, not Parquet)."""
    head = f"<p>{'<br>'.join(provenance_lines(prov, html=True))}</p>" if prov else ""
    body = long.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Measurements</title><style>"
            "table{border-collapse:collapse;font-size:small}td,th{border:1px solid #ccc;"
            "padding:1px 4px}</style></head><body><h1>All measurements (long form)</h1>"
            f"{head}{body}</body></html>\n")
