"""Figures (matplotlib PNG + PDF), one function per kind of figure, one style.

Which models a figure compares is config (`figures:` in a preset); each function takes the
per-model analysis Parquets in the order of the figure's cells and the legend label of each.
Units on the axes are the paper's: ε_L in the dataset's ε units (MNIST [0,1], CIFAR 0–255) and
gradients per such unit, so ε_L = logit gap / gradient gap holds on the plotted values too.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lsqueeze.registries.base import load_function  # noqa: E402
from lsqueeze.registries.figure_kinds import figure_kind  # noqa: E402
from lsqueeze.runtime.files import atomic_path, read_parquet  # noqa: E402
from lsqueeze.runtime.rehearsal import stamp_figure  # noqa: E402

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
        # the share with ε_L > ε, as measurements.predicted_accuracy (not imported: figures must not
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
    """One block per model, one panel per image: filled contours of the cross-entropy, the
    clean image marked at (0, 0). Every model on one colour scale (0 to the largest loss of any
    model), with one colour bar: a flat landscape looks flat beside a steep one, which is the
    comparison the figure makes (a scale per model would stretch a flat one to full contrast)."""
    from matplotlib.ticker import MaxNLocator

    plt.rcParams.update(STYLE)
    frames = [f[f["plane"] == plane] for f in frames]
    n_img = max(int(f["image"].max()) + 1 for f in frames)
    nrows = -(-n_img // ncols)
    top = max(max(float(f["loss"].max()) for f in frames), 1e-6)
    levels = MaxNLocator(nbins=16).tick_values(0, top)
    fig = plt.figure(figsize=(3.0 * ncols + 1.6, (2.5 * nrows + 0.5) * len(frames) + 0.4),
                     constrained_layout=True)
    fig.suptitle(title)
    blocks, bar = fig.subfigures(1, 2, width_ratios=[3.0 * ncols, 1.0])
    cs = None
    for sub, f, label in zip(np.atleast_1d(blocks.subfigures(len(frames), 1)), frames, labels):
        sub.suptitle(label, fontsize=11, fontweight="bold")
        ax = sub.subplots(nrows, ncols, squeeze=False)
        for i, a in enumerate(ax.flat):
            if i >= n_img:
                a.axis("off")
                continue
            img = f[f["image"] == i]
            g = img.pivot(index="eps2", columns="eps1", values="loss")
            cs = a.contourf(g.columns, g.index, g.to_numpy(), levels=levels, cmap="viridis",
                            extend="neither")
            a.plot(0, 0, "r+", ms=8)
            a.set_title(f"image {i} (class {int(img['label'].iloc[0])})", fontsize=9)
            a.set_xlabel(r"$\varepsilon_1$ (random $r_1$)", fontsize=8)
            a.set_ylabel(ylabel if i % ncols == 0 else "", fontsize=8)
            a.tick_params(labelsize=7)
            a.grid(False)
    cax = bar.add_axes((0.15, 0.1, 0.25, 0.8))
    bar.colorbar(cs, cax=cax, label="cross-entropy (one scale for every model)")
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
