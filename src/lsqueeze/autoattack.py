"""AutoAttack (Croce & Hein 2020; standard version, L∞) from torchattacks, as an optional column.

Beyond the paper: Mosbach et al. (2018) found logit-squeezed models collapse under stronger
attacks, i.e. the regularizers can mask gradients. AutoAttack's ensemble (APGD-CE, APGD-T, FAB-T,
Square — the last one gradient-free) is the standard check. It is slow (Square alone spends
5,000 queries per surviving image), so presets enable it explicitly (attack kind "autoattack").
"""

from __future__ import annotations

import torch

from lsqueeze.device import eval_mode
from lsqueeze.pgd import effective_eps, project

VERSIONS = ("standard", "plus", "rand")


def autoattack(model, x, y, eps, version: str = "standard", seed: int = 0):
    """Adversarial inputs from torchattacks.AutoAttack (L∞), within ε of x and inside [0,1].

    The ensemble's sub-attacks reseed the global RNG; forking it keeps the caller's random state
    (e.g. a training or evaluation stream) untouched. The model is attacked in eval mode and left
    in the mode it came in.
    """
    import torchattacks

    if version not in VERSIONS:
        raise ValueError(f"autoattack version: unknown {version!r} (known: {', '.join(VERSIONS)})")
    eps = effective_eps(eps)
    x, y = x.detach().clone(), y.detach().clone()
    with eval_mode(model):
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=version,
                                          n_classes=n_classes, seed=int(seed))
            x_adv = atk(x, y)
    # The library's sub-attacks stay inside the ball up to rounding; make it exact.
    return project(x_adv.to(x.dtype), x, eps)
