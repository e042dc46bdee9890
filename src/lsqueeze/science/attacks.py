"""Evaluation attacks: FGSM, PGD with nested random restarts, AutoAttack's runner, and the
dispatcher that runs an attack record by its kind (lsqueeze.registries.attack_kinds); in [0,1]
pixel units.

Only evaluation and black-box crafting use this module, so editing it re-evaluates without
retraining; the PGD step that training shares lives in lsqueeze/science/pgd.py. Every attack returns inputs
within ε of `x` and inside [0,1], leaves the caller's tensors and the model's train/eval mode as
they were, and takes gradients w.r.t. the input only.
"""

from __future__ import annotations

import numpy as np
import torch

from lsqueeze.registries.attack_kinds import kind_of
from lsqueeze.registries.base import load_function
from lsqueeze.runtime.devices import eval_mode
from lsqueeze.science.pgd import check_loss, effective_eps, frozen, input_grad, pgd, project


def fgsm(model, x, y, eps, loss="xent", confidence=50.0, in_eval=True, reduction="sum"):
    """One signed-gradient step of size ε from the clean image (no random start)."""
    check_loss(loss)
    eps = effective_eps(eps)
    with eval_mode(model, in_eval), frozen(model):
        grad = input_grad(model, x, y, loss, confidence, reduction)
    return project(x.detach() + eps * grad.sign(), x.detach(), eps)


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


def run_fgsm(model, x, y, spec, seed=0, index=None, batched_restarts=False):
    x_adv = fgsm(model, x, y, spec.get("eps"), spec.get("loss", "xent"),
                 float(spec.get("confidence", 50.0)))
    return x_adv, predict(model, x_adv) == y


def run_pgd(model, x, y, spec, seed=0, index=None, batched_restarts=False):
    return _pgd_restarts(model, x, y, spec, seed, index, batched_restarts)


def run_autoattack(model, x, y, spec, seed=0, index=None, batched_restarts=False):
    from lsqueeze.science.autoattack import autoattack

    # One seed per batch, fixed by (seed, the batch's first example): batches differ, reruns agree.
    first = 0 if index is None or not len(index) else int(torch.as_tensor(index)[0])
    batch_seed = int(np.random.SeedSequence([int(seed), first]).generate_state(1)[0] >> 1)
    x_adv, first, members = autoattack(model, x, y, spec.get("eps"),
                                       spec.get("version", "standard"), batch_seed, breakdown=True)
    return x_adv, predict(model, x_adv) == y, {"members": members, "first_broken_by": first}


def attack(model, x, y, spec: dict, seed: int = 0, index=None, batched_restarts: bool = False,
           breakdown: bool = False):
    """Run one attack spec on a batch; return (worst-case x_adv, per-example robust mask), and
    with breakdown=True a third item: what the runner says of each example beyond robust or not
    (AutoAttack: {members, first_broken_by}), or None for a kind that says nothing more.

    spec: {attack: a kind of lsqueeze.registries.attack_kinds, loss, eps (None = unbounded), steps,
    step_size, random_start, restarts, confidence, the kind's own settings} in [0,1] pixel units.
    seed and index (each example's position in the evaluated set; default 0..B-1) fix random
    starts per example.
    """
    run = load_function(kind_of(spec).run)
    out = run(model, x, y, spec, seed=seed, index=index, batched_restarts=batched_restarts)
    x_adv, robust = out[:2]  # a runner returns (x_adv, robust) or (x_adv, robust, breakdown)
    return (x_adv, robust, out[2] if len(out) > 2 else None) if breakdown else (x_adv, robust)
