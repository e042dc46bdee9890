"""L∞ attacks as small functions with explicit parameters, in [0,1] pixel units.

Every function returns inputs within ε of `x` and inside [0,1], leaves the caller's tensors and the
model's train/eval mode as they were, and takes gradients w.r.t. the input only.

PGD follows Madry et al. and performs the same floating-point operations, in the same order, as
torchattacks.PGD (uniform start, signed step, clamp δ to [-ε, ε], clamp x+δ to [0,1]), so the two
agree to the last bit on CPU; tests/test_attacks.py checks that.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
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
def eval_mode(model, enabled: bool = True):
    was_training = model.training
    if enabled:
        model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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


def _input_grad(model, x, y, loss: str, confidence, reduction="sum"):
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


def _project(x_adv, x, eps):
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, 0.0, 1.0).detach()


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r} (known: {', '.join(LOSSES)})")


def fgsm(model, x, y, eps, loss="xent", confidence=50.0, in_eval=True, reduction="sum"):
    """One signed-gradient step of size ε from the clean image (no random start)."""
    _check_loss(loss)
    eps = effective_eps(eps)
    with eval_mode(model, in_eval), frozen(model):
        grad = _input_grad(model, x, y, loss, confidence, reduction)
    return _project(x.detach() + eps * grad.sign(), x.detach(), eps)


def pgd(model, x, y, eps, step_size, steps, loss="xent", random_start=True, confidence=50.0,
        in_eval=True, generator=None, reduction="sum", unit_start=None):
    """Madry's PGD: optional uniform start in the ε-ball, then signed steps projected back.

    reduction: how per-example losses combine before the input gradient ("sum", Madry's and the
    default; "mean" reproduces torchattacks.PGD bit for bit).
    unit_start: the random start as given draws in [-1, 1] (scaled by ε here) instead of a draw
    from `generator`; the evaluation passes starts fixed per example and restart (random_starts).
    """
    _check_loss(loss)
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
            grad = _input_grad(model, x_adv, y, loss, confidence, reduction)
            x_adv = _project(x_adv + step_size * grad.sign(), x, eps)
    return x_adv


def random_starts(shape, seed: int, restart: int, index) -> torch.Tensor:
    """Uniform draws in [-1, 1), one per example: example `index[b]`'s draw depends only on
    (seed, restart, index[b]), never on the batch it sits in or on how many restarts run.

    So restart r of example i starts at the same point whether the attack runs 1 or 9 restarts
    and whatever the batch size: an example robust to R+1 restarts is robust to the first R, and
    accuracy cannot rise with R. Each draw is its own numpy generator seeded from the three
    numbers (a SeedSequence entropy pool), drawn on the CPU so CPU and GPU share the starts.
    """
    size = int(np.prod(shape[1:]))
    draws = [np.random.default_rng([int(seed), int(restart), int(i)]).random(size, dtype=np.float32)
             for i in torch.as_tensor(index).tolist()]
    unit = torch.from_numpy(np.stack(draws)).view(len(draws), *shape[1:])
    return unit * 2 - 1


@torch.no_grad()
def predict(model, x, batch_size=1000):
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _pgd_args(spec):
    return dict(eps=spec.get("eps"), step_size=float(spec["step_size"]), steps=int(spec["steps"]),
                loss=spec.get("loss", "xent"), random_start=bool(spec.get("random_start", True)),
                confidence=float(spec.get("confidence", 50.0)))


def restarts_of(spec: dict) -> int:
    """Restarts that can differ: without a random start every restart is the same attack."""
    if spec["attack"] != "pgd" or not spec.get("random_start", True):
        return 1
    return max(1, int(spec.get("restarts", 1)))


def _pgd_restarts(model, x, y, spec, seed: int, index, batched: bool):
    """Per-example worst case over restarts: robust only if no restart fools the example.

    Restart r of example index[i] starts from random_starts(seed, r, index[i]) in both paths.
    Batched: the R restarts run as one batch of R·B images.
    """
    args, n_restarts = _pgd_args(spec), restarts_of(spec)
    index = torch.arange(len(y)) if index is None else torch.as_tensor(index)
    if len(index) != len(y):
        raise ValueError(f"index: {len(index)} example indices for a batch of {len(y)}")
    starts = [random_starts(x.shape, seed, r, index) if args["random_start"] else None
              for r in range(n_restarts)]
    if batched and n_restarts > 1:
        reps = x.detach().repeat(n_restarts, *([1] * (x.dim() - 1)))
        start = torch.cat(starts) if args["random_start"] else None
        adv = pgd(model, reps, y.repeat(n_restarts), unit_start=start, **args)
        advs = adv.view(n_restarts, *x.shape)
        fooled = (predict(model, adv) != y.repeat(n_restarts)).view(n_restarts, len(y))
    else:
        advs, fooled = [], []
        for start in starts:
            adv = pgd(model, x, y, unit_start=start, **args)
            advs.append(adv)
            fooled.append(predict(model, adv) != y)
        advs, fooled = torch.stack(advs), torch.stack(fooled)
    robust = ~fooled.any(0)
    # Keep the first restart that fooled each example (restart 0 for robust examples).
    first = torch.where(robust, 0, fooled.int().argmax(0))
    return advs[first, torch.arange(len(y), device=x.device)], robust


def attack(model, x, y, spec: dict, seed: int = 0, index=None, batched_restarts: bool = False):
    """Run one attack spec on a batch; return (worst-case x_adv, per-example robust mask).

    spec: {attack: fgsm|pgd|autoattack, loss, eps (None = unbounded), steps, step_size,
    random_start, restarts, confidence} in [0,1] pixel units. seed and index (each example's
    position in the evaluated set; default 0..B-1) fix PGD's random starts per example.
    """
    kind = spec["attack"]
    if kind == "fgsm":
        x_adv = fgsm(model, x, y, spec.get("eps"), spec.get("loss", "xent"),
                     float(spec.get("confidence", 50.0)))
        return x_adv, predict(model, x_adv) == y
    if kind == "pgd":
        return _pgd_restarts(model, x, y, spec, seed, index, batched_restarts)
    if kind == "autoattack":
        from lsqueeze.autoattack import autoattack

        # One seed per batch, fixed by (seed, the batch's first example): batches differ, reruns agree.
        first = 0 if index is None or not len(index) else int(torch.as_tensor(index)[0])
        batch_seed = int(np.random.SeedSequence([int(seed), first]).generate_state(1)[0] >> 1)
        x_adv = autoattack(model, x, y, spec.get("eps"), spec.get("version", "standard"), batch_seed)
        return x_adv, predict(model, x_adv) == y
    raise ValueError(f"attack: unknown attack {kind!r} (known: fgsm, pgd, autoattack)")
