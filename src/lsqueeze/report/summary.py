"""The summary figure (`lsqueeze figure --measurements measurements.parquet`): every model's
accuracy under every evaluation of a run, legible for a few models or for dozens.

A grid, one row per model (by the name every output prints, lsqueeze.report.names) and one
column per attack, grouped in panels by threat model (clean, white-box, black-box per source
model, worst case). Each cell is coloured on one accuracy scale for the whole figure (0% dark,
100% bright, cividis: ordered and legible in grey and to colour-blind readers) and carries its
number; a model not evaluated under an attack gets a hatched light-grey cell without a number,
so "not measured" never reads as 0 (a measured 0 is a dark cell reading "0.0"). Each number
sits in its own cell: nothing is stacked, however many models or attacks.
"""

from __future__ import annotations

import math
import re
import textwrap

from lsqueeze.report.figures import STYLE, plt, save
from lsqueeze.runtime.files import read_parquet
from lsqueeze.runtime.values import missing

SUMMARY_METRICS = ("test_accuracy", "accuracy")  # clean accuracy, accuracy under an attack
CLEAN = "clean (no attack)"
NOT_MEASURED = "not measured"  # a hatched cell: the model was not evaluated under the attack
THREATS = {"none": "clean test images", "white": "white-box attacks",
           "black": "black-box attacks", "worst": "worst case over the attacks"}
LOSSES = {"xent": "X-ent", "cw": "CW"}
CMAP = "cividis"
HATCH = {"facecolor": "0.93", "edgecolor": "0.7", "hatch": "////"}


def _g(v) -> str:
    return f"{float(v):g}"


def attack_label(row) -> str:
    """An attack in words from its measurement columns, e.g. 'PGD-40 CW, ε=0.3, step 0.01,
    random start' (the attack id stays the key; this is what the legend says)."""
    if row.get("metric") == "test_accuracy" or row.get("threat") == "none":
        return CLEAN
    kind, aid = row.get("attack"), str(row.get("attack_id") or "")
    # an unbounded attack's ε: +inf in the long form (NaN in runs kept from before)
    unbounded = missing(row.get("eps")) or not math.isfinite(float(row["eps"]))
    eps = "ε=∞" if unbounded else f"ε={_g(row['eps'])}"
    loss = LOSSES.get(row.get("loss"), row.get("loss"))
    if kind == "pgd":
        parts = [f"PGD-{int(row['attack_steps'])} {loss}", eps]
        if not missing(row.get("step_size")):
            parts.append(f"step {_g(row['step_size'])}")
        rand = row.get("random_start")
        if (not missing(rand) and bool(rand)) or aid.endswith("-rand"):
            parts.append("random start")
        if not missing(row.get("restarts")) and int(row["restarts"]) > 1:
            parts.append(f"{int(row['restarts'])} restarts")
        return ", ".join(parts)
    if kind == "fgsm":
        return f"FGSM {loss}, {eps}"
    if kind == "autoattack":
        m = re.match(r"aa-([a-z]+)-", aid)
        return f"AutoAttack{f' ({m.group(1)})' if m else ''}, {eps}"
    if kind == "worst_case":
        return f"worst case, {eps}"
    return aid or str(kind)


def _cell_of(row) -> dict:
    """The cell dict config.model_name reads, from a measurement row (an adversarially trained
    cell's training attack is in its id: at<steps>-e<eps>-a<step size>…)."""
    cell = {k: row.get(k) for k in ("dataset", "method", "alpha", "beta", "sigma", "steps", "seed",
                                    "clip_noise")}
    if cell["method"] == "adv":
        m = re.search(r"(?:^|/)at(\d+)-e([^-]+)-", str(row.get("cell_id")))
        cell["adv"] = {"steps": int(m.group(1)), "eps": float(m.group(2))} if m else None
    return cell


def model_names(cells: dict) -> dict:
    """{cell id: the model in the paper's words} (config.model_name), for measurements written
    before they carried each model's display name (lsqueeze.report.names); where two models
    would share a name, the values that tell them apart are added (α, β, σ, k = training steps,
    seed, clipped noise; the dataset where there are several)."""
    from lsqueeze.plan.build import model_name
    from lsqueeze.report.names import distinct

    base = {}
    for cid, c in cells.items():
        if c["method"] == "adv" and not c.get("adv"):
            base[cid] = "adv. trained"
        else:
            base[cid] = model_name(c)
    if len({c.get("dataset") for c in cells.values()}) > 1:
        base = {cid: f"{cells[cid]['dataset']}: {n}" for cid, n in base.items()}
    return distinct(base, cells)


def _attack_order(row) -> tuple:
    """Attacks of a panel sorted by kind, loss, ε, steps, step size and restarts."""
    if row.get("threat") == "none":
        return ("",)
    return (str(row.get("attack") or ""), str(row.get("loss") or ""),
            *[-1.0 if missing(row.get(k)) else float(row[k])
              for k in ("eps", "attack_steps", "step_size", "restarts")], str(row.get("attack_id")))


