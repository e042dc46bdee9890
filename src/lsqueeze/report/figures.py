"""Figures (matplotlib PNG + PDF), one function per kind of figure, one style.

Which models a figure compares is config (`figures:` in a preset); each function takes the
per-model analysis Parquets in the order of the figure's cells and the legend label of each.
Units on the axes are the paper's: ε_L in the dataset's ε units (MNIST [0,1], CIFAR 0–255) and
gradients per such unit, so ε_L = logit gap / gradient gap holds on the plotted values too.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lsqueeze.registries.base import load_function  # noqa: E402
from lsqueeze.registries.figure_kinds import figure_kind  # noqa: E402
from lsqueeze.runtime.files import atomic_path, read_parquet  # noqa: E402
from lsqueeze.runtime.rehearsal import stamp_figure  # noqa: E402
from lsqueeze.runtime.values import missing  # noqa: E402

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8,
         "axes.grid": True, "grid.alpha": 0.3, "figure.titlesize": 12}
COLORS = plt.get_cmap("tab10").colors


def cumulative_curve(sum_abs) -> tuple[np.ndarray, np.ndarray]:
    """Neurons sorted by summed |activation| (ascending) and the running total: the flat start of
    the curve is the inactive neurons, its height the layer's total activation."""
    s = np.sort(np.asarray(sum_abs, dtype=np.float64))
    return np.arange(1, len(s) + 1), np.cumsum(s)


def vector_path(out) -> Path:
    """The PDF drawn beside every PNG (for a paper or appendix: scales without pixels)."""
    return Path(out).with_suffix(".pdf")


def save(fig, out) -> None:
    """`out` as PNG and the same figure as PDF beside it (vector_path)."""
    stamp_figure(fig)  # a rehearsal's banner (nothing in a real run)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    # No creation date in the PDF: the same figure gives the same bytes (DVC hashes them).
    with atomic_path(vector_path(out)) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format="pdf", metadata={"CreationDate": None})
    plt.close(fig)


def _subplots(nrows, ncols, title, size):
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, constrained_layout=True)
    fig.suptitle(title)
    return fig, axes


