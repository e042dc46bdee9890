"""Linear-model analysis, loss landscapes and activation magnitudes against closed-form values."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsqueeze.jobs.analysis import linear_model
from lsqueeze.report.figures import cumulative_curve
from lsqueeze.report.measurements import predicted_accuracy
from lsqueeze.science.activations import activation_magnitudes, inactive
from lsqueeze.science.landscape import grid, loss_landscape


class Linear(nn.Module):
    """z = W·vec(x) + b: ∇x z_k = W_k exactly, so every Eq. 4 quantity has a closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(w)
            self.fc.bias.copy_(b)

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    model = Linear(w, b).double()
    # the float32 layer rounded w and b: the closed form uses exactly the model's parameters
    w, b = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    x = torch.rand(40, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (40,), generator=g)
    return model, w, b, x, y


def test_linear_model_matches_closed_form(linear):
    model, w, b, x, y = linear
    frame = linear_model(model, x, y, batch_size=16)  # several batches
    z = x.flatten(1) @ w.T + b
    for i in range(len(y)):
        wrong = [k for k in range(5) if k != y[i]]
        ybar = max(wrong, key=lambda k: z[i, k])
        gap = float(z[i, y[i]] - z[i, ybar])
        dw = w[y[i]] - w[ybar]
        grad_gap = float(dw.abs().sum())
        cos = float(w[y[i]] @ w[ybar] / (w[y[i]].norm() * w[ybar].norm()))
        row = frame.iloc[i]
        assert row["strongest_wrong"] == ybar
        assert row["logit_gap"] == pytest.approx(gap, rel=1e-9)
        assert row["grad_gap"] == pytest.approx(grad_gap, rel=1e-9)
        assert row["eps_L"] == pytest.approx(gap / grad_gap, rel=1e-9)
        assert row["cosine"] == pytest.approx(cos, rel=1e-9)
        assert row["grad_l1_true"] == pytest.approx(float(w[y[i]].abs().sum()), rel=1e-9)
        assert row["grad_l1_wrong"] == pytest.approx(float(w[ybar].abs().sum()), rel=1e-9)
        np.testing.assert_allclose(row["logits"], z[i].numpy(), rtol=1e-6)
    # misclassified images have a negative gap and hence a negative ε_L
    assert ((frame["eps_L"] < 0) == (frame["pred"] != frame["label"])).all()


def test_eps_L_is_the_exact_fgsm_threshold_for_a_linear_model(linear):
    """For a linear model FGSM-on-the-margin at ε moves the gap by exactly ε·gradient gap."""
    model, w, b, x, y = linear
    frame = linear_model(model, x, y)
    ok = frame["eps_L"] > 0
    ybar = torch.tensor(frame["strongest_wrong"].to_numpy())
    eps = torch.tensor(frame["eps_L"].to_numpy())[:, None]
    step = -(w[y] - w[ybar]).sign()  # descends z_y − z_ȳ fastest in ℓ∞
    for scale, flips in ((0.99, False), (1.01, True)):
        z = (x.flatten(1) + scale * eps * step) @ w.T + b
        gap = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, ybar[:, None]).squeeze(1)
        assert ((gap[torch.tensor(ok.to_numpy())] < 0) == flips).all()


def test_predicted_accuracy_monotone_in_eps(linear):
    model, _, _, x, y = linear
    frame = linear_model(model, x, y)
    eps = np.linspace(-1, frame["eps_L"].max() + 1, 60)
    acc = [predicted_accuracy(frame, e) for e in eps]
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    assert acc[0] == 1.0 and acc[-1] == 0.0
    assert predicted_accuracy(frame, 0.0) == pytest.approx((frame["pred"] == frame["label"]).mean())


def test_landscape_at_origin_is_the_clean_loss(linear):
    model, _, _, x, y = linear
    frame = loss_landscape(model, x[:4], y[:4], eps_max=0.5, points=5)
    clean = F.cross_entropy(model(x[:4]), y[:4], reduction="none").detach().numpy()
    assert len(frame) == 4 * 2 * 5 * 5
    for plane in ("random", "adversarial"):
        at0 = frame[(frame.plane == plane) & (frame.eps1 == 0) & (frame.eps2 == 0)]
        np.testing.assert_allclose(at0.sort_values("image")["loss"], clean, rtol=1e-9)


def test_landscape_directions_and_units(linear):
    """The adversarial axis is sign(∇x xent): for a linear model a step along it raises the loss
    more than any random sign direction; ε is divided by the pixel scale."""
    model, w, b, x, y = linear
    frame = loss_landscape(model, x[:3], y[:3], eps_max=2.0, points=5, pixel_scale=255.0)
    assert frame.eps2.max() == 2.0 and (frame.pixel_scale == 255.0).all()
    x0, y0 = x[:1], y[:1]
    xg = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y0), xg)
    expect = F.cross_entropy(model(x0 + (2.0 / 255) * g.sign()), y0).item()
    got = frame[(frame.image == 0) & (frame.plane == "adversarial") & (frame.eps1 == 0)
                & (frame.eps2 == 2.0)]["loss"].item()
    assert got == pytest.approx(expect, rel=1e-9)
    rand = frame[(frame.image == 0) & (frame.plane == "random") & (frame.eps1 == 0)
                 & (frame.eps2 == 2.0)]["loss"].item()
    assert got > rand


def test_landscape_grid_must_contain_zero():
    assert 0.0 in grid(10, 21)
    with pytest.raises(ValueError, match="odd"):
        grid(10, 20)


class Relu(nn.Module):
    """features = ReLU(A·vec(x) + c) with neuron 1 dead (zero weights, negative bias)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 1.0, 1.0, 0]]))
            self.hidden.bias.copy_(torch.tensor([0.0, -1.0, 0.5]))

    def features(self, x):
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


def test_all_zero_activation_column_is_inactive():
    model = Relu()
    x = torch.rand(30, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    frame = activation_magnitudes(model, x, batch_size=7)
    pen = frame[frame.layer == "penultimate"].set_index("neuron")
    assert list(pen["inactive"]) == [False, True, False]
    assert pen.loc[1, "sum_abs"] == 0 and pen.loc[1, "frac_nonzero"] == 0
    feats = model.features(x).detach().double()
    np.testing.assert_allclose(pen["sum_abs"], feats.abs().sum(0).numpy(), rtol=1e-6)
    logits = frame[frame.layer == "logits"]
    assert len(logits) == 2 and not logits["inactive"].any()
    np.testing.assert_allclose(logits["sum_abs"], model(x).detach().abs().sum(0).numpy(), rtol=1e-5)


def test_inactive_tolerance_and_cumulative_curve():
    s = np.array([0.0, 1e-6, 5.0, 10.0])
    assert inactive(s).tolist() == [True, False, False, False]
    assert inactive(s, rel_tol=1e-3).tolist() == [True, True, False, False]
    rank, cum = cumulative_curve([3.0, 0.0, 1.0])
    assert rank.tolist() == [1, 2, 3] and cum.tolist() == [0.0, 1.0, 4.0]


def test_linear_model_frame_roundtrips_parquet(tmp_path, linear):
    model, _, _, x, y = linear
    frame = linear_model(model, x, y)
    frame.to_parquet(tmp_path / "a.parquet")
    back = pd.read_parquet(tmp_path / "a.parquet")
    assert np.stack(back["logits"]).shape == (40, 5)