def summary_records(df) -> list[dict]:
    """The accuracies the summary draws, one dict per measurement: model (its name), key and
    label of the attack ("clean (no attack)" for the clean test accuracy), panel, value in %."""
    df = df[df["metric"].isin(SUMMARY_METRICS)]
    if df.empty:
        raise ValueError("the measurements hold no accuracy (test_accuracy or accuracy) to draw")
    rows = [{k: (None if missing(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]
    cells = {}
    for r in rows:
        cells.setdefault(r["cell_id"], _cell_of(r))
    names = model_names(cells)
    # the display name the aggregation gave each model, the one every other output prints
    names.update({r["cell_id"]: r["model"] for r in rows if r.get("model")})
    out = []
    for r in rows:
        threat = "none" if r["metric"] == "test_accuracy" else str(r.get("threat"))
        r = {**r, "threat": threat}
        panel = THREATS.get(threat, threat)
        if threat == "black" and r.get("source_id"):
            src = r["source_id"]
            panel += f"\n(transferred from {names.get(src) or src.split('/', 1)[-1]})"
        out.append({"cell_id": r["cell_id"], "model": names[r["cell_id"]], "panel": panel,
                    "threat": threat, "key": CLEAN if threat == "none" else str(r["attack_id"]),
                    "label": attack_label(r), "order": _attack_order(r),
                    "value": None if r["value"] is None else 100 * float(r["value"]),
                    "n": r.get("n")})
    return out


def _panel_rank(rec) -> tuple:
    order = list(THREATS)
    return (order.index(rec["threat"]) if rec["threat"] in order else len(order), rec["panel"])


def _text_color(rgba) -> str:
    """Black on a light cell, white on a dark one (relative luminance, ITU-R BT.709)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def draw_summary(df, title="Accuracy per model and attack"):
    """The summary figure (returned, not saved): one panel per threat model, the models on the
    shared y axis by name, one column per attack (named below it), every cell coloured on one
    accuracy scale and labelled with its value; hatched where not measured."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch, Rectangle

    recs = summary_records(df)
    models = list(dict.fromkeys(r["model"] for r in recs))
    panels = [r["panel"] for r in sorted({r["panel"]: r for r in recs}.values(), key=_panel_rank)]
    per_panel = {p: [r["key"] for r in sorted({r["key"]: r for r in recs if r["panel"] == p}
                                                 .values(), key=lambda r: r["order"])]
                 for p in panels}
    labels = {r["key"]: r["label"] for r in recs}
    value = {(r["panel"], r["model"], r["key"]): r["value"] for r in recs if r["value"] is not None}
    # the attacked test images (a clean accuracy may count the whole test split)
    ns = sorted({int(r["n"]) for r in recs if r["n"] is not None and r["threat"] != "none"})
    cmap, norm = plt.get_cmap(CMAP), Normalize(0, 100)

    plt.rcParams.update(STYLE)
    widths = [max(len(per_panel[p]), 1.6) for p in panels]  # a one-column panel keeps its title
    longest = max(len(labels[k]) for k in labels)
    fig, axes = plt.subplots(
        1, len(panels), sharey=True, squeeze=False, constrained_layout=True,
        gridspec_kw={"width_ratios": widths},
        figsize=(3.5 + 0.62 * sum(widths), 1.6 + 0.34 * len(models) + 0.062 * min(longest, 60)))
    fig.suptitle(title + (f" (%; attacks on {', '.join(f'{n:,}' for n in ns)} test images)"
                          if ns else " (%)"))
    for ax, panel in zip(axes[0], panels):
        attacks = per_panel[panel]
        for i, model in enumerate(models):
            for j, key in enumerate(attacks):
                v = value.get((panel, model, key))
                gid = f"{model}|{key}"
                if v is None:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, lw=0.5, gid=f"{gid}|n/m",
                                           **HATCH))
                    continue
                color = cmap(norm(v))
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=color,
                                       edgecolor="white", lw=0.8, gid=gid))
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7.5,
                        color=_text_color(color), gid=gid)
        ax.set_xlim(-0.5, len(attacks) - 0.5)
        ax.set_xticks(range(len(attacks)),
                      [textwrap.fill(labels[k], 28) for k in attacks], rotation=90, fontsize=7.5)
        ax.set_title(textwrap.fill(panel.replace("\n", " "), max(14, int(11 * len(attacks)))),
                     fontsize=9.5)
        ax.grid(False)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    axes[0, 0].set_yticks(range(len(models)), models, fontsize=8.5)
    axes[0, 0].set_ylim(len(models) - 0.5, -0.5)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=axes[0].tolist(), label="accuracy (%)", shrink=0.6, aspect=30,
                 pad=0.01)
    fig.legend(handles=[Patch(**HATCH, label=NOT_MEASURED)], loc="outside lower right",
               fontsize=8, frameon=False)
    return fig


def summary_figure(measurements, out) -> None:
    """Accuracy of every model under every evaluation (clean, white-box, black-box, worst case)
    from the long-form measurements Parquet (lsqueeze aggregate): draw_summary as PNG + PDF."""
    save(draw_summary(read_parquet(measurements)), out)
