"""AutoAttack (Croce & Hein 2020), L∞, from the authors' reference implementation.

Beyond the paper: Mosbach et al. (2018) found logit-squeezed models collapse under stronger
attacks, i.e. the regularizers can mask gradients. AutoAttack's ensemble (APGD-CE, APGD-T, FAB-T,
Square — the last one gradient-free) is the standard check, and its number is only comparable
with the literature (RobustBench) when it is the reference's own code with the reference's own
settings. So this module runs the `pyautoattack` package (fra31/auto-attack, packaged) and
refuses a configuration that is not the reference's standard one: APGD-CE and APGD-T at 100
iterations, APGD-T and FAB-T over the 9 strongest wrong classes (every dataset, CIFAR-100
included), FAB-T at 100 iterations, Square with 5,000 queries; one restart each. (torchattacks'
port, used before, runs its members at 10 iterations by default: about ten times weaker.)

Each member attacks only the images that every earlier member failed on, as the reference does;
an image counts as robust only if the whole ensemble fails on it. Which member broke each image
is recorded, so a reader sees where the accuracy fell (the gradient-based APGD members, or only
the gradient-free Square: the signature of masking). Only the standard version runs: "plus"
and "rand" change members and restarts (and "rand" averages gradients over randomness these
models do not have), and a number from them is not comparable with RobustBench's.
"""

from __future__ import annotations

import torch

from lsqueeze.registries.attack_kinds import AUTOATTACK_MEMBERS
from lsqueeze.registries.attack_kinds import AUTOATTACK_VERSIONS as VERSIONS
from lsqueeze.runtime.devices import eval_mode
from lsqueeze.science.pgd import effective_eps, project

# The reference's version "standard" for L∞ (auto-attack's AutoAttack._set_version), member by
# member: what `configuration` must read off the adversary before it runs.
STANDARD = {
    "attacks": AUTOATTACK_MEMBERS,
    "apgd-ce": {"n_iter": 100, "n_restarts": 1},
    "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "fab-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8},
}

# Image-steps (one forward + backward of one image) per image if it survives every member:
# APGD-CE 100, APGD-T 9 × 100, FAB-T 9 × 100 (one gradient a step), Square 5,000 forwards at
# ⅓ of a step. An upper bound: a member runs only on the images the earlier ones left.
IMAGE_STEPS = (STANDARD["apgd-ce"]["n_iter"]
               + STANDARD["apgd-t"]["n_iter"] * STANDARD["apgd-t"]["n_target_classes"]
               + STANDARD["fab-t"]["n_iter"] * STANDARD["fab-t"]["n_target_classes"]
               + STANDARD["square"]["n_queries"] / 3)


def configuration(adversary) -> dict:
    """What a pyautoattack.AutoAttack will run, read off its members (the form of STANDARD)."""
    return {
        "attacks": tuple(adversary.attacks_to_run),
        "apgd-ce": {"n_iter": adversary.apgd.n_iter, "n_restarts": adversary.apgd.n_restarts},
        "apgd-t": {"n_iter": adversary.apgd_targeted.n_iter,
                   "n_restarts": adversary.apgd_targeted.n_restarts,
                   "n_target_classes": adversary.apgd_targeted.n_target_classes},
        "fab-t": {"n_iter": adversary.fab.n_iter, "n_restarts": adversary.fab.n_restarts,
                  "n_target_classes": adversary.fab.n_target_classes},
        "square": {"n_queries": adversary.square.n_queries,
                   "n_restarts": adversary.square.n_restarts, "p_init": adversary.square.p_init},
    }


def check_standard(config: dict, n_classes: int) -> None:
    """Raise unless `config` is the reference's standard L∞ configuration for n_classes."""
    wrong = [f"{member} {key}={got.get(key)!r} (standard: {want!r})"
             for member, settings in STANDARD.items() if member != "attacks"
             for key, want in settings.items()
             for got in [config.get(member, {})] if got.get(key) != want]
    if tuple(config.get("attacks", ())) != STANDARD["attacks"]:
        wrong.insert(0, f"attacks={list(config.get('attacks', ()))} "
                        f"(standard: {list(STANDARD['attacks'])})")
    if n_classes - 1 < STANDARD["apgd-t"]["n_target_classes"]:
        wrong.append(f"{n_classes} classes: the standard version needs at least 10")
    if wrong:
        raise ValueError("autoattack: not the reference's standard configuration: "
                         + "; ".join(wrong))


def adversary(model, eps: float, version: str = "standard", seed: int = 0, device="cpu"):
    """The reference AutoAttack for `model` (L∞, radius eps in [0,1] pixel units)."""
    from pyautoattack import AutoAttack

    if version not in VERSIONS:
        raise ValueError(f"autoattack version: {version!r} is not run (only {', '.join(VERSIONS)}, "
                         "whose configuration is checked against the reference's)")
    adv = AutoAttack(model, norm="Linf", eps=float(eps), version=version, seed=int(seed),
                     device=device)
    adv.verbose = False  # its per-member lines go to a logger nobody reads; the job logs per batch
    return adv


def autoattack(model, x, y, eps, version: str = "standard", seed: int = 0,
               breakdown: bool = False):
    """Adversarial inputs from the reference AutoAttack (L∞), within ε of x and inside [0,1].

    The reference's ensemble is run member by member: each call of its
    `run_standard_evaluation` runs one member (same settings, same seed, same batch) on exactly
    the images every earlier member failed on, as its own loop does, so the result is the
    reference's, and the job also learns which member broke each image (the reference logs that
    only as text). With breakdown=True returns (x_adv, first_broken_by, members): members is the
    ensemble in order, first_broken_by[i] the 1-based position of the member that first fooled
    image i, 0 if it was misclassified before any attack, -1 if it survived every member.

    The members reseed the global RNG; forking it keeps the caller's random state (e.g. an
    evaluation stream) untouched. The model is attacked in eval mode and left in the mode it came
    in. The configuration is checked against STANDARD before any image is attacked.
    """
    eps = effective_eps(eps)  # unbounded (None) is ε = 1: the whole [0,1] box
    x, y = x.detach().clone(), y.detach().clone()
    with eval_mode(model):
        with torch.no_grad():
            pred = model(x).argmax(1)
        adv = adversary(model, eps, version, seed, x.device)
        check_standard(configuration(adv), model(x[:1]).shape[1])
        members = tuple(adv.attacks_to_run)
        first = torch.where(pred == y, -1, 0).to(torch.int8).cpu()
        x_adv = x.clone()
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for position, member in enumerate(members, start=1):
                left = (first == -1).nonzero().flatten()
                if not len(left):
                    break  # the reference's loop stops here too
                adv.attacks_to_run = [member]
                idx = left.to(x.device)
                # batch_size=len(x): one batch of the images left, as the reference's own loop
                # makes with the caller's batch
                xa, ya = adv.run_standard_evaluation(x[idx], y[idx], batch_size=len(x))
                fooled = (ya != y[idx]).cpu()
                first[left[fooled]] = position
                x_adv[idx[fooled.to(x.device)]] = xa[fooled.to(x.device)].to(x.dtype)
            adv.attacks_to_run = list(members)
    # The members stay inside the ball up to rounding; make it exact.
    x_adv = project(x_adv, x, eps)
    return (x_adv, first, members) if breakdown else x_adv
