import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from lsqueeze.jobs.data import prepare
from lsqueeze.jobs.train import adv_spec, resolve_precision, train, train_autocast
from lsqueeze.plan import build as C
from lsqueeze.runtime.files import cpu_model, load_torch, lock_digest
from lsqueeze.science.models import MadryCNN, WideResNet
from lsqueeze.science.splits import load_split
from lsqueeze.science.step import (
    crop_flip,
    gaussian_noise,
    regularized_loss,
    smoothed_targets,
    training_batch,
)


def spec(dataset="digits28", steps=300, recipe=None, train_opts=None, **cell):
    c = C.resolve_cell({}, {"dataset": dataset, "steps": steps, **cell})
    r = C._deep_merge(C.RECIPES[dataset], recipe or {})
    return {"id": C.cell_id(c), "cell": c, "recipe": r, "train": train_opts or {}}


def test_label_smoothing_matches_torch():
    z = torch.randn(7, 10)
    y = torch.randint(0, 10, (7,))
    for alpha in (0.0, 0.2, 0.95):
        soft = smoothed_targets(y, 10, alpha)
        assert torch.allclose(soft.sum(1), torch.ones(7))
        ours = -(soft * F.log_softmax(z, 1)).sum(1).mean()
        ref = F.cross_entropy(z, y, label_smoothing=alpha)
        assert torch.allclose(ours, ref, atol=1e-6)
        assert torch.allclose(regularized_loss(z, y, {"alpha": alpha, "beta": 0.0}, "mean"), ref, atol=1e-6)


def test_squeeze_term_is_beta_times_frobenius_norm():
    z = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ‖Z‖_F = 5, not squared (25)
    y = torch.tensor([0, 1])
    ce = F.cross_entropy(z, y, reduction="sum")
    assert torch.isclose(regularized_loss(z, y, {"alpha": 0.0, "beta": 0.5}, "sum") - ce, torch.tensor(2.5))
    # mean CE: the squeeze term is divided by the batch size too (β/N = 1, ‖Z‖_F = 5)
    mean = regularized_loss(z, y, {"alpha": 0.0, "beta": 2.0}, "mean")
    assert torch.isclose(mean - F.cross_entropy(z, y), torch.tensor(5.0))


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0.2, 0.5), (0.0, 10.0), (0.95, 5.0)])
def test_beta_means_the_same_for_summed_and_mean_ce(alpha, beta):
    """mean CE + (β/N)‖Z‖_F = (summed CE + β‖Z‖_F)/N: one minimiser, gradients in ratio 1/N."""
    torch.manual_seed(0)
    z = torch.randn(13, 10, requires_grad=True)
    y = torch.randint(0, 10, (13,))
    summed = F.cross_entropy(z, y, label_smoothing=alpha, reduction="sum") + beta * z.norm()
    assert torch.allclose(regularized_loss(z, y, {"alpha": alpha, "beta": beta}, "sum"), summed, atol=1e-5)
    mean = regularized_loss(z, y, {"alpha": alpha, "beta": beta}, "mean")
    assert torch.allclose(mean, summed / 13, atol=1e-6)
    assert torch.allclose(mean, F.cross_entropy(z, y, label_smoothing=alpha) + beta / 13 * z.norm(),
                          atol=1e-6)
    g_sum, = torch.autograd.grad(regularized_loss(z, y, {"alpha": alpha, "beta": beta}, "sum"), z)
    g_mean, = torch.autograd.grad(mean, z)
    assert torch.allclose(g_mean, g_sum / 13, atol=1e-6)
    with pytest.raises(ValueError, match="ce_reduction"):
        regularized_loss(z, y, {"alpha": alpha, "beta": beta}, "avg")


