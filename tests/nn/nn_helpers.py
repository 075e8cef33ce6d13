"""Small models shared by the nn tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-trivial statistics so folding is really exercised."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(c, generator=gen) - 0.5)
    return model.eval()


class ResidualNet(nn.Module):
    """Conv + BN + ReLU, a residual block with a BN'd shortcut, avg pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv_a = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(4)
        self.conv_b = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.conv_b(y)
        x = F.relu(x + y)
        x = self.drop(x)
        x = self.pool(x).flatten(1)
        return self.fc(x)


class PoolNet(nn.Module):
    """Every pooling flavour, a standalone BatchNorm (not foldable) and view/reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 5)
        self.bn1d = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv(x)), 3, stride=1, padding=1)
        x = self.bn(x)  # after a pool: stays a standalone affine layer
        x = F.avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        return self.bn1d(self.fc(x))
