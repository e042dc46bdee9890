"""The stronger attacks behind the claims stage against an independent implementation.

The pipeline's AutoAttack is torchattacks' port (lsqueeze.autoattack); the reference is Croce &
Hein's own code as packaged on PyPI (pyautoattack, installed with --no-deps: `make test` does).
On a small CNN trained on the real digits, at an ε where part of the test images survive, the two
must find the same adversarial examples (APGD members) or the same robust accuracy (the
ensemble), stay inside the ε-ball and [0,1], and never leave more accuracy than PGD-40.
"""

import pytest
import torch

from lsqueeze import attacks
from lsqueeze.autoattack import autoattack
from test_attacks import accuracy, data, fit, tiny_cnn  # noqa: F401  (data: a fixture)

pyautoattack = pytest.importorskip("pyautoattack")
torchattacks = pytest.importorskip("torchattacks")
EPS = 0.05  # on this model: ~88% clean, ~55% under PGD-40, so every member has work to do


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def model(data):
    return fit(tiny_cnn(), *data["train"])


@pytest.fixture(scope="module")
def batch(data):
    return data["test"][0][:64], data["test"][1][:64]


@pytest.fixture(scope="module")
def pgd40(model, batch):
    x, y = batch
    spec = {"attack": "pgd", "eps": EPS, "step_size": EPS / 4, "steps": 40, "loss": "xent",
            "random_start": True}
    _, robust = attacks.attack(model, x, y, spec, seed=0)
    return float(robust.float().mean())


def _inside(x_adv, x, eps):
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_apgd_ce_matches_the_reference(model, batch, pgd40):
    from pyautoattack.autopgd_base import APGDAttack

    x, y = batch
    ours = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=50, n_restarts=1, loss="ce",
                             seed=0)(x, y)
    ref = APGDAttack(model, norm="Linf", eps=EPS, n_iter=50, n_restarts=1, loss="ce", seed=0,
                     device="cpu").perturb(x, y)
    _inside(ours, x, EPS)
    _inside(ref, x, EPS)
    assert (ours - ref).abs().max() < 1e-5   # same algorithm, same seed: the same images
    assert torch.equal(attacks.predict(model, ours), attacks.predict(model, ref))
    assert 0.3 < accuracy(model, ours, y) <= pgd40


def test_apgd_targeted_matches_the_reference(model, batch, pgd40):
    from pyautoattack.autopgd_base import APGDAttack_targeted

    x, y = batch
    ours = torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=30, n_restarts=1, seed=0,
                              n_classes=10)
    ours.n_target_classes = 3
    a = ours(x, y)
    ref = APGDAttack_targeted(model, norm="Linf", eps=EPS, n_iter=30, n_restarts=1, seed=0,
                              device="cpu", n_target_classes=3).perturb(x, y)
    _inside(a, x, EPS)
    _inside(ref, x, EPS)
    same = (attacks.predict(model, a) == y) == (attacks.predict(model, ref) == y)
    assert same.float().mean() >= 62 / 64     # the targeted DLR loss finds the same survivors
    assert accuracy(model, a, y) <= pgd40 + 1 / 64


@pytest.mark.slow  # Square spends 5,000 queries per surviving image in each implementation
def test_autoattack_ensemble_matches_the_reference(model, batch, pgd40):
    x, y = batch
    ours = autoattack(model, x, y, EPS, "standard", seed=0)
    ref, _ = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0,
                                     device="cpu").run_standard_evaluation(x, y, batch_size=64)
    _inside(ours, x, EPS)
    _inside(ref, x, EPS)
    acc_ours, acc_ref = accuracy(model, ours, y), accuracy(model, ref, y)
    assert abs(acc_ours - acc_ref) <= 1 / 64
    assert acc_ours <= pgd40 and acc_ref <= pgd40
    assert acc_ours > 0.3                      # images survive: the test exercised every member
