"""The paper's linear-model analysis (Section 3, Eq. 4): logit gap, gradient gap, ε_L, coherence.

For each image: z_y − z_ȳ (ȳ the strongest wrong class), ‖∇x z_y − ∇x z_ȳ‖₁, ε_L = their ratio,
and the cosine between ∇x z_y and ∇x z_ȳ. A first-order model predicts that an FGSM attack of size
ε fails exactly when ε < ε_L, so the share of such images is Eq. 4's predicted accuracy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lsqueeze.runtime.devices import eval_mode, pick_device
from lsqueeze.runtime.files import save_parquet
from lsqueeze.runtime.progress import Ticker
from lsqueeze.science.activations import activation_magnitudes
from lsqueeze.science.inputs import load_model, test_subset
from lsqueeze.science.landscape import loss_landscape


def _logits_and_grads(model, x, y):
    """Logits, ∇x z_y and ∇x z_ȳ for a batch: one backward each, no per-image loop.

    In eval mode the examples of a batch are independent, so the gradient of Σ_i z_{i,y_i} w.r.t.
    the batch is each image's own gradient.
    """
    x = x.detach().requires_grad_(True)
    z = model(x)
    wrong = z.detach().masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf"))
    ybar = wrong.argmax(1)
    zy, zbar = z.gather(1, y[:, None]).squeeze(1), z.gather(1, ybar[:, None]).squeeze(1)
    (g_y,) = torch.autograd.grad(zy.sum(), x, retain_graph=True)
    (g_bar,) = torch.autograd.grad(zbar.sum(), x)
    return z.detach(), ybar, g_y.flatten(1), g_bar.flatten(1)


def linear_model(model, x, y, batch_size: int = 256, label: str = "analyze") -> pd.DataFrame:
    """One row per image; ε_L in [0,1] pixel units. Logs a line per batch to stderr."""
    rows = []
    ticker = Ticker(label, -(-len(y) // batch_size), unit="batch", every=0)
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            z, ybar, g_y, g_bar = _logits_and_grads(model, xb, yb)
            gap = z.gather(1, yb[:, None]).squeeze(1) - z.gather(1, ybar[:, None]).squeeze(1)
            grad_gap = (g_y - g_bar).abs().sum(1)
            cos = torch.nn.functional.cosine_similarity(g_y, g_bar, dim=1)
            rows.append(pd.DataFrame({
                "label": yb.cpu().numpy(), "pred": z.argmax(1).cpu().numpy(),
                "strongest_wrong": ybar.cpu().numpy(),
                "logit_gap": gap.cpu().numpy(), "grad_gap": grad_gap.cpu().numpy(),
                "eps_L": (gap / grad_gap.clamp_min(1e-12)).cpu().numpy(),
                "cosine": cos.cpu().numpy(),
                "grad_l1_true": g_y.abs().sum(1).cpu().numpy(),
                "grad_l1_wrong": g_bar.abs().sum(1).cpu().numpy(),
                "logits": list(z.cpu().numpy().astype(np.float32)),
            }))
            ticker.tick(len(rows), batch_size)
    return pd.concat(rows, ignore_index=True)


def model_frame(spec, model_path, data_dir, out, compute, n=None, device="auto"):
    """Run `compute(model, x, y) -> DataFrame` on the first n test images; save it as Parquet."""
    device = pick_device(device)
    x, y = test_subset(data_dir, n, device)
    frame = compute(load_model(spec, model_path, tuple(x.shape[1:]), device), x, y)
    frame.insert(0, "cell_id", spec["id"])
    save_parquet(frame, out)
    return frame


def run_analyze(spec, model_path, data_dir, out, n=None, device="auto"):
    """Per-image linear-model quantities (linear_model) of the first n test images as Parquet."""

    def compute(model, x, y):
        return linear_model(model, x, y, label=f"analyze {spec['id']}")

    return model_frame(spec, model_path, data_dir, out, compute, n, device)


def run_landscape(spec, model_path, data_dir, out, eps_max: float, points: int = 21,
                  n_images: int = 8, device="auto"):
    """Loss landscapes around the first n_images test images (Figures 5, 9) as Parquet.

    eps_max is in the paper's units; the dataset's pixel scale (from the spec's recipe) converts.
    """

    def compute(model, x, y):
        return loss_landscape(model, x, y, eps_max, points,
                              pixel_scale=spec["recipe"]["pixel_scale"], seed=spec["cell"]["seed"])

    return model_frame(spec, model_path, data_dir, out, compute, n_images, device)


def run_activations(spec, model_path, data_dir, out, n=None, rel_tol: float = 0.0,
                    device="auto"):
    """Per-neuron activation magnitudes of the penultimate and logit layers (Figures 10, 11)."""

    def compute(model, x, y):
        return activation_magnitudes(model, x, rel_tol=rel_tol)

    return model_frame(spec, model_path, data_dir, out, compute, n, device)
