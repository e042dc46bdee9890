"""AutoAttack is Croce & Hein's reference implementation (pyautoattack) with its standard settings.

The configuration that runs is asserted member by member (iterations, restarts, target classes
for 10 and 100 classes, Square's queries), a 10-iteration configuration is refused before any
image is attacked, and on a small CNN trained on the real digits the pipeline's AutoAttack finds
what the reference finds when called directly, stays inside the ε-ball and [0,1], and never leaves
more accuracy than PGD-40.
"""

import pytest
import torch
from test_attacks import accuracy, data, fit, tiny_cnn  # noqa: F401  (data: a fixture)
from torch import nn

from lsqueeze.science import attacks
from lsqueeze.science import autoattack as aa

pyautoattack = pytest.importorskip("pyautoattack")
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


def _inside(x_adv, x, eps):
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def _wide(n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, n_classes))


@pytest.mark.parametrize("n_classes", [10, 100])  # MNIST / CIFAR-10 and CIFAR-100
def test_the_configuration_is_the_reference_standard(n_classes):
    config = aa.configuration(aa.adversary(_wide(n_classes), 8 / 255))
    assert config == {
        "attacks": ("apgd-ce", "apgd-t", "fab-t", "square"),
        "apgd-ce": {"n_iter": 100, "n_restarts": 1},
        "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
        "fab-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
        "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8},
    }
    aa.check_standard(config, n_classes)


def test_cost_counts_the_reference_budget():
    from lsqueeze.registries.attack_kinds import AUTOATTACK_STEPS, image_steps

    assert AUTOATTACK_STEPS == aa.IMAGE_STEPS == pytest.approx(3566.7, abs=0.1)
    assert image_steps({"attack": "autoattack", "eps": 0.3}) == aa.IMAGE_STEPS


def _ten_iterations(adv):
    adv.apgd.n_iter = adv.apgd_targeted.n_iter = adv.fab.n_iter = 10
    return adv


def test_a_ten_iteration_configuration_is_refused(model, batch, monkeypatch):
    with pytest.raises(ValueError, match=r"apgd-ce n_iter=10 \(standard: 100\).*fab-t n_iter=10"):
        aa.check_standard(aa.configuration(_ten_iterations(aa.adversary(model, EPS))), 10)
    fewer = aa.adversary(model, EPS)
    fewer.apgd_targeted.n_target_classes, fewer.square.n_queries = 3, 1000
    with pytest.raises(ValueError, match="n_target_classes=3.*n_queries=1000"):
        aa.check_standard(aa.configuration(fewer), 10)
    # ... and the job refuses it before attacking a single image.
    made = aa.adversary
    monkeypatch.setattr(aa, "adversary", lambda *a, **k: _ten_iterations(made(*a, **k)))
    with pytest.raises(ValueError, match="not the reference's standard"):
        aa.autoattack(model, *batch, EPS)


def test_torchattacks_default_is_the_weaker_configuration():
    """Why the pipeline left torchattacks' port: its members run 10 iterations by default."""
    torchattacks = pytest.importorskip("torchattacks")
    port = torchattacks.AutoAttack(_wide(10), norm="Linf", eps=EPS, version="standard",
                                   n_classes=10, seed=0)
    members = port._autoattack.attacks
    steps = {type(m).__name__: getattr(m, "steps", None) for m in members}
    assert steps["APGD"] == steps["APGDT"] == steps["FAB"] == 10
    config = {"attacks": ("apgd-ce", "apgd-t", "fab-t", "square"),
              "apgd-ce": {"n_iter": steps["APGD"], "n_restarts": 1}}
    with pytest.raises(ValueError, match="apgd-ce n_iter=10"):
        aa.check_standard(config, 10)


