"""The regularizers a cell may set (`alpha`, `beta`, `sigma`): one entry each.

An entry is the single source of what the package knows about one: its cell value and default
(a preset may set it; the schema accepts a number >= 0), its part of the cell id, its words in a
model's name, its column in the paper's tables, whether adversarial training keeps it, and what
it does in the training step:

- `ce`: the cross-entropy's label smoothing (one entry only: α, Eq. 2);
- `loss`: a term added to the loss, value × term(logits) (β‖Z‖_F, logit squeezing);
- `input`: a change of the training batch (Gaussian noise of sd σ).

No torch here: the plan, validation and the tables read this module. `apply` names the function
as "lsqueeze.<module>:<function>" (lsqueeze.registries.base): for `loss`, term(logits) -> a scalar
summed over the batch, like the summed cross-entropy (lsqueeze.science.step.regularized_loss scales both
to the recipe's reduction); for `input`, transform(x, value, cell, recipe, generator) -> x.
A cell id shows every built-in value (`ls0.2-sq0-gn0.5`, the ids of every stored model) and a new
regularizer's only where it is set, so adding one leaves every existing id, and model, as it was.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Regularizer:
    key: str                  # the cell value (preset key)
    tag: str                  # its part of the cell id: <tag><value>
    words: str                # in a model's name ("logit squeezing + noise")
    role: str                 # ce | loss | input
    apply: str | None = None  # "lsqueeze.<module>:<function>" (not for ce)
    column: str | None = None  # the paper's table column (α, β, σ)
    with_adv: bool = False    # kept by an adversarially trained cell (the others are 0 there)
    in_id: bool = False       # always in the cell id (the built-ins), else only when set
    words_after: str | None = None  # its words after another regularizer's, if they differ
    default: float = 0.0


REGULARIZERS: dict[str, Regularizer] = {r.key: r for r in (
    Regularizer("alpha", "ls", "label smoothing", "ce", column="α", with_adv=True, in_id=True),
    Regularizer("beta", "sq", "logit squeezing", "loss", "lsqueeze.science.step:frobenius_norm",
                column="β", in_id=True),
    Regularizer("sigma", "gn", "Gaussian noise", "input", "lsqueeze.science.step:gaussian_noise_input",
                column="σ", in_id=True, words_after="noise"),
)}


def of_role(role: str) -> list[Regularizer]:
    return [r for r in REGULARIZERS.values() if r.role == role]


def id_part(cell: dict, num) -> str:
    """`ls0.2-sq0-gn0.5` (+ `-<tag><value>` of a new regularizer that is set)."""
    return "-".join(f"{r.tag}{num(cell.get(r.key, r.default))}" for r in REGULARIZERS.values()
                    if r.in_id or cell.get(r.key, r.default) != r.default)


def words(cell: dict) -> str:
    """The paper's words for a cell's regularizers, e.g. "logit squeezing + noise" ("" if none)."""
    parts = []
    for r in REGULARIZERS.values():
        if cell.get(r.key):
            parts.append(r.words_after if parts and r.words_after else r.words)
    return " + ".join(parts)
