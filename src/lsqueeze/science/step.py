"""What one training step computes (`step_loss`): the batch the model sees (augmentation,
Madry's adversary, the input regularizers: Gaussian noise) and the regularized loss (label
smoothing α, the loss regularizers: logit squeezing β), each regularizer as
lsqueeze.registries.regularizers lists it.

The plain training loop (lsqueeze/jobs/train.py) and its CUDA-graph replay
(lsqueeze/science/cuda_graph.py) both call `step_loss`, so they compute the same step.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from lsqueeze.registries.base import load_function
from lsqueeze.registries.regularizers import of_role
from lsqueeze.science.pgd import pgd
from lsqueeze.science.splits import to_float


def frobenius_norm(z):
    """‖Z‖_F of the mini-batch logit matrix (not squared): logit squeezing's term."""
    return torch.linalg.matrix_norm(z, ord="fro")


def regularized_loss(logits, y, cell: dict, reduction: str = "sum"):
    """(summed CE against smoothed labels (α) + β·‖Z‖_F + each other loss regularizer's value ×
    term) / R, Z the mini-batch logit matrix (Frobenius norm, not squared); R = 1 for `reduction`
    "sum", the batch size N for "mean".

    `reduction` follows Madry's code (summed CE for MNIST, mean CE for CIFAR) so that his learning
    rates apply; it must not change what β means. β‖Z‖_F beside summed CE is the form the paper's β
    fit: Z = 0 (chance accuracy) minimises CE + β‖Z‖_F once β ≥ ‖∇_Z CE(0)‖_F, √(0.9·N) for summed
    CE but √(0.9/N) for mean CE, so mean CE + β‖Z‖_F collapses every CIFAR squeeze cell. Hence
    mean CE + (β/N)‖Z‖_F: the minimiser of summed CE + β‖Z‖_F at mean-CE step scale.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"recipe ce_reduction: unknown {reduction!r} (known: sum, mean)")
    z = logits.float()
    (smoothing,) = of_role("ce")
    total = F.cross_entropy(z, y, label_smoothing=cell.get(smoothing.key, smoothing.default),
                            reduction="sum")
    for r in of_role("loss"):
        total = total + cell.get(r.key, r.default) * load_function(r.apply)(z)
    return total / len(y) if reduction == "mean" else total


def smoothed_targets(y, num_classes: int, alpha: float):
    """y_warm = y_hot − α (y_hot − 1/N_c), the paper's Eq. for label smoothing."""
    hot = F.one_hot(y, num_classes).float()
    return hot - alpha * (hot - 1.0 / num_classes)


def gaussian_noise(x, sigma: float, pixel_scale: float, clip: bool, generator):
    """x + N(0, σ²) with σ in the paper's units (MNIST [0,1]; CIFAR 0–255)."""
    if sigma <= 0:
        return x
    noisy = x + torch.randn(x.shape, generator=generator, device=x.device) * (sigma / pixel_scale)
    return noisy.clamp(0, 1) if clip else noisy


def gaussian_noise_input(x, sigma: float, cell: dict, recipe: dict, generator):
    """The `sigma` regularizer: Gaussian noise, clipped to [0,1] where the cell says `clip_noise`."""
    return gaussian_noise(x, sigma, recipe["pixel_scale"], cell.get("clip_noise", False), generator)


def crop_flip(x, generator, pad: int = 2):
    """Random 32×32 crop of the zero-padded image and a horizontal flip, batched on the device.

    Madry's cifar10_challenge (cifar10_input.py), which the authors' code reuses, pads to 36×36
    (`resize_image_with_crop_or_pad(img, 32 + 4, 32 + 4)`: 2 pixels a side), not the 4 a side of
    the WRN paper's recipe."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                 torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@contextmanager
def frozen_norm_stats(model):
    """Batch-norm layers keep normalising with batch statistics, but their running averages are
    put back afterwards: the attack's forward passes must not count as training batches."""
    saved = {k: v.clone() for k, v in model.state_dict().items()
             if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    try:
        yield model
    finally:
        if saved:
            model.load_state_dict(saved, strict=False)


def training_batch(x_u8, y, cell, recipe, model, adv, generator):
    """What the model trains on: augmented, then adversarial (Madry) or Gaussian-noised images.

    Madry's code crafts the training adversary on the training graph, i.e. with batch-norm batch
    statistics, and (its batch norm has no update collection) also updates the running averages on
    every PGD pass; `adv_in_eval: false` (the default) crafts with batch statistics too but
    restores the running averages after the attack (our choice: FIDELITY.md). `adv_in_eval: true`
    crafts in eval mode (running statistics).
    """
    x = to_float(x_u8)
    if recipe.get("augment") == "crop_flip":
        x = crop_flip(x, generator)
    if adv is not None:
        in_eval = recipe.get("adv_in_eval", False)
        with (nullcontext() if in_eval else frozen_norm_stats(model)):
            x = pgd(model, x, y, adv["eps"], adv["step_size"], adv["steps"], adv["loss"],
                    adv["random_start"], in_eval=in_eval, generator=generator)
    for r in of_role("input"):
        x = load_function(r.apply)(x, cell.get(r.key, r.default), cell, recipe, generator)
    return x


def step_loss(model, x_u8, y, cell, recipe, adv, generator, autocast):
    """One training step up to its loss: the training batch and the forward pass under the run's
    autocast (the training adversary too: most of an adversarial-training step), NHWC as every
    forward of a run; the loss in float32."""
    with autocast:
        x = training_batch(x_u8, y, cell, recipe, model, adv, generator)
        logits = model(x.contiguous(memory_format=torch.channels_last))
    return regularized_loss(logits, y, cell, recipe["ce_reduction"])
