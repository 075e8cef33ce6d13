"""Small DP-friendly reference models (no BatchNorm) used by ``veil dp train`` and benchmarks."""

from __future__ import annotations

import torch
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


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout // 2), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout // 2), cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.GroupNorm(min(8, cout // 2), cout))

    def forward(self, x):
        out = nn.functional.relu(self.norm1(self.conv1(x)))
        return nn.functional.relu(self.norm2(self.conv2(out)) + self.short(x))


def resnet20_gn(num_classes: int = 10) -> nn.Sequential:
    """ResNet-20 for CIFAR-10 (He et al. 2016, 3×3 basic blocks, 16/32/64 channels) with
    GroupNorm instead of BatchNorm (0.27M parameters).

    Example
    -------
    >>> sum(p.numel() for p in resnet20_gn().parameters())
    272474
    """
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False),
                               nn.GroupNorm(8, 16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


class LSTMClassifier(nn.Module):
    """Sequence classifier: an ``nn.LSTM`` (batch first) and a linear head on the last
    hidden state (e.g. MNIST read row by row: 28 steps of 28 pixels)."""

    def __init__(self, in_features: int = 28, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, _ = self.lstm(x.flatten(1, -2) if x.dim() > 3 else x)
        return self.head(out[:, -1])


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class _Positional(nn.Module):
    """Learnt position embeddings added to a (B, T, D) sequence."""

    def __init__(self, seq_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(seq_len, dim) * 0.02)  # not-secret: initial weights

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class TransformerClassifier(nn.Module):
    """A small pre-norm transformer encoder (``nn.MultiheadAttention`` blocks) over a
    sequence of feature vectors (e.g. MNIST rows as 28 tokens), mean-pooled."""

    def __init__(self, in_features: int = 28, dim: int = 32, heads: int = 4, depth: int = 2,
                 seq_len: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, dim)
        self.pos = _Positional(seq_len, dim)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = x.flatten(1, -2) if x.dim() > 3 else x
        return self.head(self.blocks(self.pos(self.embed(x))).mean(1))
