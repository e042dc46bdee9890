"""L∞ attacks as small functions with explicit parameters, in [0,1] pixel units.

Every function returns inputs within ε of `x` and inside [0,1], leaves the caller's tensors and the
model's train/eval mode as they were, and takes gradients w.r.t. the input only.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


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


LOSSES = {"xent": xent_loss, "cw": lambda z, y, confidence=50.0: cw_loss(z, y, confidence)}


@contextmanager
def eval_mode(model, enabled: bool = True):
    was_training = model.training
    if enabled:
        model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _input_grad(model, x, y, loss, confidence):
    x = x.detach().requires_grad_(True)
    logits = model(x)
    value = loss(logits, y) if loss is xent_loss else loss(logits, y, confidence)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return grad


def _project(x_adv, x, eps):
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, 0.0, 1.0).detach()


def fgsm(model, x, y, eps, loss="xent", confidence=50.0, in_eval=True):
    """One signed-gradient step of size ε from the clean image (no random start)."""
    with eval_mode(model, in_eval):
        grad = _input_grad(model, x, y, LOSSES[loss], confidence)
    return _project(x + eps * grad.sign(), x, eps)


def pgd(model, x, y, eps, step_size, steps, loss="xent", random_start=True, confidence=50.0,
        in_eval=True, generator=None):
    """Madry's PGD: optional uniform start in the ε-ball, then signed steps projected back."""
    fn = LOSSES[loss]
    with eval_mode(model, in_eval):
        x_adv = x.detach().clone()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_adv = torch.clamp(x_adv + (2 * noise - 1) * eps, 0.0, 1.0)
        for _ in range(int(steps)):
            grad = _input_grad(model, x_adv, y, fn, confidence)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv


@torch.no_grad()
def predict(model, x, batch_size=1000):
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def attack(model, x, y, spec: dict, generator=None):
    """Run one attack spec on a batch; return (worst-case x_adv, per-example robust mask).

    With restarts, an example is robust only if it survives every restart; x_adv keeps the first
    restart that fooled the model (the first restart's, for robust examples).
    """
    eps = float("inf") if spec.get("eps") is None else float(spec["eps"])
    if spec["attack"] == "fgsm":
        x_adv = fgsm(model, x, y, eps, spec.get("loss", "xent"), spec.get("confidence", 50.0))
        return x_adv, predict(model, x_adv) == y
    if spec["attack"] != "pgd":
        raise ValueError(f"attack: unknown attack {spec['attack']!r} (known: fgsm, pgd)")
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    best = None
    for _ in range(int(spec.get("restarts", 1))):
        x_adv = pgd(model, x, y, eps, float(spec["step_size"]), int(spec["steps"]),
                    spec.get("loss", "xent"), bool(spec.get("random_start", True)),
                    spec.get("confidence", 50.0), generator=generator)
        fooled = predict(model, x_adv) != y
        best = x_adv if best is None else torch.where((fooled & robust).view(-1, 1, 1, 1), x_adv, best)
        robust &= ~fooled
    return best, robust
