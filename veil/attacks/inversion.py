"""Model inversion (Fredrikson, Jha, Ristenpart 2015): a class representative from a classifier.

Starting from a blank input, gradient descent on the cost ``1 - f_c(x)`` (the
model's confidence in class ``c``) reconstructs an input the model considers
typical of ``c``; for a model trained on few examples per class (faces in the paper)
this is close to the training examples themselves.

* **White box**: exact gradients through the model (autograd).
* **Black box**: only confidence scores; the gradient is estimated from scores by
  antithetic Gaussian smoothing (a finite-difference estimator over random
  directions), so the attacker needs nothing but ``x -> probabilities``.
* **Countermeasure**: rounding the confidences the API returns (the paper's
  proposal); the black-box gradient estimate then vanishes on flat steps.

The paper's ``Process`` step (a denoising filter between gradient steps) is the
optional ``denoise`` argument; the descent stops after ``max_iter`` steps, when the
cost has not improved for ``patience`` steps, or when it reaches ``min_cost``.

Example
-------
>>> import torch
>>> from veil.attacks.inversion import invert_class
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
>>> res = invert_class(model, 1, (1, 2, 2), max_iter=200, lr=0.5)
>>> res.confidence > 0.9
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from veil.attacks.scores import ScoreFn


@dataclass
class InversionResult:
    """One reconstructed class representative.

    Attributes
    ----------
    image: the reconstruction, shape of one input.
    target: the class inverted.
    confidence: the model's confidence in ``target`` on the reconstruction.
    predicted: the model's top class on the reconstruction.
    iterations, queries: descent steps taken; score queries spent (black box).
    history: cost ``1 - f_c(x)`` per step.
    """

    image: torch.Tensor
    target: int
    confidence: float
    predicted: int
    iterations: int
    queries: int
    history: list[float]


def _start(input_shape: Sequence[int], bounds: tuple[float, float] | None,
           init: torch.Tensor | None) -> torch.Tensor:
    if init is not None:
        return init.detach().clone().reshape(1, *input_shape).float()
    x = torch.zeros(1, *input_shape)
    if bounds is not None:
        x += bounds[0]          # a black image, as in the paper (all-zero features)
    return x


def _descend(cost_and_grad: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
             x: torch.Tensor, lr: float, max_iter: int, patience: int, min_cost: float,
             bounds: tuple[float, float] | None,
             denoise: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple:
    best_x, best_cost, since = x.clone(), float("inf"), 0
    history: list[float] = []
    for _ in range(max_iter):
        cost, grad = cost_and_grad(x)
        history.append(cost)
        if cost < best_cost - 1e-9:
            best_x, best_cost, since = x.clone(), cost, 0
        else:
            since += 1
        if cost <= min_cost or since >= patience:
            break
        x = x - lr * grad
        if denoise is not None:
            x = denoise(x)
        if bounds is not None:
            x = x.clamp(*bounds)
    return best_x, history


def invert_class(model: nn.Module, target: int, input_shape: Sequence[int], max_iter: int = 500,
                 lr: float = 1.0, patience: int = 100, min_cost: float = 1e-3,
                 bounds: tuple[float, float] | None = None,
                 denoise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 init: torch.Tensor | None = None) -> InversionResult:
    """White-box inversion of class ``target`` by gradient descent on ``1 - softmax(model(x))_c``.

    Parameters
    ----------
    model: a classifier returning logits.
    input_shape: shape of one input, e.g. ``(1, 28, 28)``.
    lr: step size (the paper's lambda).
    bounds: valid input range (normalised pixel values), enforced after every step.
    """
    model.eval()

    def cost_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        cost = 1 - torch.softmax(model(x), 1)[0, target]
        (grad,) = torch.autograd.grad(cost, x)
        return float(cost.detach()), grad

    x, history = _descend(cost_and_grad, _start(input_shape, bounds, init), lr, max_iter,
                          patience, min_cost, bounds, denoise)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)[0]
    return InversionResult(x[0], target, float(p[target]), int(p.argmax()), len(history), 0,
                           history)


def estimate_gradient(score_fn: ScoreFn, x: torch.Tensor, target: int, directions: int,
                      sigma: float, gen: torch.Generator) -> tuple[float, torch.Tensor]:
    """Cost ``1 - p_c(x)`` and its gradient estimated from scores only.

    Antithetic Gaussian smoothing: ``g = sum_i (c(x + s u_i) - c(x - s u_i)) u_i / (2 s n)``
    over ``n`` random directions ``u_i`` (one batched query of ``2n + 1`` inputs).
    """
    u = torch.randn(directions, *x.shape[1:], generator=gen)  # not-secret: probe directions
    batch = torch.cat([x, x + sigma * u, x - sigma * u])
    p = torch.as_tensor(score_fn(batch), dtype=torch.float64)[:, target]
    cost = 1 - p
    diff = (cost[1:directions + 1] - cost[directions + 1:]).float()
    grad = (diff.view(-1, *[1] * (x.dim() - 1)) * u).sum(0, keepdim=True) / (2 * sigma * directions)
    return float(cost[0]), grad


def invert_class_blackbox(score_fn: ScoreFn, target: int, input_shape: Sequence[int],
                          max_iter: int = 300, lr: float = 1.0, directions: int = 50,
                          sigma: float = 0.05, patience: int = 100, min_cost: float = 1e-3,
                          bounds: tuple[float, float] | None = None,
                          denoise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          seed: int = 0) -> InversionResult:
    """Black-box inversion: the same descent with gradients estimated from scores only.

    Parameters
    ----------
    score_fn: ``x -> probabilities``; nothing else about the model is used.
    directions: random probe directions per step (``2 * directions + 1`` queries per step).
    sigma: probe radius (normalised input units).
    """
    gen = torch.Generator().manual_seed(seed)
    queries = 0

    def cost_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal queries
        queries += 2 * directions + 1
        return estimate_gradient(score_fn, x, target, directions, sigma, gen)

    x, history = _descend(cost_and_grad, _start(input_shape, bounds, None), lr, max_iter,
                          patience, min_cost, bounds, denoise)
    p = torch.as_tensor(score_fn(x), dtype=torch.float64)[0]
    return InversionResult(x[0], target, float(p[target]), int(p.argmax()), len(history),
                           queries + 1, history)


def similarity_to_mean(image: torch.Tensor, class_mean: torch.Tensor) -> dict[str, float]:
    """How close a reconstruction is to its class's mean image (inputs in ``[0, 1]``).

    Returns the Pearson correlation of pixels, the SSIM (scikit-image) and the MSE.
    """
    from skimage.metrics import structural_similarity

    a = torch.as_tensor(image, dtype=torch.float64).clamp(0, 1).numpy()
    b = torch.as_tensor(class_mean, dtype=torch.float64).clamp(0, 1).numpy()
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and class mean {b.shape} differ in shape")
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 else 0.0
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=win))
    return {"correlation": corr, "ssim": ssim, "mse": float(((a - b) ** 2).mean())}