def test_the_members_run_with_the_standard_settings(model, batch, monkeypatch):
    """Record what each member is called with: the configuration actually run, not just built."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    calls = []

    def recording(name, *keys):
        def perturb(self, x, y, *args, **kwargs):
            calls.append((name, len(x), {k: getattr(self, k) for k in keys}))
            return x.clone()  # fool nothing: every member runs, on every image
        return perturb

    monkeypatch.setattr(APGDAttack, "perturb", recording("apgd", "n_iter", "n_restarts", "loss"))
    monkeypatch.setattr(APGDAttack_targeted, "perturb",
                        recording("apgd-t", "n_iter", "n_restarts", "n_target_classes"))
    monkeypatch.setattr(FABAttack_PT, "perturb",
                        recording("fab", "n_iter", "n_restarts", "n_target_classes", "targeted"))
    monkeypatch.setattr(SquareAttack, "perturb", recording("square", "n_queries", "n_restarts"))
    x, y = batch
    x_adv = aa.autoattack(model, x, y, EPS)
    clean = int((attacks.predict(model, x) == y).sum())
    assert calls == [
        ("apgd", clean, {"n_iter": 100, "n_restarts": 1, "loss": "ce"}),
        ("apgd-t", clean, {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
        ("fab", clean, {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "targeted": True}),
        ("square", clean, {"n_queries": 5000, "n_restarts": 1}),
    ]
    assert torch.equal(x_adv, x)


@pytest.fixture(scope="module")
def pgd40(model, batch):
    x, y = batch
    spec = {"attack": "pgd", "eps": EPS, "step_size": EPS / 4, "steps": 40, "loss": "xent",
            "random_start": True}
    _, robust = attacks.attack(model, x, y, spec, seed=0)
    return float(robust.float().mean())


def _reference_after_each_member(model, x, y, seed, caplog):
    """The reference's own run, verbose: (x_adv, {member: robust accuracy after it}) as its
    logger prints them ("robust accuracy after APGD-CE: 27.00% ...")."""
    import logging
    import re

    ref = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=seed,
                                  device="cpu")
    ref.verbose = True
    with caplog.at_level(logging.DEBUG, logger="auto-attack"):
        caplog.clear()
        x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=len(x))
    after = {m.group(1).lower(): float(m.group(2)) / 100 for r in caplog.records
             for m in [re.match(r"robust accuracy after (\S+): ([0-9.]+)%", r.getMessage())] if m}
    return x_ref, after


def test_autoattack_is_the_reference_run(model, batch, pgd40, caplog):
    x, y = batch
    ours, first, members = aa.autoattack(model, x, y, EPS, "standard", seed=3, breakdown=True)
    ref, after = _reference_after_each_member(model, x, y, 3, caplog)
    # Member by member, the accuracy after each is the reference's own, as it logs it.
    assert members == ("apgd-ce", "apgd-t", "fab-t", "square") == tuple(after)
    for k, member in enumerate(members, start=1):
        still = ((first == -1) | (first > k)).float().mean().item()
        assert still == pytest.approx(after[member], abs=1e-4), member
    assert torch.equal(first == 0, attacks.predict(model, x) != y)  # 0: wrong before any attack
    assert torch.equal(first == -1, attacks.predict(model, ours) == y)
    assert 1 in set(first.tolist())  # APGD-CE broke images here
    _inside(ours, x, EPS)
    _inside(ref, x, EPS)
    assert torch.equal(attacks.predict(model, ours) == y, attacks.predict(model, ref) == y)
    assert accuracy(model, ours, y) <= pgd40
    assert accuracy(model, ours, y) > 0.3     # images survive: every member had work to do
    # Through the dispatcher: the per-example mask is the ensemble's, and the breakdown comes
    # along when asked for.
    x_adv, robust, part = attacks.attack(model, x, y, {"attack": "autoattack", "eps": EPS},
                                         seed=0, breakdown=True)
    _inside(x_adv, x, EPS)
    assert torch.equal(robust, attacks.predict(model, x_adv) == y)
    assert part["members"] == members and torch.equal(part["first_broken_by"] == -1, robust)
    assert attacks.attack(model, x, y, {"attack": "pgd", "eps": EPS, "step_size": EPS / 4,
                                        "steps": 2}, breakdown=True)[2] is None


def test_the_breakdown_names_a_later_member(model, batch, monkeypatch, caplog):
    """With APGD-CE made to fool nothing, APGD-T breaks the images: the record must say so, and
    the accuracy after each member is still the reference's own."""
    from pyautoattack.autopgd_base import APGDAttack

    monkeypatch.setattr(APGDAttack, "perturb", lambda self, x, y, *a, **k: x.clone())
    x, y = batch
    ours, first, members = aa.autoattack(model, x, y, EPS, "standard", seed=3, breakdown=True)
    _, after = _reference_after_each_member(model, x, y, 3, caplog)
    assert after["apgd-ce"] == pytest.approx(float((attacks.predict(model, x) == y).float().mean()))
    for k, member in enumerate(members, start=1):
        assert ((first == -1) | (first > k)).float().mean().item() == pytest.approx(
            after[member], abs=1e-4), member
    assert 1 not in set(first.tolist()) and 2 in set(first.tolist())
    _inside(ours, x, EPS)



@pytest.mark.parametrize("version", ["plus", "rand"])
def test_versions_other_than_standard_are_refused(model, batch, version):
    """Only the standard version's configuration is checked, so only it runs."""
    from lsqueeze.plan.schema import ConfigError, validate

    with pytest.raises(ValueError, match=f"autoattack version: '{version}' is not run"):
        aa.autoattack(model, *batch, EPS, version)
    preset = {"preset": "p", "results": "results/p", "cells": {"a": {"dataset": "digits28"}},
              "attacks": {"aa": {"attack": "autoattack", "eps": 0.3, "version": version}},
              "tables": [{"id": "t", "rows": [{"cell": "a"}],
                          "columns": [{"name": "AA", "threat": "white", "attack": "aa"}]}]}
    with pytest.raises(ConfigError, match="version"):
        validate(preset)
