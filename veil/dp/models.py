"""Small DP-friendly reference models (no BatchNorm) used by ``veil dp train`` and benchmarks."""

from __future__ import annotations

from torch import nn


def mnist_cnn() -> nn.Sequential:
    """The small CNN of the Opacus/TF-Privacy MNIST examples (26k parameters).

    Example
    -------
    >>> sum(p.numel() for p in mnist_cnn().parameters())
    26010
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )


def cifar_cnn() -> nn.Sequential:
    """A small CIFAR-10 CNN with GroupNorm (BatchNorm is not DP-compatible)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32), *block(32, 32), nn.AvgPool2d(2),
        *block(32, 64), *block(64, 64), nn.AvgPool2d(2),
        *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def linear_probe(in_features: int, num_classes: int = 10) -> nn.Sequential:
    """Flatten + Linear (logistic regression), for DP-SGD on features or pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes, bias=False))
