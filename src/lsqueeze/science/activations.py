"""Activation magnitudes per neuron (Figures 10 and 11 of the paper, Appendix E).

For every neuron of the penultimate layer (model.features(x), after its ReLU) and of the logit
layer, the sum over the test images of |activation|. A neuron whose summed magnitude is (close to)
zero never fires on the test set: the paper counts these "inactive" neurons (about 400 of 1024
after adversarial training, label smoothing + noise or logit squeezing + noise on MNIST).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lsqueeze.runtime.devices import eval_mode

LAYERS = ("penultimate", "logits")


def inactive(sum_abs: np.ndarray, rel_tol: float = 0.0) -> np.ndarray:
    """Neurons whose summed |activation| is at most rel_tol × the layer's largest one.

    rel_tol = 0 counts only neurons that are exactly zero on every image (dead ReLUs); a small
    positive value also counts neurons that are negligible next to the layer's busiest one.
    """
    sum_abs = np.asarray(sum_abs, dtype=np.float64)
    if len(sum_abs) == 0:
        return np.zeros(0, dtype=bool)
    return sum_abs <= rel_tol * sum_abs.max()


@torch.no_grad()
def activation_magnitudes(model, x, batch_size: int = 500, rel_tol: float = 0.0) -> pd.DataFrame:
    """One row per (layer, neuron): summed and mean |activation|, share of images where it is
    non-zero, and whether it is inactive. The logits are model's head applied to the features,
    computed as model(x) so that any architecture with a `features` method works."""
    sums = {layer: None for layer in LAYERS}
    nonzero = {layer: None for layer in LAYERS}
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            acts = {"penultimate": model.features(xb), "logits": model(xb)}
            for layer, a in acts.items():
                a = a.flatten(1).double()
                s, nz = a.abs().sum(0), (a != 0).sum(0)
                sums[layer] = s if sums[layer] is None else sums[layer] + s
                nonzero[layer] = nz if nonzero[layer] is None else nonzero[layer] + nz
    rows = []
    for layer in LAYERS:
        s = sums[layer].cpu().numpy()
        rows.append(pd.DataFrame({
            "layer": layer, "neuron": np.arange(len(s)), "sum_abs": s, "mean_abs": s / len(x),
            "frac_nonzero": nonzero[layer].cpu().numpy() / len(x),
            "inactive": inactive(s, rel_tol)}))
    frame = pd.concat(rows, ignore_index=True)
    frame["n_images"] = len(x)
    frame["rel_tol"] = rel_tol
    return frame
