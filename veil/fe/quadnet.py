"""QuadNet: the quadratic network that functional encryption evaluates, and its integer twin.

``QuadNet`` is ``Linear(n -> k) -> square -> Linear(k -> L)`` (``k = 40`` by
default) on pixels quantised to ``pixel_bits`` bits. Integerisation
(:meth:`QuadNet.integerise`) folds the input scaling and normalisation into the
first layer, appends the bias as the weight of a constant input ``1``, and
rounds:

* pixels ``0..255`` -> levels ``0..2^pixel_bits - 1`` (3 bits by default),
* the projection ``P`` (``(n+1) x k``): weights on ``weight_bits`` signed bits
  (5 by default: ``-15..15``); the bias row uses the same scale and is wider
  (its width is reported by :attr:`IntQuadNet.widths`),
* the output layer ``D`` (``k x L``) on ``head_bits`` signed bits (6: ``-31..31``),
* the output bias stays a float added in the clear after decryption.

The integer outputs ``y = D^T (P^T x)^2`` are exactly what functional
decryption returns; ``logits = y / scale + b``. Training can be
quantisation-aware (straight-through rounding of ``P`` and ``D`` in the last
epochs) so that the integer model keeps the float model's accuracy.

Example
-------
>>> from veil.fe.quadnet import QuadNet, train_quadnet
>>> model = QuadNet()                                       # doctest: +SKIP
>>> train_quadnet(model, x_train, y_train, epochs=15)       # doctest: +SKIP
>>> net = model.integerise()                                # doctest: +SKIP
>>> net.predict(x_test)                                     # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from veil.data.mnist import MNIST_MEAN, MNIST_STD


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block.

    The models here are tiny: a second intra-op thread brings nothing, and on a
    busy machine its spin-waiting made training steps 20x slower (measured).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_shift(levels: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each 28x28 image by up to ``max_shift`` pixels (zero fill), batched."""
    if max_shift <= 0 or levels.shape[1] != 784:
        return levels
    b = levels.shape[0]
    img = torch.nn.functional.pad(levels.reshape(b, 28, 28), (max_shift,) * 4)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen)  # not-secret: augmentation
    ar = torch.arange(28)
    rows = (off[:, 0:1] + ar)[:, :, None]
    cols = (off[:, 1:2] + ar)[:, None, :]
    return img[torch.arange(b)[:, None, None], rows, cols].reshape(b, 784)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def quantise_pixels(images: torch.Tensor, pixel_bits: int) -> torch.Tensor:
    """Pixels ``0..255``, shape ``(N, ...)`` -> int64 levels ``0..2^b - 1``, shape ``(N, n)``."""
    if images.dtype.is_floating_point and not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinity")
    x = images.reshape(images.shape[0], -1).to(torch.float64)
    if x.numel() and (x.min() < 0 or x.max() > 255):
        raise ValueError("pixels must lie in 0..255")
    levels = (1 << pixel_bits) - 1
    return torch.round(x * (levels / 255.0)).to(torch.int64)


