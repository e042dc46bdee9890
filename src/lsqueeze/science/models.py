"""The paper's architectures, as the authors ran them, and a standard WRN for comparison.

- `madry_cnn`: Madry et al.'s MNIST CNN (madrylab/mnist_challenge, model.py), with its init.
- `madry_wrn`: Madry et al.'s CIFAR "w28-10" (madrylab/cifar10_challenge, model.py), which the
  authors' own code (ashafahi/free_adv_train, model.py) reuses unchanged.
- `wrn`: the standard pre-activation WRN-depth-widen (Zagoruyko & Komodakis), PyTorch init.

FIDELITY.md follows each detail to its source.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn


class MadryCNN(nn.Module):
    """conv5x5-32 -> pool -> conv5x5-64 -> pool -> fc1024 -> fc10 (3,274,634 parameters).

    Init as mnist_challenge's `_weight_variable` / `_bias_variable`: every weight truncated normal
    σ 0.1 (TF redraws beyond 2σ), every bias 0.1.
    """

    def __init__(self, in_channels=1, num_classes=10, conv1=32, conv2=64, fc=1024, image_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1, 5, padding=2)
        self.conv2 = nn.Conv2d(conv1, conv2, 5, padding=2)
        side = image_size // 4
        self.fc1 = nn.Linear(conv2 * side * side, fc)
        self.fc2 = nn.Linear(fc, num_classes)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(layer.bias, 0.1)

    def features(self, x):
        """Penultimate activations (the fc1024 layer), used by the activation analysis."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


def per_image_standardization(x, pixel_scale: float = 255.0):
    """tf.image.per_image_standardization: (x − mean) / max(std, 1/√N), population std.

    Madry's model sees 0–255 pixels, ours [0,1]: the quotient is scale-free except for the floor
    1/√N, which in our units is 1/(pixel_scale·√N). ε stays measured in pixel space."""
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.flatten(1).std(dim=1, correction=0).view(-1, 1, 1, 1)
    return (x - mean) / std.clamp_min(1.0 / (pixel_scale * math.sqrt(n)))


class SameConv(nn.Conv2d):
    """A bias-free k×k convolution with TF "SAME" padding (a stride-2 convolution of an even-sized
    image pads one pixel at the bottom/right only, where PyTorch's padding=1 pads both sides) and
    cifar10_challenge's init: normal, std √(2 / (k·k·out_channels))."""

    def __init__(self, cin, cout, k=3, stride=1):
        super().__init__(cin, cout, k, stride, padding=0, bias=False)
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (k * k * cout)))

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
            s, k = self.stride[0], self.kernel_size[0]
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(c):
    # tf.contrib.layers.batch_norm(decay=.9), ε its default 1e-3; torch momentum = 1 − decay
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.1)


class _MadryUnit(nn.Module):
    """cifar10_challenge's `_residual`: BN-leaky-ReLU, conv(stride), BN-leaky-ReLU, conv, + shortcut.

    With `activate_before_residual` (stage 1's first unit only) the shortcut takes the activated
    input, otherwise the raw one; a shortcut that changes width is avg-pooled by the stride and
    zero-padded in channels, never convolved."""

    def __init__(self, cin, cout, stride, activate_before_residual):
        super().__init__()
        if (cout - cin) % 2:
            raise ValueError(f"madry_wrn: widths {cin} -> {cout} differ by an odd number of "
                             "channels; the zero-pad shortcut needs an even difference")
        self.cin, self.cout, self.stride = cin, cout, stride
        self.shared = activate_before_residual
        self.bn1, self.conv1 = _bn(cin), SameConv(cin, cout, 3, stride)
        self.bn2, self.conv2 = _bn(cout), SameConv(cout, cout, 3, 1)

    def forward(self, x):
        o = F.leaky_relu(self.bn1(x), 0.1)
        skip = o if self.shared else x
        o = self.conv2(F.leaky_relu(self.bn2(self.conv1(o)), 0.1))
        if self.cin != self.cout:
            if self.stride > 1:
                skip = F.avg_pool2d(skip, self.stride, self.stride)
            p = (self.cout - self.cin) // 2
            skip = F.pad(skip, (0, 0, 0, 0, p, p))
        return o + skip