def _train_digits32_squeeze(data_dir, loss_fn, steps=120, beta=5.0):
    """The CIFAR recipe (digits32 stand-in: SGD 0.1, momentum, wd, lr steps, crop+flip, mean CE,
    its batch 64) on a tiny Madry WRN, with a given loss; the test accuracy it reaches."""
    from lsqueeze.jobs.train import Batches, clean_stats, make_optimizer, make_scheduler
    from lsqueeze.science.models import build_model
    from lsqueeze.science.splits import load_split

    recipe = C._deep_merge(C.RECIPES["digits32"], {"arch": {"base": 8}})
    cell = C.resolve_cell({}, {"dataset": "digits32", "beta": beta, "steps": steps})
    x_tr, y_tr = load_split(data_dir / "train.pt")
    x_te, y_te = load_split(data_dir / "test.pt")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(recipe, x_tr.shape[1:])
    opt = make_optimizer(model, recipe)
    sched = make_scheduler(opt, recipe, steps)
    batches = Batches(len(y_tr), recipe["batch_size"], gen)
    model.train()
    for _ in range(steps):
        idx = batches.next()
        x = training_batch(x_tr[idx], y_tr[idx], cell, recipe, model, None, gen)
        loss = loss_fn(model(x), y_tr[idx], cell["beta"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return clean_stats(model, x_te, y_te)[0]


def test_cifar_squeeze_does_not_collapse(tmp_path, one_thread):
    """Mean CE + β‖Z‖_F (β unscaled) drives a CIFAR-recipe squeeze cell to chance; the loss the
    pipeline uses, mean CE + (β/N)‖Z‖_F, trains the same cell, same seed, same steps."""
    prepare("digits32", tmp_path)
    old = _train_digits32_squeeze(
        tmp_path, lambda z, y, b: F.cross_entropy(z, y) + b * torch.linalg.matrix_norm(z))
    new = _train_digits32_squeeze(
        tmp_path, lambda z, y, b: regularized_loss(z, y, {"alpha": 0.0, "beta": b}, "mean"))
    assert old < 0.2, f"the unscaled form was expected to collapse, got {old:.2%}"
    assert new > 0.5, f"the scaled form collapsed: {new:.2%}"


@pytest.mark.parametrize("sigma,scale", [(0.5, 1.0), (30.0, 255.0)])
def test_noise_sigma_in_pixel_units(sigma, scale):
    x = torch.full((64, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = gaussian_noise(x, sigma, scale, clip=False, generator=g)
    assert abs((noisy - x).std().item() - sigma / scale) < 0.01 * sigma / scale
    clipped = gaussian_noise(x, sigma, scale, clip=True, generator=g)
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_crop_flip_keeps_pixels():
    x = torch.rand(16, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # every output is a shifted (and maybe flipped) copy: its pixel multiset is a subset of x plus zeros
    assert (out.abs().sum() <= x.abs().sum() + 1e-3)


def test_crop_flip_pads_two_pixels_like_madry():
    """cifar10_challenge pads to 36×36 before the 32×32 crop: shifts of at most 2 pixels."""
    x = torch.zeros(512, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = crop_flip(x, torch.Generator().manual_seed(0))
    n, _, r, c = out.nonzero(as_tuple=True)
    assert len(n) == 512  # the pixel is never cropped away
    dc = torch.minimum((c - 16).abs(), (31 - c - 16).abs())  # undo a flip
    assert (r - 16).abs().max() == 2 and dc.max() <= 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_adversarial_training_batches_differ_and_stay_within_eps(digits, precision):
    s = spec(method="adv", adv={"attack": "pgd", "steps": 5, "eps": 0.3, "step_size": 0.1})
    x_u8, y = load_torch(digits / "train.pt")["x"][:32], load_torch(digits / "train.pt")["y"][:32]
    torch.manual_seed(0)
    model = MadryCNN(conv1=8, conv2=16, fc=64)
    adv = adv_spec(s["cell"], s["recipe"]["pixel_scale"])
    with train_autocast(torch.device("cpu"), precision):  # as train() crafts it
        xb = training_batch(x_u8, y, s["cell"], s["recipe"], model, adv,
                            torch.Generator().manual_seed(0))
    assert xb.dtype == torch.float32
    clean = x_u8.float() / 255
    assert (xb - clean).abs().max() <= 0.3 + 1e-6
    assert (xb - clean).abs().max() > 0.1
    assert xb.min() >= 0 and xb.max() <= 1
    assert model.training, "crafting must not leave the model in eval mode"


@pytest.mark.parametrize("in_eval", [False, True])
def test_adversary_leaves_batch_norm_running_stats_alone(in_eval):
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = spec(dataset="digits32", method="adv", recipe={"adv_in_eval": in_eval, "augment": "none"},
             adv={"attack": "pgd", "steps": 3, "eps": 8, "step_size": 2})
    adv = adv_spec(s["cell"], 255.0)
    x_u8 = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (8,))
    xb = training_batch(x_u8, y, s["cell"], s["recipe"], model, adv, torch.Generator().manual_seed(0))
    assert (xb - x_u8.float() / 255).abs().max() <= 8 / 255 + 1e-6
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the attack changed the model"
    assert model.training


def test_offline_cnn_beats_chance(digits, tmp_path):
    m = train(spec(steps=300), digits, tmp_path, progress=False)
    assert m["test_accuracy"] > 0.8 and not m["diverged"]
    assert m["steps_done"] == 300 and not (tmp_path / "state.pt").exists()
    weights = load_torch(tmp_path / "model.pt")
    assert set(weights) >= {"conv1.weight", "fc2.bias"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "final_loss", "mean_logit_norm", "steps_done",
                "wall_time_s", "images_per_s", "device", "diverged", "spec", "code_version",
                "environment_lock", "torch", "precision"):
        assert key in saved
    # the clean accuracies' own image counts, read from the data the job trained on
    assert (saved["n_train"], saved["n_test"]) == (len(load_split(digits / "train.pt")[1]),
                                                   len(load_split(digits / "test.pt")[1]))
    assert saved["environment_lock"] == lock_digest()
    # which CPU: two x86 CPUs may train the same cell at 2.4x different speeds, in another precision
    assert saved["device"].startswith(f"cpu ({cpu_model()}, ") and cpu_model()


@pytest.mark.parametrize("machine, avx512_bf16, amx, native", [
    ("x86_64", False, False, False),  # AVX-512 without bf16 instructions: oneDNN emulates bf16
    ("x86_64", True, False, True), ("x86_64", False, True, True), ("aarch64", False, False, True)])
def test_auto_precision_is_bf16_only_with_bf16_instructions(monkeypatch, machine, avx512_bf16,
                                                            amx, native):
    import lsqueeze.jobs.train as T

    monkeypatch.setattr(T.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True,
                        raising=False)
    monkeypatch.setattr(T.platform, "machine", lambda: machine)
    monkeypatch.setattr(T.torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(T.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert T.native_bf16(torch.device("cpu")) is native
    assert resolve_precision(torch.device("cpu"), "auto") == ("bf16" if native else "fp32")
    assert resolve_precision(torch.device("cpu"), "bf16") == "bf16"  # asked for: as asked
    monkeypatch.setattr(T.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False,
                        raising=False)
    assert resolve_precision(torch.device("cpu"), "auto") == "fp32"


@pytest.mark.parametrize("major, precision", [(7, "fp32"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(monkeypatch, major, precision):
    """A V100 (7.0) has no bf16 tensor cores; an A100 (8.0) and an H100 (9.0) do."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    assert resolve_precision(torch.device("cuda"), "auto") == precision


def test_precision_is_a_run_option_with_fp32_weights(digits, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = train(spec(steps=200), digits, tmp_path / precision, progress=False,
                                options={"precision": precision})
        assert runs[precision]["precision"] == precision
        assert runs[precision]["test_accuracy"] > 0.7
        weights = load_torch(tmp_path / precision / "model.pt")
        # NHWC while training, but saved NCHW-contiguous fp32: the checkpoint does not depend on it
        assert all(w.dtype in (torch.float32, torch.int64) and w.is_contiguous()
                   for w in weights.values())
    assert runs["fp32"]["spec"] == runs["bf16"]["spec"]  # same cell: editing precision retrains nothing
    assert resolve_precision(torch.device("cpu"), "auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="train.precision.*fp16"):
        resolve_precision(torch.device("cpu"), "fp16")


def _cli(s, data, out):
    return [sys.executable, "-m", "lsqueeze", "train", "--spec", json.dumps(s), "--data-dir", str(data),
            "--out-dir", str(out), "--no-progress"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_identical_weights(digits, tmp_path, sig):
    s = spec(steps=400, sigma=0.3, alpha=0.1, train_opts={"checkpoint_every": 25})
    ref = tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count: CPU reductions stay bitwise equal
    subprocess.run(_cli(s, digits, ref), env=env, check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(s, digits, out), env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run should have been interrupted"
    assert (out / "state.pt").exists() and not (out / "metrics.json").exists()
    done = subprocess.run(_cli(s, digits, out), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["resumed_from"] < 400
    a, b = load_torch(ref / "model.pt"), load_torch(out / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_is_recorded_not_raised(digits, tmp_path):
    s = spec(steps=200, beta=1.0, recipe={"optimizer": "sgd", "lr": 1e12, "momentum": 0.9})
    from lsqueeze.cli import main

    assert main(["train", "--spec", json.dumps(s), "--data-dir", str(digits), "--out-dir",
                 str(tmp_path), "--no-progress"]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["diverged"] is True and m["steps_done"] < 200
    assert 0.0 <= m["test_accuracy"] <= 1.0
    assert (tmp_path / "model.pt").exists()
