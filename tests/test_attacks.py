"""Attacks: ε and box bounds, agreement with torchattacks, per-example restarts, the CW margin on
all-negative logits, no side effects, and unbounded ε reaching ~0% accuracy on a trained model."""

import pytest
import torch
from torch import nn

from lsqueeze.jobs.data import digits
from lsqueeze.jobs.evaluate import run_attack
from lsqueeze.science import attacks, pgd
from lsqueeze.science.splits import to_float


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(4 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))


def fit(model, x, y, steps=150, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def data():
    split = digits("digits28")
    return {s: (to_float(split[s]["x"]), split[s]["y"]) for s in ("train", "test")}


@pytest.fixture(scope="module")
def trained(data):
    """A small CNN trained on the real digits in a few seconds (clean test accuracy > 85%)."""
    model = fit(tiny_cnn(), *data["train"])
    x, y = data["test"]
    assert (attacks.predict(model, x) == y).float().mean() > 0.85
    return model


def accuracy(model, x_adv, y):
    return float((attacks.predict(model, x_adv) == y).float().mean())


@pytest.mark.parametrize("kind,random_start", [("fgsm", False), ("pgd", False), ("pgd", True)])
@pytest.mark.parametrize("loss", ["xent", "cw"])
def test_within_eps_ball_and_box(trained, data, kind, loss, random_start):
    x, y = data["test"][0][:64], data["test"][1][:64]
    assert (x == 0).any() and (x == 1).any()  # both box faces are exercised
    eps = 0.1
    spec = {"attack": kind, "loss": loss, "eps": eps, "steps": 10, "step_size": 0.03,
            "random_start": random_start, "restarts": 2}
    x_adv, robust = attacks.attack(trained, x, y, spec, seed=1)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    assert robust.float().mean() < (attacks.predict(trained, x) == y).float().mean()


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_unbounded_eps_stays_finite_in_box(trained, data, kind):
    x, y = data["test"][0][:32], data["test"][1][:32]
    spec = {"attack": kind, "loss": "xent", "eps": None, "steps": 3, "step_size": 0.5,
            "random_start": True}
    x_adv, _ = attacks.attack(trained, x, y, spec, seed=0)
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("random_start,seed", [(False, 0), (True, 0), (True, 1), (True, 2)])
def test_pgd_xent_matches_torchattacks(trained, data, random_start, seed):
    """Same start (same seed), same op order, same batch-mean loss: the same adversarial images.

    Our default sums the per-example losses (Madry; batch-size independent); torchattacks takes
    the batch mean. The sign step ignores that scale up to float rounding, so the comparison
    uses reduction="mean" to make the two bit-comparable.
    """
    torchattacks = pytest.importorskip("torchattacks")
    x, y = data["test"][0][:200], data["test"][1][:200]
    eps, step, steps = 0.1, 0.01, 20
    ours = attacks.pgd(trained, x, y, eps, step, steps, "xent", random_start, reduction="mean",
                       generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # torchattacks draws its start from the global generator
    theirs = torchattacks.PGD(trained, eps=eps, alpha=step, steps=steps,
                              random_start=random_start)(x, y)
    assert (ours - theirs).abs().max() <= 1e-5
    if random_start:  # the evaluation's path: the same start handed in as unit draws
        noise = torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(seed))
        given = attacks.pgd(trained, x, y, eps, step, steps, "xent", True, reduction="mean",
                            unit_start=noise / eps)
        assert (given - theirs).abs().max() <= 1e-5
    assert accuracy(trained, ours, y) == accuracy(trained, theirs, y)
    assert accuracy(trained, ours, y) < accuracy(trained, x, y) - 0.2  # the attack did something
    default = attacks.pgd(trained, x, y, eps, step, steps, "xent", random_start,
                          generator=torch.Generator().manual_seed(seed))
    assert abs(accuracy(trained, default, y) - accuracy(trained, theirs, y)) <= 0.02


class CoinFlip(nn.Module):
    """Predicts class 1 iff the first pixel exceeds 0.5; piecewise constant, so its input gradient
    is zero and PGD never moves off its random start: each restart fools the examples whose start
    landed above 0.5 — different examples on different restarts."""

    def forward(self, x):
        first = x.flatten(1)[:, 0]
        return torch.stack([x.flatten(1).sum(1) * 0, (first > 0.5).float() * 10 + first * 0], 1)


def test_restarts_count_per_example_and_never_increase_accuracy():
    model = CoinFlip()
    n = 200
    x = torch.full((n, 1, 2, 2), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    spec = {"attack": "pgd", "loss": "xent", "eps": 0.1, "steps": 2, "step_size": 0.05,
            "random_start": True}
    # Each restart on its own, from the start that restart r of each example is assigned.
    single = [attacks.pgd(model, x, y, 0.1, 0.05, 2,
                          unit_start=attacks.random_starts(x.shape, 3, r, torch.arange(n)))
              for r in range(4)]
    fooled = torch.stack([attacks.predict(model, a) != y for a in single])
    assert not torch.equal(fooled[0], fooled[1])  # restarts fool different examples
    accs = []
    for r in (1, 2, 3, 4):
        for batched in (False, True):
            x_adv, robust = attacks.attack(model, x, y, {**spec, "restarts": r}, seed=3,
                                           batched_restarts=batched)
            # robust only if every restart failed on this very example
            assert torch.equal(robust, ~fooled[:r].any(0))
            assert torch.equal(attacks.predict(model, x_adv) == y, robust)
        accs.append(float(robust.float().mean()))
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]
    # A per-batch count (best single restart) would overstate robustness here.
    assert accs[-1] < min(float((~f).float().mean()) for f in fooled)
    assert x.eq(0.5).all()


def test_random_starts_depend_on_seed_restart_and_example_only():
    shape = (10, 1, 3, 3)
    full = attacks.random_starts(shape, 0, 2, torch.arange(10))
    assert full.shape == shape and full.min() >= -1 and full.max() < 1
    # The same example gets the same draw in any batch, at any position.
    part = attacks.random_starts((3, 1, 3, 3), 0, 2, torch.tensor([7, 2, 5]))
    assert torch.equal(part, full[[7, 2, 5]])
    assert not torch.equal(full, attacks.random_starts(shape, 0, 1, torch.arange(10)))  # restart
    assert not torch.equal(full, attacks.random_starts(shape, 1, 2, torch.arange(10)))  # seed
    assert not torch.equal(full[0], full[1])  # examples
    assert abs(float(full.mean())) < 0.2 and float(full.abs().mean()) > 0.3  # uniform on [-1, 1)


def test_restart_columns_are_nested_and_batch_independent(trained, data):
    """Restart r of example i is the same draw for every R and batch size, so the set of examples
    robust to R+1 restarts lies inside the set robust to R (Table 10's columns never rise)."""
    x, y = data["test"][0][:120], data["test"][1][:120]
    spec = {"attack": "pgd", "loss": "xent", "eps": 0.1, "steps": 3, "step_size": 0.03,
            "random_start": True}
    robust = {}
    for r in range(1, 6):
        _, robust[r] = run_attack(trained, x, y, {**spec, "restarts": r}, batch_size=40, seed=0)
    for r in range(1, 5):
        assert not (robust[r + 1] & ~robust[r]).any(), f"robust to {r + 1} restarts, not to {r}"
    assert robust[5].sum() < robust[1].sum()  # the restarts find new examples: the test has teeth
    for r in (1, 3):
        for bs in (7, 120):
            adv, other = run_attack(trained, x, y, {**spec, "restarts": r}, batch_size=bs, seed=0)
            assert torch.equal(other, robust[r])
            assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_batched_restarts_match_sequential_on_trained_model(trained, data):
    x, y = data["test"][0][:48], data["test"][1][:48]
    spec = {"attack": "pgd", "loss": "cw", "eps": 0.05, "steps": 5, "step_size": 0.02,
            "random_start": True, "restarts": 3}
    seq = attacks.attack(trained, x, y, spec, seed=0)
    bat = attacks.attack(trained, x, y, spec, seed=0, batched_restarts=True)
    assert torch.equal(seq[1], bat[1])
    assert (seq[0] - bat[0]).abs().max() <= 1e-5
    # The evaluation path (chunks of batch_size // restarts, batched) never beats one restart.
    _, one = run_attack(trained, x, y, {**spec, "restarts": 1}, batch_size=48, seed=0)
    _, many = run_attack(trained, x, y, spec, batch_size=48, seed=0)
    assert many.sum() <= one.sum()


def test_cw_margin_with_all_negative_logits():
    logits = torch.tensor([[-5.0, -1.0, -3.0], [-0.5, -4.0, -2.0], [-7.0, -6.0, -9.0]],
                          requires_grad=True)
    y = torch.tensor([0, 0, 2])
    margin = pgd.cw_margin(logits, y)
    assert torch.allclose(margin, torch.tensor([-4.0, 1.5, -3.0]))
    # Masking wrong classes by multiplying with zero would report max(0, ...) = 0 as the best
    # wrong logit here; the margin above must differ from that.
    onehot = nn.functional.one_hot(y, 3).float()
    buggy = (logits * onehot).sum(1) - ((1 - onehot) * logits).amax(1)
    assert not torch.allclose(margin, buggy)
    loss = pgd.cw_loss(logits, y, confidence=50.0)
    assert torch.allclose(loss, -(margin + 50.0))
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.equal(grad, torch.tensor([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_no_side_effects_on_model_or_inputs(data, kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    model.train()
    frozen_layer = model[5]
    frozen_layer.bias.requires_grad_(False)  # a caller's own choice, to be restored as it was
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data["test"][0][:16].clone(), data["test"][1][:16].clone()
    x0, y0 = x.clone(), y.clone()
    spec = {"attack": kind, "loss": "xent", "eps": 0.1, "steps": 3, "step_size": 0.05,
            "random_start": True, "restarts": 2}
    attacks.attack(model, x, y, spec)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, x0) and torch.equal(y, y0) and not x.requires_grad
    for k, v in model.state_dict().items():  # BN running stats untouched: attacked in eval mode
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert frozen_layer.weight.requires_grad and not frozen_layer.bias.requires_grad
    # Deterministic in eval mode: two calls with the same seed agree (dropout was off).
    a = attacks.attack(model, x, y, spec, seed=1)[0]
    b = attacks.attack(model, x, y, spec, seed=1)[0]
    assert torch.equal(a, b)


def test_unbounded_eps_many_steps_drives_accuracy_to_zero(trained, data):
    x, y = data["test"][0][:150], data["test"][1][:150]
    spec = {"attack": "pgd", "loss": "xent", "eps": None, "steps": 20, "step_size": 0.1,
            "random_start": False}
    x_adv, robust = attacks.attack(trained, x, y, spec)
    assert accuracy(trained, x, y) > 0.85
    assert robust.float().mean() <= 0.01
    bounded, _ = attacks.attack(trained, x, y, {**spec, "eps": 0.02, "steps": 5, "step_size": 0.01})
    assert accuracy(trained, bounded, y) > 0.05  # a small ε alone does not get there


def test_unknown_attack_and_loss_are_named(trained, data):
    x, y = data["test"][0][:4], data["test"][1][:4]
    with pytest.raises(ValueError, match="known: fgsm, pgd, autoattack"):
        attacks.attack(trained, x, y, {"attack": "bim"})
    with pytest.raises(ValueError, match="loss"):
        attacks.fgsm(trained, x, y, 0.1, loss="hinge")


def test_autoattack_standard_on_tiny_model(trained, data):
    """At ε = 0.2 APGD fools every image of this undefended model, so the slow members (FAB-T,
    Square: 5,000 queries per survivor) have nothing left to attack and the test stays fast."""
    pytest.importorskip("torchattacks")
    x, y = data["test"][0][:8], data["test"][1][:8]
    eps = 0.2
    spec = {"attack": "autoattack", "eps": eps, "version": "standard"}
    trained.train()
    rng = torch.get_rng_state()
    x_adv, robust = attacks.attack(trained, x, y, spec, seed=0)
    assert trained.training
    trained.eval()
    assert torch.equal(torch.get_rng_state(), rng)  # the ensemble's reseeding did not leak
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(attacks.predict(trained, x_adv) == y, robust)
    assert (attacks.predict(trained, x) == y).sum() >= 6 and robust.sum() == 0
    with pytest.raises(ValueError, match="version"):
        attacks.attack(trained, x, y, {**spec, "version": "fast"})
    with pytest.raises(ValueError, match="reduction"):
        attacks.pgd(trained, x, y, 0.1, 0.01, 1, reduction="max")
