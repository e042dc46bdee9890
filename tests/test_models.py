"""The architectures and inits the authors ran (Madry's mnist_challenge / cifar10_challenge)."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lsqueeze.plan.build import RECIPES
from lsqueeze.science.models import (
    MadryCNN,
    MadryWRN,
    SameConv,
    WideResNet,
    build_model,
    n_params,
    per_image_standardization,
)


def madry_w28_10_params(num_classes=10, units=5, filters=(16, 160, 320, 640)):
    """cifar10_challenge's model.py, counted by hand: bias-free 3×3 convs, BN γ and β, fc + bias."""
    conv = lambda cin, cout: 9 * cin * cout  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, filters[0])
    for stage in range(3):
        for j in range(units):
            cin = filters[stage] if j == 0 else filters[stage + 1]
            cout = filters[stage + 1]
            total += bn(cin) + conv(cin, cout) + bn(cout) + conv(cout, cout)
    return total + bn(filters[3]) + filters[3] * num_classes + num_classes


def test_full_size_parameter_counts():
    assert n_params(MadryCNN()) == 3_274_634
    assert madry_w28_10_params() == 45_901_914
    assert n_params(MadryWRN()) == 45_901_914
    assert n_params(MadryWRN(num_classes=100)) == madry_w28_10_params(100)
    assert n_params(WideResNet(28, 10)) == 36_479_194  # the standard WRN-28-10, 4 units per stage


def test_paper_recipes_build_the_authors_networks():
    for ds in ("cifar10", "cifar100"):
        model = build_model(RECIPES[ds], (3, 32, 32))
        assert isinstance(model, MadryWRN)
        assert n_params(model) == madry_w28_10_params(RECIPES[ds]["num_classes"])
        assert len(model.blocks) == 15  # 5 residual units per stage
    assert isinstance(build_model(RECIPES["mnist"], (1, 28, 28)), MadryCNN)
    # the offline stand-ins use the same architectures at tiny widths
    assert RECIPES["digits28"]["arch"]["name"] == RECIPES["mnist"]["arch"]["name"]
    assert RECIPES["digits32"]["arch"]["name"] == RECIPES["cifar10"]["arch"]["name"]
    tiny = build_model(RECIPES["digits32"], (3, 32, 32))
    assert n_params(tiny) < 200_000 and tiny(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="arch.name"):
        build_model({**RECIPES["cifar10"], "arch": {"name": "resnet"}}, (3, 32, 32))


def test_parameter_count_listing():
    out = subprocess.run([sys.executable, "-m", "lsqueeze.science.models"], capture_output=True, text=True,
                         check=True).stdout
    assert "cifar10" in out and "45,901,914" in out and "3,274,634" in out


def test_madry_cnn_init():
    torch.manual_seed(0)
    m = MadryCNN()
    for layer in (m.conv1, m.conv2, m.fc1, m.fc2):
        w = layer.weight
        assert w.abs().max() <= 0.2  # TF's truncated normal redraws beyond 2σ
        assert torch.all(layer.bias == 0.1)
    # σ 0.1 truncated at ±2σ has standard deviation 0.0880
    assert abs(m.fc1.weight.std().item() - 0.0880) < 0.001


def test_madry_wrn_init_and_batch_norm():
    torch.manual_seed(0)
    m = MadryWRN()
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == 31 and all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    for c in (convs[1], convs[-1]):  # 16→160 and 640→640: std √(2/(3·3·out))
        expect = math.sqrt(2.0 / (9 * c.out_channels))
        assert abs(c.weight.std().item() / expect - 1) < 0.05
    bound = math.sqrt(3.0 / 640)
    assert m.fc.weight.abs().max() <= bound and m.fc.weight.abs().max() > 0.95 * bound
    assert torch.all(m.fc.bias == 0)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert len(bns) == 31 and all(b.eps == 1e-3 and b.momentum == 0.1 for b in bns)


def test_same_padding_as_tensorflow():
    torch.manual_seed(0)
    conv = SameConv(3, 4, 3, stride=2)
    x = torch.rand(2, 3, 32, 32)
    # TF "SAME", stride 2, even size: no pad top/left, one pixel bottom/right
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2, padding=1), atol=1e-3)
    conv1 = SameConv(3, 4, 3, stride=1)
    assert torch.allclose(conv1(x), F.conv2d(x, conv1.weight, padding=1), atol=1e-6)


def test_per_image_standardization_as_tensorflow():
    x = torch.rand(3, 3, 32, 32)
    out = per_image_standardization(x)
    flat = x.flatten(1)
    ref = (flat - flat.mean(1, keepdim=True)) / flat.std(1, correction=0, keepdim=True)
    assert torch.allclose(out.flatten(1), ref, atol=1e-5)
    const = per_image_standardization(torch.full((1, 3, 32, 32), 0.5))  # std floor: no NaN
    assert torch.isfinite(const).all() and torch.all(const == 0)
    # the model standardises itself: a brightness/contrast change leaves the logits alone
    m = MadryWRN(units=1, widen=1, base=8).eval()
    assert torch.allclose(m(x), m(0.5 * x + 0.2), atol=1e-4)


def test_madry_units_shortcuts_and_leaky_relu():
    torch.manual_seed(0)
    m = MadryWRN(units=2, widen=2, base=4).eval()
    units = list(m.blocks)
    assert [u.shared for u in units] == [True, False, False, False, False, False]
    assert [u.stride for u in units] == [1, 1, 2, 1, 2, 1]
    # a unit whose residual branch is zero returns its shortcut: avg-pooled, zero-padded channels
    u = units[2]  # 8 -> 16 channels, stride 2, shortcut from the raw input
    with torch.no_grad():
        u.conv2.weight.zero_()
    x = torch.randn(2, 8, 16, 16)
    skip = F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, 4, 4))
    assert torch.allclose(u(x), skip, atol=1e-6)
    first = units[0]  # shared activation: the shortcut is leaky_relu(bn(x)), not x
    with torch.no_grad():
        first.conv2.weight.zero_()
    x = torch.randn(2, 4, 32, 32)
    act = F.leaky_relu(first.bn1(x), 0.1)
    assert torch.allclose(first(x), F.pad(act, (0, 0, 0, 0, 2, 2)), atol=1e-6)
    assert (first(x) < 0).any(), "leaky ReLU lets negative values through"
    with pytest.raises(ValueError, match="even difference"):
        MadryWRN(units=1, widen=2, base=3)
