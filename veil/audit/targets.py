"""Reference targets: small classifiers, datasets and training recipes for the attacks.

A :class:`Recipe` says how to train a fresh model (architecture, epochs, optimiser,
regularisation, optionally DP-SGD through :mod:`veil.dp`); :func:`train_fn` turns it
into the ``train_fn(indices) -> model`` callable that the membership attacks use to
train shadow models, so the target and its shadows share one recipe.

Randomness here (initialisation, shuffling) is not secret and uses torch's seeded
generators so that experiments are reproducible.

Example
-------
>>> from veil.audit.targets import Recipe, train_fn
>>> import torch, numpy as np
>>> x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
>>> fit = train_fn(Recipe(arch="mlp", epochs=2, hidden=16), x, y, num_classes=3)
>>> model = fit(np.arange(32))
>>> model(x[:2]).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from veil.audit.dp_training import train_dp_sgd

DATASETS = ("mnist", "cifar10", "digits")


def load_dataset(name: str, split: str = "train", limit: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images ``(N, C, H, W)`` float32 and labels for a built-in dataset.

    ``digits`` is scikit-learn's bundled 8x8 digits (1,797 images, no split: the
    ``test`` split is its last 30%), handy for fast checks.
    """
    if name == "mnist":
        from veil.data import mnist_tensors
        return mnist_tensors(split, limit)
    if name == "cifar10":
        from veil.data import cifar10_tensors
        return cifar10_tensors(split, limit)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = (x - 0.3) / 0.4
        y = torch.tensor(d.target, dtype=torch.long)
        cut = int(0.7 * len(x))
        x, y = (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
        return (x[:limit], y[:limit]) if limit is not None else (x, y)
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def pixel_range(name: str) -> tuple[float, float]:
    """The normalised values of pixel intensities 0 and 1 (per-dataset scalar bounds)."""
    if name == "mnist":
        from veil.data import MNIST_MEAN, MNIST_STD
        return (-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD)
    if name == "digits":
        return (-0.3 / 0.4, 0.7 / 0.4)
    if name == "cifar10":
        from veil.data.cifar import CIFAR10_MEAN, CIFAR10_STD
        lo = min(-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True))
        hi = max((1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD, strict=True))
        return (lo, hi)
    raise ValueError(f"unknown dataset {name!r}")


def to_unit(name: str, x: torch.Tensor) -> torch.Tensor:
    """Undo a dataset's normalisation: images in ``[0, 1]`` (for PSNR/SSIM and plots)."""
    if name == "mnist":
        from veil.data import MNIST_MEAN, MNIST_STD
        return (x * MNIST_STD + MNIST_MEAN).clamp(0, 1)
    if name == "digits":
        return (x * 0.4 + 0.3).clamp(0, 1)
    if name == "cifar10":
        from veil.data.cifar import CIFAR10_MEAN, CIFAR10_STD
        m = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        s = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        return (x * s + m).clamp(0, 1)
    raise ValueError(f"unknown dataset {name!r}")


class MLP(nn.Module):
    """Flatten, one or more ReLU hidden layers, linear output (``hidden=0``: softmax regression)."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, hidden: int | tuple = 256):
        super().__init__()
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        widths = tuple(w for w in widths if w > 0)
        layers: list[nn.Module] = [nn.Flatten()]
        d = int(np.prod(in_shape))
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    """Two conv layers (sigmoid-free, ReLU) and a linear head: the small CNN of the examples."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int = 16,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), activation(), nn.Conv2d(width, width, 3, stride=2,
                                                                       padding=1), activation(),
        )
        self.head = nn.Linear(width * ((h + 1) // 2) * ((w + 1) // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def build_model(arch: str, in_shape: tuple[int, ...], num_classes: int,
                hidden: int | tuple = 256) -> nn.Module:
    """``"mlp"``, ``"linear"`` (softmax regression) or ``"cnn"``."""
    if arch == "mlp":
        return MLP(in_shape, num_classes, hidden)
    if arch == "linear":
        return MLP(in_shape, num_classes, 0)
    if arch == "cnn":
        return ConvNet(in_shape, num_classes, width=hidden if isinstance(hidden, int) else 16)
    raise ValueError(f"unknown architecture {arch!r}; choose mlp, linear or cnn")


@dataclass(frozen=True)
class Recipe:
    """How to train a fresh model.

    Attributes
    ----------
    arch, hidden: architecture (see :func:`build_model`).
    epochs, batch_size, lr, weight_decay, optimizer: the training loop (``adam`` or ``sgd``).
    dp_noise, dp_clip: if ``dp_noise`` is set, train with DP-SGD from :mod:`veil.dp`
        (noise multiplier, per-example clipping norm; Poisson sampling at batch/n).
    seed: initialisation and shuffling seed; ``None`` draws one per model.
    """

    arch: str = "mlp"
    hidden: int | tuple = 256
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    dp_noise: float | None = None
    dp_clip: float = 1.0
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {recipe.optimizer!r}")


def train(recipe: Recipe, x: torch.Tensor, y: torch.Tensor, num_classes: int,
          seed: int | None = None) -> nn.Module:
    """Train a fresh model of ``recipe`` on ``(x, y)`` and return it in eval mode."""
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need matching non-empty inputs and labels, got {len(x)} and {len(y)}")
    seed = recipe.seed if recipe.seed is not None else seed
    gen = torch.Generator().manual_seed(seed if seed is not None else
                                        int(np.random.SeedSequence().entropy % 2**63))
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        model = build_model(recipe.arch, tuple(x.shape[1:]), num_classes, recipe.hidden)
    if recipe.dp_noise is not None:
        return _train_dp(recipe, model, x, y)
    opt = _optimizer(recipe, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _train_dp(recipe: Recipe, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """DP-SGD through :mod:`veil.dp` (the library's engine; not re-implemented here)."""
    return train_dp_sgd(model, x, y, recipe, _optimizer(recipe, model.parameters())).eval()


def train_fn(recipe: Recipe, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
             seed: int | None = None) -> Callable[[np.ndarray], nn.Module]:
    """The ``train_fn(indices) -> model`` callable for a pool ``(x, y)``.

    Each call trains a fresh model with a different seed (derived from ``seed``).
    """
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    counter = iter(range(10**9))
    base = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**31)

    def fit(indices: np.ndarray) -> nn.Module:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return train(recipe, x[idx], y[idx], num_classes, seed=base * 7919 + next(counter))

    return fit


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / max(len(x), 1)


__all__ = ["DATASETS", "MLP", "ConvNet", "Recipe", "accuracy", "build_model", "load_dataset",
           "pixel_range", "replace", "to_unit", "train", "train_fn"]