class QuadNet(nn.Module):
    """``Linear(n -> k) -> square -> Linear(k -> L)`` on quantised pixels.

    Parameters
    ----------
    n: input size (784 for MNIST).
    k: hidden size of the projection (40 in the original work).
    outputs: ``L``, the number of outputs of the quadratic part.
    pixel_bits, weight_bits, head_bits: integerisation bit widths (see module docs).
    """

    def __init__(self, n: int = 784, k: int = 40, outputs: int = 10, pixel_bits: int = 3,
                 weight_bits: int = 5, head_bits: int = 6, mean: float = MNIST_MEAN,
                 std: float = MNIST_STD) -> None:
        super().__init__()
        for name, v in (("pixel_bits", pixel_bits), ("weight_bits", weight_bits),
                        ("head_bits", head_bits)):
            if not 2 <= v <= 16:
                raise ValueError(f"{name} must be in [2, 16], got {v}")
        self.n, self.k, self.outputs = n, k, outputs
        self.pixel_bits, self.weight_bits, self.head_bits = pixel_bits, weight_bits, head_bits
        self.mean, self.std = mean, std
        self.proj = nn.Linear(n, k)
        self.head = nn.Linear(k, outputs)
        self.quant_aware = False

    @property
    def levels(self) -> int:
        return (1 << self.pixel_bits) - 1

    def _folded_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``A`` (k x n) and bias ``c`` acting on integer pixel levels."""
        a = self.proj.weight / (self.levels * self.std)
        c = self.proj.bias - (self.mean / self.std) * self.proj.weight.sum(1)
        return a, c

    def _scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, _ = self._folded_projection()
        alpha = ((1 << (self.weight_bits - 1)) - 1) / a.detach().abs().max().clamp_min(1e-12)
        beta = ((1 << (self.head_bits - 1)) - 1) / self.head.weight.detach().abs().max().clamp_min(
            1e-12)
        return alpha, beta

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Logits from integer pixel levels ``(N, n)`` (see :func:`quantise_pixels`)."""
        x = levels.to(self.proj.weight.dtype)
        a, c = self._folded_projection()
        w2 = self.head.weight
        if self.quant_aware:
            alpha, beta = self._scales()
            a, c = _round_ste(a * alpha) / alpha, _round_ste(c * alpha) / alpha
            w2 = _round_ste(w2 * beta) / beta
        h = x @ a.T + c
        return (h * h) @ w2.T + self.head.bias

    def features(self, levels: torch.Tensor) -> torch.Tensor:
        """The quadratic part's outputs without the output bias (what FE reveals, up to scale)."""
        return self.forward(levels) - self.head.bias

    @torch.no_grad()
    def integerise(self) -> IntQuadNet:
        """The integer twin: exactly what functional decryption computes."""
        m = copy.deepcopy(self).double()   # all in float64, as the twin's tests check
        a, c = m._folded_projection()
        alpha, beta = (float(s) for s in m._scales())
        P = torch.cat([a.T, c[None, :]], 0) * alpha
        D = m.head.weight.T * beta
        return IntQuadNet(
            P=torch.round(P).to(torch.int64).numpy(),
            D=torch.round(D).to(torch.int64).numpy(),
            scale=alpha * alpha * beta,
            bias=self.head.bias.double().numpy().copy(),
            pixel_bits=self.pixel_bits, weight_bits=self.weight_bits, head_bits=self.head_bits,
        )