def _hist(ax, values: list[np.ndarray], labels, xlabel, bins=50, clip=(0.5, 99.5)):
    """Overlaid histograms on common bins over the central 99% of the pooled values, so that one
    outlier cannot squash every distribution into one bin (the paper's Figure 3 chops an axis for
    the same reason); the values outside are left out, not piled into the edge bins."""
    pooled = np.concatenate([v[np.isfinite(v)] for v in values])
    lo, hi = np.percentile(pooled, clip) if len(pooled) else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    for i, (v, label) in enumerate(zip(values, labels)):
        c = COLORS[i % len(COLORS)]
        ax.hist(v, bins=edges, histtype="stepfilled", alpha=0.2, color=c)
        ax.hist(v, bins=edges, histtype="step", lw=1.5, color=c, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of test images")


def _legend_below(fig, ax, ncol=2):
    """One legend for all panels, under them, so it never hides a histogram."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = 1 if max(map(len, labels)) > 45 else min(ncol, len(labels))  # long entries: a list
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def _units(scale: float) -> str:
    return "[0,1] pixel units" if scale == 1 else f"0–{scale:g} pixel units"


def figure_linear(frames, labels, title, out, pixel_scales, eps=None) -> None:
    """Figures 1, 3, 4, 6, 8: the numerator and denominator of Eq. 4 and their consequences.

    (top-left) logit gap z_y − z_ȳ; (bottom-left) gradient gap ‖∇z_y − ∇z_ȳ‖₁; (top-right) ε_L;
    (bottom-right) cosine between ∇z_y and ∇z_ȳ (gradient coherence). With `eps` (paper units),
    the ε_L panel marks the attack size and the legend gives Eq. 4's predicted accuracy.
    """
    scale = pixel_scales[0]
    fig, ax = _subplots(2, 2, title, (11, 7.5))
    _hist(ax[0, 0], [f["logit_gap"].to_numpy() for f in frames], labels,
          r"logit gap $z_y - z_{\bar y}$")
    ax[0, 0].set_title("numerator of Eq. 4")
    _hist(ax[1, 0], [f["grad_gap"].to_numpy() / s for f, s in zip(frames, pixel_scales)], labels,
          rf"gradient gap $\|\nabla_x z_y - \nabla_x z_{{\bar y}}\|_1$ (per {_units(scale)})")
    ax[1, 0].set_title("denominator of Eq. 4")
    legend = list(labels)
    if eps is not None:
        # the share with ε_L > ε, as tables.predicted_accuracy (not imported: figures must not
        # rerun when the table code changes)
        legend = [f"{lab}: Eq. 4 predicted accuracy at ε = {eps:g}: "
                  f"{100 * np.mean(f['eps_L'] > eps / s):.1f}%"
                  for lab, f, s in zip(labels, frames, pixel_scales)]
    _hist(ax[0, 1], [f["eps_L"].to_numpy() * s for f, s in zip(frames, pixel_scales)], legend,
          rf"$\varepsilon_L$ = logit gap / gradient gap ({_units(scale)})")
    ax[0, 1].set_title(r"$\varepsilon_L$ (Eq. 4; < 0: misclassified)")
    if eps is not None:
        ax[0, 1].axvline(eps, color="k", ls="--", lw=1)
        ax[0, 1].annotate(f"ε = {eps:g} ", (eps, 0.97), xycoords=("data", "axes fraction"),
                          ha="right", va="top", fontsize=8)
    _hist(ax[1, 1], [f["cosine"].to_numpy() for f in frames], labels,
          r"cosine between $\nabla_x z_y$ and $\nabla_x z_{\bar y}$")
    ax[1, 1].set_title("gradient coherence")
    _legend_below(fig, ax[0, 1])
    save(fig, out)


def figure_logits(frames, labels, title, out, pixel_scales=None, eps=None) -> None:
    """Figure 2: histogram of every logit of every test image (adversarial training squashes
    them; stronger adversaries squash more)."""
    fig, ax = _subplots(1, 2, title, (11, 4))
    logits = [np.concatenate(f["logits"].to_numpy()) for f in frames]
    _hist(ax[0, 0], logits, labels, "logit value $z_i$ (all classes)", bins=60)
    ax[0, 0].set_ylabel("number of logits")
    ax[0, 0].set_title("all logits")
    _hist(ax[0, 1], [np.abs(v) for v in logits], labels, r"$|z_i|$", bins=60)
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_ylabel("number of logits (log)")
    ax[0, 1].set_title("logit magnitudes")
    _legend_below(fig, ax[0, 0], ncol=3)
    save(fig, out)


def figure_gradients(frames, labels, title, out, pixel_scales, eps=None) -> None:
    """Figures 4/7: ℓ1 norms of ∇x z_y and ∇x z_ȳ and the cosine between them: label smoothing
    shrinks and aligns the gradients, logit squeezing mostly shrinks them."""
    scale = pixel_scales[0]
    fig, ax = _subplots(1, 3, title, (14, 4))
    per = f"per {_units(scale)}"
    _hist(ax[0, 0], [f["grad_l1_true"].to_numpy() / s for f, s in zip(frames, pixel_scales)],
          labels, rf"$\|\nabla_x z_y\|_1$ ({per})")
    ax[0, 0].set_title("gradient of the true logit")
    _hist(ax[0, 1], [f["grad_l1_wrong"].to_numpy() / s for f, s in zip(frames, pixel_scales)],
          labels, rf"$\|\nabla_x z_{{\bar y}}\|_1$ ({per})")
    ax[0, 1].set_title("gradient of the strongest wrong logit")
    _hist(ax[0, 2], [f["cosine"].to_numpy() for f in frames], labels,
          r"cosine between $\nabla_x z_y$ and $\nabla_x z_{\bar y}$")
    ax[0, 2].set_title("gradient coherence")
    _legend_below(fig, ax[0, 0], ncol=3)
    save(fig, out)


def _landscape(frames, labels, title, out, plane, ylabel, ncols=4):
    """One block per model (its own colour scale, so a flat landscape looks flat), one panel per
    image: filled contours of the cross-entropy, the clean image marked at (0, 0)."""
    from matplotlib.ticker import MaxNLocator

    plt.rcParams.update(STYLE)
    n_img = max(int(f["image"].max()) + 1 for f in frames)
    nrows = -(-n_img // ncols)
    fig = plt.figure(figsize=(3.0 * ncols + 1.0, (2.5 * nrows + 0.5) * len(frames) + 0.4),
                     constrained_layout=True)
    fig.suptitle(title)
    for sub, f, label in zip(np.atleast_1d(fig.subfigures(len(frames), 1)), frames, labels):
        sub.suptitle(label, fontsize=11, fontweight="bold")
        ax = sub.subplots(nrows, ncols, squeeze=False)
        f = f[f["plane"] == plane]
        levels = MaxNLocator(nbins=16).tick_values(0, max(float(f["loss"].max()), 1e-6))
        for i, a in enumerate(ax.flat):
            if i >= n_img:
                a.axis("off")
                continue
            img = f[f["image"] == i]
            g = img.pivot(index="eps2", columns="eps1", values="loss")
            cs = a.contourf(g.columns, g.index, g.to_numpy(), levels=levels, cmap="viridis")
            a.plot(0, 0, "r+", ms=8)
            a.set_title(f"image {i} (class {int(img['label'].iloc[0])})", fontsize=9)
            a.set_xlabel(r"$\varepsilon_1$ (random $r_1$)", fontsize=8)
            a.set_ylabel(ylabel if i % ncols == 0 else "", fontsize=8)
            a.tick_params(labelsize=7)
            a.grid(False)
        sub.colorbar(cs, ax=ax, label="cross-entropy", shrink=0.9)
    save(fig, out)


def figure_landscape_random(frames, labels, title, out, pixel_scales=None, eps=None) -> None:
    """Figure 5: cross-entropy on x + ε1·r1 + ε2·r2, r1, r2 ~ Rademacher(0.5)."""
    _landscape(frames, labels, title, out, "random", r"$\varepsilon_2$ (random $r_2$)")


def figure_landscape_adversarial(frames, labels, title, out, pixel_scales=None, eps=None) -> None:
    """Figure 9: cross-entropy on x + ε1·r1 + ε2·sign(∇x xent): steep only along the gradient
    sign if the model does not mask gradients."""
    _landscape(frames, labels, title, out, "adversarial",
               r"$\varepsilon_2$ (sign $\nabla_x$ xent)")


LAYER_NAMES = {"penultimate": "penultimate-layer neurons", "logits": "logits (one per class)"}


def _activations(frames, labels, title, out, layer):
    fig, ax = _subplots(1, 2, title, (12, 4.2))
    for i, (f, label) in enumerate(zip(frames, labels)):
        f = f[f["layer"] == layer]
        rank, cum = cumulative_curve(f["sum_abs"].to_numpy())
        text = f"{label} (inactive: {int(f['inactive'].sum())} of {len(f)})"
        c = COLORS[i % len(COLORS)]
        marker = "o" if len(rank) <= 20 else None  # the logit layer: one point per class
        ax[0, 0].plot(rank, cum, color=c, lw=1.6, marker=marker, ms=4, label=text)
        ax[0, 1].plot(rank, cum / max(cum[-1], 1e-30), color=c, lw=1.6, marker=marker, ms=4,
                      label=text)
    ax[0, 0].set_ylabel("cumulative Σ|activation| over test images")
    ax[0, 0].set_title("cumulative magnitude")
    ax[0, 1].set_ylabel("share of the layer's total Σ|activation|")
    ax[0, 1].set_title("cumulative share (flat start = inactive neurons)")
    for a in ax[0]:
        a.set_xlabel(f"{LAYER_NAMES[layer]}, sorted by Σ|activation| (ascending)")
        a.legend(loc="upper left")
    save(fig, out)


def figure_activations_penultimate(frames, labels, title, out, pixel_scales=None, eps=None) -> None:
    """Figure 10: neurons of the penultimate (feature) layer; regularizers + noise and adversarial
    training switch many of them off."""
    _activations(frames, labels, title, out, "penultimate")


def figure_activations_logits(frames, labels, title, out, pixel_scales=None, eps=None) -> None:
    """Figure 11: the logit layer, one curve point per class."""
    _activations(frames, labels, title, out, "logits")


def draw(kind: str, inputs, labels, title: str, out, pixel_scales=None, eps=None) -> None:
    """Read the per-model Parquets (in the figure's cell order) and draw one figure kind."""
    draw_kind = load_function(figure_kind(kind).draw)
    if len(labels) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    pixel_scales = list(pixel_scales or [1.0] * len(inputs))
    if len(set(pixel_scales)) > 1:  # one axis, one unit: ε_L of MNIST and CIFAR do not mix
        raise ValueError(f"figure {title!r}: its cells' datasets have different pixel scales "
                         f"{sorted(set(pixel_scales))}; compare models of one dataset per figure")
    frames = [read_parquet(p) for p in inputs]
    draw_kind(frames, list(labels), title, out, pixel_scales=pixel_scales, eps=eps)


SUMMARY_METRICS = ("test_accuracy", "accuracy")  # clean accuracy, accuracy under an attack
CLEAN = "clean (no attack)"
NOT_MEASURED = "n/m"  # drawn, as text, where a model was not evaluated under an attack
THREATS = {"none": "clean test images", "white": "white-box attacks",
           "black": "black-box attacks", "worst": "worst case over the attacks"}
LOSSES = {"xent": "X-ent", "cw": "CW"}




def _g(v) -> str:
    return f"{float(v):g}"


def attack_label(row) -> str:
    """An attack in words from its measurement columns, e.g. 'PGD-40 CW, ε=0.3, step 0.01,
    random start' (the attack id stays the key; this is what the legend says)."""
    if row.get("metric") == "test_accuracy" or row.get("threat") == "none":
        return CLEAN
    kind, aid = row.get("attack"), str(row.get("attack_id") or "")
    eps = "ε=∞" if missing(row.get("eps")) else f"ε={_g(row['eps'])}"
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
    """{cell id: the model in the paper's words} (config.model_name); where two models of a
    figure would share a name, the values that tell them apart are added (α, β, σ, k = training
    steps, seed, clipped noise; the dataset where there are several)."""
    from lsqueeze.plan.build import model_name, steps_tag

    base = {}
    for cid, c in cells.items():
        if c["method"] == "adv" and not c.get("adv"):
            base[cid] = "adv. trained"
        else:
            base[cid] = model_name(c)
    if len({c.get("dataset") for c in cells.values()}) > 1:
        base = {cid: f"{cells[cid]['dataset']}: {n}" for cid, n in base.items()}
    keys = (("alpha", "α={}", _g), ("beta", "β={}", _g), ("sigma", "σ={}", _g),
            ("steps", "k={}", steps_tag), ("seed", "seed {}", lambda v: str(int(v))),
            ("clip_noise", "{}", lambda v: "clipped noise" if v else "unclipped noise"))
    names = {}
    for cid, name in base.items():
        group = [c for c2, c in cells.items() if base[c2] == name]
        if len(group) > 1:
            vary = [(k, fmt, f) for k, fmt, f in keys
                    if len({None if missing(c.get(k)) else c.get(k) for c in group}) > 1]
            c = cells[cid]
            extra = [fmt.format(f(c[k])) for k, fmt, f in vary if not missing(c.get(k))]
            name = f"{name} ({', '.join(extra) if extra else cid.split('/', 1)[-1]})"
        names[cid] = name
    return names


def _attack_order(row) -> tuple:
    """Attacks of a panel sorted by kind, loss, ε, steps, step size and restarts."""
    if row.get("threat") == "none":
        return ("",)
    return (str(row.get("attack") or ""), str(row.get("loss") or ""),
            *[-1.0 if missing(row.get(k)) else float(row[k])
              for k in ("eps", "attack_steps", "step_size", "restarts")], str(row.get("attack_id")))


def attack_colors(keys) -> dict:
    """One colour per attack (same in every panel): tab10 up to 10 attacks; up to 20, tab20's
    ten strong colours and then its ten light ones; beyond, evenly spaced along a colour map."""
    keys = list(keys)
    if len(keys) <= 10:
        colors = plt.get_cmap("tab10").colors
    elif len(keys) <= 20:
        tab20 = plt.get_cmap("tab20").colors
        colors = tab20[0::2] + tab20[1::2]
    else:
        colors = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, len(keys)))
    return {k: tuple(colors[i]) for i, k in enumerate(keys)}


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


