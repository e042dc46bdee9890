"""The L∞ PGD step as training and evaluation both run it, in [0,1] pixel units.

Training's adversary (Madry adversarial training) and the evaluation attacks share this code, so an
edit here reruns both; the evaluation-only attacks (FGSM, restarts, AutoAttack, the dispatcher)
live in lsqueeze/science/attacks.py, whose edits retrain nothing. Every function returns inputs within ε
of `x` and inside [0,1], leaves the caller's tensors and the model's train/eval mode as they were,
and takes gradients w.r.t. the input only.

PGD follows Madry et al. and performs the same floating-point operations, in the same order, as
torchattacks.PGD (uniform start, signed step, clamp δ to [-ε, ε], clamp x+δ to [0,1]), so the two
agree to the last bit on CPU; tests/test_attacks.py checks that.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from lsqueeze.runtime.devices import eval_mode


def xent_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct logit minus the best wrong logit.

    The wrong classes are masked with -inf rather than multiplied by zero: squeezed models have
    all-negative logits, and a zeroed correct entry would then win the max and hide the true margin.
    """
    correct = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return correct - wrong


def cw_loss(logits, y, confidence: float = 50.0):
    """Madry's CW loss, maximised by the attacker: -relu(margin + confidence)."""
    return -F.relu(cw_margin(logits, y) + confidence)


LOSSES = {"xent": xent_loss, "cw": cw_loss}


def effective_eps(eps) -> float:
    """ε as a finite number: None/inf mean unbounded (Table 9).

    Images live in [0,1], so an L∞ ball of radius ≥ 1 around any image contains the whole box:
    capping ε at 1 changes no projection, and it keeps ε·sign(0) and the random start finite
    (∞·0 would be NaN).
    """
    eps = float("inf") if eps is None else float(eps)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return min(eps, 1.0)


@contextmanager
def frozen(model):
    """Weights need no gradient during an attack: skip their bookkeeping, restore flags after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def input_grad(model, x, y, loss: str, confidence, reduction="sum"):
    x = x.detach().requires_grad_(True)
    logits = model(x).float()  # under autocast (the training adversary) the margin stays fp32
    value = xent_loss(logits, y) if loss == "xent" else cw_loss(logits, y, confidence)
    # Summed per-example losses (Madry's reduce_sum): each example's gradient is its own and does
    # not depend on the batch size. "mean" (torchattacks) rescales by 1/N, which the sign step
    # ignores except where float rounding flips the sign of a near-zero component.
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: unknown {reduction!r} (known: sum, mean)")
    total = value.sum() if reduction == "sum" else value.mean()
    (grad,) = torch.autograd.grad(total, x)
    return grad


def project(x_adv, x, eps):
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, 0.0, 1.0).detach()


def check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r} (known: {', '.join(LOSSES)})")


def pgd(model, x, y, eps, step_size, steps, loss="xent", random_start=True, confidence=50.0,
        in_eval=True, generator=None, reduction="sum", unit_start=None):
    """Madry's PGD: optional uniform start in the ε-ball, then signed steps projected back.

    reduction: how per-example losses combine before the input gradient ("sum", Madry's and the
    default; "mean" reproduces torchattacks.PGD bit for bit).
    unit_start: the random start as given draws in [-1, 1] (scaled by ε here) instead of a draw
    from `generator`; the evaluation passes starts fixed per example and restart (random_starts).
    """
    check_loss(loss)
    eps = effective_eps(eps)
    x = x.detach()
    with eval_mode(model, in_eval), frozen(model):
        x_adv = x.clone()
        if random_start:
            if unit_start is None:
                noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
            else:
                noise = eps * unit_start.to(device=x.device, dtype=x.dtype)
            x_adv = torch.clamp(x_adv + noise, 0.0, 1.0)
        for _ in range(int(steps)):
            grad = input_grad(model, x_adv, y, loss, confidence, reduction)
            x_adv = project(x_adv + step_size * grad.sign(), x, eps)
    return x_adv
