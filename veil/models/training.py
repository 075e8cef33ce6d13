"""Plaintext training helpers for the zoo, so that private accuracy can be measured.

The recipe is chosen to be cheap on a small CPU: the whole dataset lives in
memory as one normalised tensor, batches are slices of a shuffled index, Adam
with a one-cycle learning-rate schedule. On MNIST it takes LeNet past 99% and
Network1 past 98% test accuracy in two or three epochs.

Example
-------
>>> from veil.models import train_zoo_model
>>> model, meta = train_zoo_model("network1", epochs=3)   # doctest: +SKIP
>>> meta["test_accuracy"] > 0.98                          # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from veil.models.store import save_weights
from veil.models.zoo import build, entry

# Recipes that reach the target accuracy on MNIST in a few CPU minutes.
RECIPES: dict[str, dict[str, Any]] = {
    "network1": {"epochs": 6, "batch_size": 64, "lr": 2e-3},
    "network2": {"epochs": 3, "batch_size": 128, "lr": 3e-3},
    "lenet": {"epochs": 2, "batch_size": 128, "lr": 3e-3},
    "alexnet": {"epochs": 4, "batch_size": 128, "lr": 2e-3},
    "vgg16": {"epochs": 10, "batch_size": 128, "lr": 2e-3},
}

Progress = Callable[[int, int], None]


def dataset(name: str, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The real dataset of a zoo model (``mnist`` or ``cifar10``) as normalised tensors."""
    ds = entry(name).dataset
    if ds == "mnist":
        from veil.data import mnist_tensors
        return mnist_tensors(split, limit=limit)
    if ds == "cifar10":
        from veil.data import cifar10_tensors
        return cifar10_tensors(split, limit=limit)
    raise ValueError(f"{name!r} has no bundled dataset (it is benchmarked on random inputs)")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``.

    Example
    -------
    >>> import torch
    >>> from veil.models import build
    >>> acc = evaluate(build("network1"), torch.zeros(4, 1, 28, 28), torch.zeros(4).long())
    >>> 0.0 <= acc <= 1.0
    True
    """
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    progress: Progress | None = None,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place with Adam and a one-cycle schedule; returns it in eval mode.

    ``progress(step, total)`` is called after every step (for progress bars).
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as inputs, got {len(x)} and {len(y)}")
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    shuffler = torch.Generator().manual_seed(seed)  # data order only, not secret
    step = 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=shuffler)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total)
    return model.eval()


def train_zoo_model(
    name: str,
    epochs: int | None = None,
    limit: int | None = None,
    save: bool = True,
    progress: Progress | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a zoo network on its real dataset, measure test accuracy, cache the weights.

    Returns the trained model (eval mode) and its metadata: recipe, training
    time, test accuracy on the full test split.
    """
    key = name.lower()
    recipe = dict(RECIPES.get(key, {"epochs": 3, "batch_size": 128, "lr": 2e-3}))
    if epochs is not None:
        recipe["epochs"] = epochs
    torch.manual_seed(seed)  # weight init only, not secret
    model = build(key)
    x, y = dataset(key, "train", limit)
    start = time.perf_counter()
    train(model, x, y, progress=progress, seed=seed, **recipe)
    seconds = time.perf_counter() - start
    xt, yt = dataset(key, "test")
    meta = dict(recipe, train_images=len(x), train_seconds=round(seconds, 1),
                test_accuracy=evaluate(model, xt, yt), dataset=entry(key).dataset)
    if save:
        save_weights(model, key, meta)
    return model, meta


def pretrained(name: str, progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Cached trained weights of ``name``, training (and caching) them first when missing."""
    from veil.models.store import has_weights, load_weights

    if has_weights(name):
        return load_weights(name)
    return train_zoo_model(name, progress=progress)