@dataclass
class IntQuadNet:
    """Integer QuadNet: ``y = D^T (P^T [x; 1])^2`` on levels; ``logits = y / scale + bias``."""

    P: np.ndarray
    D: np.ndarray
    scale: float
    bias: np.ndarray
    pixel_bits: int
    weight_bits: int
    head_bits: int
    bound: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def widths(self) -> dict[str, int]:
        """Signed bit widths actually used (including the sign bit)."""
        def bits(m: np.ndarray) -> int:
            return int(math.ceil(math.log2(int(np.abs(m).max()) + 1))) + 1 if m.size else 1
        return {"pixel_bits": self.pixel_bits, "weight_bits": bits(self.P[:-1]),
                "bias_bits": bits(self.P[-1:]), "head_bits": bits(self.D),
                "output_bits": int(math.ceil(math.log2(max(self.bound, 1) + 1))) + 1}

    def encode(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Images (pixels 0..255) -> integer vectors ``[levels; 1]``, ``(N, n+1)`` int64."""
        t = torch.as_tensor(np.asarray(images))
        levels = quantise_pixels(t, self.pixel_bits).numpy()
        if levels.shape[1] + 1 != self.P.shape[0]:
            raise ValueError(f"images have {levels.shape[1]} pixels, the model expects "
                             f"{self.P.shape[0] - 1}")
        return np.concatenate([levels, np.ones((levels.shape[0], 1), np.int64)], 1)

    def quadratic(self, x: np.ndarray) -> np.ndarray:
        """Exact integer outputs for encoded inputs ``(N, n+1)`` (int64, no overflow here)."""
        h = np.asarray(x, dtype=np.int64) @ self.P
        return (h * h) @ self.D

    def logits(self, y: np.ndarray) -> np.ndarray:
        """The plaintext rest of the network: rescale and add the output bias."""
        return np.asarray(y, dtype=np.float64) / self.scale + self.bias

    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.logits(self.quadratic(self.encode(images))).argmax(1)

    def calibrate_bound(self, images: torch.Tensor | np.ndarray, margin: float = 2.0) -> int:
        """Set :attr:`bound` to ``margin`` x the largest ``|y|`` seen on ``images``."""
        y = self.quadratic(self.encode(images))
        self.bound = int(math.ceil(float(np.abs(y).max()) * margin))
        return self.bound

    def worst_case_bound(self) -> int:
        """A bound on ``|y|`` that holds for every possible input (usually far larger)."""
        levels = (1 << self.pixel_bits) - 1
        w, bias = self.P[:-1].astype(object), self.P[-1].astype(object)
        hi = levels * np.where(w > 0, w, 0).sum(0) + bias
        lo = levels * np.where(w < 0, w, 0).sum(0) + bias
        hmax = np.maximum(np.abs(hi), np.abs(lo))
        return int(sum(int(abs(d)) * int(h) ** 2 for row, h in zip(self.D, hmax, strict=True)
                       for d in row))

    def to_dict(self) -> dict:
        return {"P": self.P.tolist(), "D": self.D.tolist(), "scale": self.scale,
                "bias": self.bias.tolist(), "pixel_bits": self.pixel_bits,
                "weight_bits": self.weight_bits, "head_bits": self.head_bits,
                "bound": self.bound, "meta": self.meta}

    @staticmethod
    def from_dict(d: dict) -> IntQuadNet:
        return IntQuadNet(np.array(d["P"], np.int64), np.array(d["D"], np.int64),
                          float(d["scale"]), np.array(d["bias"], np.float64),
                          int(d["pixel_bits"]), int(d["weight_bits"]), int(d["head_bits"]),
                          int(d.get("bound", 0)), dict(d.get("meta", {})))


def train_quadnet(
    model: QuadNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 15,
    batch_size: int = 128,
    lr: float = 3e-3,
    quant_aware_epochs: int = 4,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    max_shift: int = 0,
) -> QuadNet:
    """Train ``model`` with Adam and a one-cycle schedule; the last epochs quantisation-aware.

    ``max_shift``: augment 28x28 inputs with random translations of up to that many pixels.

    ``images``: pixels 0..255 ``(N, 28, 28)`` or ``(N, n)``; ``labels``: ``(N,)``.
    ``progress(epoch, loss)`` is called after every epoch.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError("images and labels differ in length")
    with single_thread():
        return _train(model, images, labels, epochs, batch_size, lr, quant_aware_epochs, seed,
                      progress, max_shift)


def _train(model: QuadNet, images: torch.Tensor, labels: torch.Tensor, epochs: int,
           batch_size: int, lr: float, quant_aware_epochs: int, seed: int,
           progress: Callable[[int, float], None] | None, max_shift: int) -> QuadNet:
    x = quantise_pixels(images, model.pixel_bits).float()
    y = labels.long()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps)
    model.train()
    for epoch in range(epochs):
        model.quant_aware = epoch >= epochs - quant_aware_epochs
        perm = torch.randperm(len(x), generator=gen)  # not-secret: minibatch order
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(random_shift(x[idx], max_shift, gen)),
                                               y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if progress is not None:
            progress(epoch, total / len(x))
    model.quant_aware = False
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: QuadNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Float accuracy on pixel images."""
    x = quantise_pixels(images, model.pixel_bits).float()
    return float((model(x).argmax(1) == labels).float().mean())