def draw_summary(df, title="Accuracy per model and attack"):
    """The summary figure (returned, not saved): one panel per threat model (clean, white-box,
    black-box per source model, worst case), the models on the shared y axis by name, one bar per
    attack in the attack's colour (the same in every panel) with its value written beside it. A
    model not evaluated under an attack of the panel gets the grey text "n/m" in that bar's place,
    so that it cannot be read as 0 (a measured 0 is a bar labelled 0.0)."""
    from matplotlib.patches import Patch

    recs = summary_records(df)
    models = list(dict.fromkeys(r["model"] for r in recs))
    panels = [r["panel"] for r in sorted({r["panel"]: r for r in recs}.values(), key=_panel_rank)]
    per_panel = {p: [r["key"] for r in sorted({r["key"]: r for r in recs if r["panel"] == p}
                                                 .values(), key=lambda r: r["order"])]
                 for p in panels}
    keys = list(dict.fromkeys(k for p in panels for k in per_panel[p]))
    colors = attack_colors(keys)
    labels = {r["key"]: r["label"] for r in recs}
    value = {(r["panel"], r["model"], r["key"]): r["value"] for r in recs if r["value"] is not None}
    ns = sorted({int(r["n"]) for r in recs if r["n"] is not None})

    slots = max(len(v) for v in per_panel.values())
    bar_h = 0.8 / slots
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(1, len(panels), sharey=True, squeeze=False, constrained_layout=True,
                             figsize=(2.5 + 3.3 * len(panels),
                                      1.5 + len(models) * max(0.4, 0.15 * slots)))
    fig.suptitle(title + (f" (% of {', '.join(map(str, ns))} test images)" if ns else " (%)"))
    for ax, panel in zip(axes[0], panels):
        attacks = per_panel[panel]
        for i, model in enumerate(models):
            for j, key in enumerate(attacks):
                y = i - 0.4 + bar_h * (j + 0.5 + (slots - len(attacks)) / 2)
                gid = f"{model}|{key}"
                v = value.get((panel, model, key))
                if v is None:
                    ax.text(1.0, y, NOT_MEASURED, va="center", ha="left", fontsize=6.5,
                            color="0.5", style="italic", gid=f"{gid}|{NOT_MEASURED}")
                    continue
                ax.barh(y, v, height=bar_h * 0.85, color=colors[key], gid=gid)
                if v < 1.0:  # a measured (near) 0: a tick in the attack's colour at 0
                    ax.plot([0], [y], marker="|", ms=5, mew=2, color=colors[key], gid=gid,
                            clip_on=False)
                ax.text(v + 1.0, y, f"{v:.1f}", va="center", ha="left", fontsize=6.5, gid=gid)
        ax.set_title(panel, fontsize=10)
        ax.set_xlim(0, 115)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel("accuracy (%)")
        ax.grid(axis="y", visible=False)
        for i in range(1, len(models)):
            ax.axhline(i - 0.5, color="0.8", lw=0.6)
    axes[0, 0].set_yticks(range(len(models)), models)
    axes[0, 0].set_ylim(len(models) - 0.5, -0.5)
    handles = [Patch(color=colors[k], label=labels[k]) for k in keys]
    handles.append(Patch(facecolor="none", edgecolor="none",
                         label=f"{NOT_MEASURED}: not measured"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=7.5, frameon=False,
               title="attack", title_fontsize=8.5)
    return fig


def summary_figure(measurements, out) -> None:
    """Accuracy of every model under every evaluation (clean, white-box, black-box, worst case)
    from the long-form measurements Parquet (lsqueeze aggregate): draw_summary as PNG + PDF."""
    save(draw_summary(read_parquet(measurements)), out)