class MadryWRN(nn.Module):
    """Madry's "w28-10": init conv 16, three stages of `units` residual units with widths
    base·widen, 2·base·widen, 4·base·widen (160/320/640), strides 1/2/2, final BN, leaky ReLU 0.1,
    global average pool, fc. The defaults are the network the authors ran (45,901,914 parameters
    for 10 classes); small `units`, `base` and `widen` give test-sized versions of the same design.
    """

    def __init__(self, num_classes=10, in_channels=3, units=5, widen=10, base=16,
                 pixel_scale=255.0):
        super().__init__()
        self.pixel_scale = pixel_scale
        widths = [base, base * widen, 2 * base * widen, 4 * base * widen]
        self.conv = SameConv(in_channels, base, 3, 1)
        layers = []
        for stage, stride in enumerate((1, 2, 2)):
            for j in range(units):
                cin = widths[stage] if j == 0 else widths[stage + 1]
                layers.append(_MadryUnit(cin, widths[stage + 1], stride if j == 0 else 1,
                                         activate_before_residual=(stage == 0 and j == 0)))
        self.blocks = nn.Sequential(*layers)
        self.bn = _bn(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)
        # tf.uniform_unit_scaling_initializer(factor=1.0): U(±√(3/fan_in)); biases 0
        bound = math.sqrt(3.0 / widths[-1])
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def features(self, x):
        """The pooled penultimate activations (Madry's `neck`), used by the activation analysis."""
        o = self.blocks(self.conv(per_image_standardization(x, self.pixel_scale)))
        o = F.leaky_relu(self.bn(o), 0.1)
        return o.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(F.relu(self.bn2(o)))
        return o + skip


class WideResNet(nn.Module):
    """The standard WRN-depth-widen (pre-activation, ReLU, 1×1-conv shortcuts, PyTorch init):
    WRN-28-10 has 4 units per stage and 36,479,194 parameters. Not what the authors ran."""

    def __init__(self, depth=28, widen=10, num_classes=10, in_channels=3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                layers.append(_Block(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x):
        # Madry's CIFAR model standardizes each image first; attacks and ε stay in [0,1] pixel space.
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.flatten(1).std(dim=1).view(-1, 1, 1, 1).clamp_min(1.0 / x[0].numel() ** 0.5)
        x = (x - mean) / std
        o = F.relu(self.bn(self.blocks(self.conv(x))))
        return F.adaptive_avg_pool2d(o, 1).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


ARCHS = ("madry_cnn", "madry_wrn", "wrn")  # what build_model builds; data/schema.json lists the same


def build_model(recipe: dict, image_shape) -> nn.Module:
    arch = dict(recipe["arch"])
    name = arch.pop("name")
    c, h, _ = image_shape
    if name == "madry_cnn":
        return MadryCNN(in_channels=c, num_classes=recipe["num_classes"], image_size=h, **arch)
    if name == "madry_wrn":
        return MadryWRN(num_classes=recipe["num_classes"], in_channels=c, **arch)
    if name == "wrn":
        return WideResNet(num_classes=recipe["num_classes"], in_channels=c, **arch)
    raise ValueError(f"recipe arch.name: unknown architecture {name!r} (known: {', '.join(ARCHS)})")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":  # `python -m lsqueeze.science.models`: each recipe's architecture
    # and parameter count.
    # Here, not in a function: the recipes sit above the models, and code under __main__ is no part
    # of the training code's fingerprint (a job never runs it).
    from lsqueeze.registries.datasets import DATASETS

    for name, ds in DATASETS.items():
        recipe = ds.recipe
        model = build_model(recipe, ds.image_shape)
        print(f"{name:10s} {recipe['arch']['name']:10s} {n_params(model):>12,} parameters")
