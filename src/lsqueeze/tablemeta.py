"""What the aggregated tables say about themselves: units and dtypes of the long form, the
provenance header, the paper's table captions and the gradient-masking section of the HTML."""

from __future__ import annotations

import html as _html
import math
from datetime import datetime, timezone

import pandas as pd

# `value` holds accuracies and logit norms side by side: each row says which.
UNITS = {"train_accuracy": "fraction", "test_accuracy": "fraction", "accuracy": "fraction",
         "predicted_accuracy": "fraction", "mean_logit_norm": "logit L2 norm"}
INT_COLS = ["steps", "seed", "attack_steps", "restarts", "n", "steps_done"]
BOOL_COLS = ["clip_noise", "random_start", "diverged"]
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


def missing(v) -> bool:
    """No value: None, pandas' NA, or NaN."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def typed_measurements(long: pd.DataFrame) -> pd.DataFrame:
    """The long form as stored: a `unit` per row beside `value`, counts as nullable integers
    (Int64), flags as nullable booleans, instead of float64 and object columns."""
    long = long.copy()
    if "metric" in long.columns:
        at = list(long.columns).index("value") + 1 if "value" in long.columns else len(long.columns)
        long.insert(at, "unit", long["metric"].map(UNITS).fillna(""))
    for col in INT_COLS:
        if col in long.columns:
            long[col] = pd.to_numeric(long[col]).round().astype("Int64")
    for col in BOOL_COLS:
        if col in long.columns:
            long[col] = long[col].map(lambda v: pd.NA if missing(v) else bool(v)).astype("boolean")
    if "worst_of" in long.columns:  # the attacks a worst-case row combines
        long["worst_of"] = long["worst_of"].map(lambda v: pd.NA if missing(v) else v).astype("string")
    return long


def provenance(plan: dict, long: pd.DataFrame, now: datetime | None = None) -> dict:
    """Where the numbers come from: preset, code version(s), date, device(s), test images."""
    def distinct(col):
        return sorted({str(v) for v in long[col] if not missing(v)}) if col in long else []

    acc = long[long["metric"] == "accuracy"] if "metric" in long else long.iloc[0:0]
    ns = sorted({int(v) for v in acc["n"] if not missing(v)}) if "n" in acc else []
    return {"preset": str(plan.get("preset") or "?"),
            "code": ", ".join(distinct("code_version")) or "?",
            "date": (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC"),
            "devices": "; ".join(distinct("device")) or "?",
            "n": ", ".join(map(str, ns)) or "—"}


def provenance_lines(prov: dict, html: bool = False) -> list[str]:
    esc = _html.escape if html else str
    b = ("<b>", "</b>") if html else ("**", "**")
    return [f"Preset {b[0]}{esc(prov['preset'])}{b[1]} · code {esc(prov['code'])} · "
            f"tables built {esc(prov['date'])}",
            f"Device(s): {esc(prov['devices'])} · test images per attack (n): {esc(prov['n'])}"]


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
    ref = "" if missing(r.reference) else f" against {100 * r.reference:.2f}%" + (
        "" if missing(r.reference_attack_id) else f" ({esc(str(r.reference_attack_id))})")
    check = f"<b>{esc(str(r.check))}</b>" if html else f"**{r.check}**"
    return (f"{check} on {checked_model(r, html)}: {100 * r.value:.2f}% ({esc(str(r.attack_id))})"
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
