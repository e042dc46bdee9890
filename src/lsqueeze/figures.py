"""Figures (matplotlib PNG), one function each, one style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lsqueeze.io import atomic_path  # noqa: E402


def save(fig, out) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def summary_figure(measurements, out) -> None:
    """Accuracy of every model under every evaluation (clean, white-box, black-box)."""
    df = pd.read_parquet(measurements)
    df = df[df["metric"].isin(["test_accuracy", "accuracy"])].copy()
    df["evaluation"] = df.apply(
        lambda r: "clean" if r["metric"] == "test_accuracy" else f"{r['threat']}: {r['attack_id']}", axis=1)
    pivot = df.pivot_table(index="cell_id", columns="evaluation", values="value", aggfunc="first") * 100
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pivot)), 4.5))
    pivot.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("model (cell id)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy per model and attack")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    save(fig, out)
