"""The paper's two architectures: Madry's MNIST CNN and the WRN-28-10 of Madry's CIFAR code."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class MadryCNN(nn.Module):
    """conv5x5-32 -> pool -> conv5x5-64 -> pool -> fc1024 -> fc10 (3,274,634 parameters)."""

    def __init__(self, in_channels=1, num_classes=10, conv1=32, conv2=64, fc=1024, image_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1, 5, padding=2)
        self.conv2 = nn.Conv2d(conv1, conv2, 5, padding=2)
        side = image_size // 4
        self.fc1 = nn.Linear(conv2 * side * side, fc)
        self.fc2 = nn.Linear(fc, num_classes)

    def features(self, x):
        """Penultimate activations (the fc1024 layer), used by the activation analysis."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


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
    """WRN-depth-widen (pre-activation). WRN-28-10 has about 36.5 M parameters."""

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


def build_model(recipe: dict, image_shape) -> nn.Module:
    arch = dict(recipe["arch"])
    name = arch.pop("name")
    c, h, _ = image_shape
    if name == "madry_cnn":
        return MadryCNN(in_channels=c, num_classes=recipe["num_classes"], image_size=h, **arch)
    if name == "wrn":
        return WideResNet(num_classes=recipe["num_classes"], in_channels=c, **arch)
    raise ValueError(f"recipe arch.name: unknown architecture {name!r} (known: madry_cnn, wrn)")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
