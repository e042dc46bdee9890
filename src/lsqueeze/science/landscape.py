"""Loss landscapes around test images (Figures 5 and 9 of the paper).

For each of the first few test images x_i the cross-entropy is evaluated on a grid
x = x_i + ε1·d1 + ε2·d2, −ε_max ≤ ε1, ε2 ≤ ε_max, in two planes:
  * "random":      d1, d2 ~ Rademacher(0.5) (entries ±1), Figure 5;
  * "adversarial": d1 ~ Rademacher(0.5), d2 = sign(∇x xent(x_i)), Figure 9.
As in the paper's formula the points are not clipped to [0,1]: the landscape is a property of the
model's function around x_i, and clipping would bend the plane near saturated pixels.
ε is given in the paper's units and divided by the dataset's pixel scale (CIFAR: 0–255).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lsqueeze.runtime.devices import eval_mode

PLANES = ("random", "adversarial")


def rademacher(shape, generator) -> torch.Tensor:
    """Entries ±1 with probability 1/2 each (drawn on the CPU so every device sees the same)."""
    return torch.randint(0, 2, shape, generator=generator, dtype=torch.int64).float() * 2 - 1


def sign_gradient(model, x, y) -> torch.Tensor:
    """sign(∇x xent) per image; in eval mode each image's gradient is its own (batched)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return g.sign()


def grid(eps_max: float, points: int) -> np.ndarray:
    """Symmetric grid that contains 0, so the clean image is one of its points."""
    if points < 3 or points % 2 == 0:
        raise ValueError(f"landscape points must be odd and >= 3 (so that ε=0 is on the grid), "
                         f"got {points}")
    return np.linspace(-eps_max, eps_max, points)


@torch.no_grad()
def _plane_losses(model, x0, y0, d1, d2, eps_px, batch_size):
    """Cross-entropy at x0 + e1·d1 + e2·d2 for every (e1, e2) of the grid, as a P×P array."""
    e1, e2 = torch.meshgrid(eps_px, eps_px, indexing="ij")
    e1, e2 = e1.reshape(-1), e2.reshape(-1)
    out = []
    for i in range(0, len(e1), batch_size):
        a, b = e1[i:i + batch_size], e2[i:i + batch_size]
        shape = (-1,) + (1,) * x0.dim()
        xs = x0[None] + a.view(shape) * d1[None] + b.view(shape) * d2[None]
        z = model(xs)
        out.append(F.cross_entropy(z, y0.expand(len(xs)), reduction="none"))
    return torch.cat(out).view(len(eps_px), len(eps_px))


def loss_landscape(model, x, y, eps_max: float, points: int = 21, pixel_scale: float = 1.0,
                   seed: int = 0, batch_size: int = 1024) -> pd.DataFrame:
    """One row per (image, plane, ε1, ε2) with the cross-entropy there; ε in the paper's units.

    `batch_size` grid points go through the model at once, so a 21×21 plane of a small model is
    one forward pass.
    """
    eps = grid(eps_max, points)
    eps_px = torch.tensor(eps / pixel_scale, dtype=x.dtype, device=x.device)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with eval_mode(model):
        adv = sign_gradient(model, x, y)
        for i in range(len(y)):
            r1 = rademacher(x[i].shape, gen).to(x.device)
            r2 = rademacher(x[i].shape, gen).to(x.device)
            for plane, d2 in (("random", r2), ("adversarial", adv[i])):
                loss = _plane_losses(model, x[i], y[i:i + 1], r1, d2, eps_px, batch_size)
                e1, e2 = np.meshgrid(eps, eps, indexing="ij")
                rows.append(pd.DataFrame({
                    "image": i, "label": int(y[i]), "plane": plane,
                    "eps1": e1.ravel(), "eps2": e2.ravel(),
                    "loss": loss.cpu().numpy().ravel().astype(np.float64)}))
    frame = pd.concat(rows, ignore_index=True)
    frame["pixel_scale"] = float(pixel_scale)
    return frame
