"""The figure kinds a preset may name (`figures: {name: {kind: linear, cells: [...]}}`): one entry
each, the single source of the schema's enum, the CLI's `--kind` choices, the per-model analysis
file a figure reads (the plan's figure inputs) and the function that draws it.

No matplotlib here (nor torch): the plan and `lsqueeze --help` read this module. `draw` names the
function as "lsqueeze.<module>:<function>" (lsqueeze.registries.base); it takes (frames, labels, title,
out, pixel_scales, eps), one per-model frame per cell in the figure's order.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a kind reads, per cell: the linear-model analysis, the loss landscape (at the figure's ε),
# or the activations.
READS = ("linear", "landscape", "activations")


@dataclass(frozen=True)
class FigureKind:
    name: str
    draw: str
    reads: str


FIGURE_KINDS: dict[str, FigureKind] = {k.name: k for k in (
    # Figs 1, 3, 4, 6, 8: logit gap, gradient gap, ε_L, cosine histograms
    FigureKind("linear", "lsqueeze.report.figures:figure_linear", "linear"),
    FigureKind("logits", "lsqueeze.report.figures:figure_logits", "linear"),  # Fig 2
    # Fig 7: l1 norms of both gradients, their cosine
    FigureKind("gradients", "lsqueeze.report.figures:figure_gradients", "linear"),
    # Figs 5 and 9: the loss along random directions, and along the adversarial one
    FigureKind("landscape_random", "lsqueeze.report.figures:figure_landscape_random", "landscape"),
    FigureKind("landscape_adversarial", "lsqueeze.report.figures:figure_landscape_adversarial",
               "landscape"),
    # Figs 10 and 11: the penultimate layer's and the logit layer's activations
    FigureKind("activations_penultimate", "lsqueeze.report.figures:figure_activations_penultimate",
               "activations"),
    FigureKind("activations_logits", "lsqueeze.report.figures:figure_activations_logits",
               "activations"),
)}


def figure_kind(name: str) -> FigureKind:
    if name not in FIGURE_KINDS:
        raise ValueError(f"figure kind {name!r}: unknown (known: {', '.join(sorted(FIGURE_KINDS))})")
    return FIGURE_KINDS[name]
