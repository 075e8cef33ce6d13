"""PrivacyEngine: one call turns (model, optimizer, data loader) into their DP-SGD versions.

It validates the model, wraps it for per-sample gradients, switches the loader to
Poisson sampling, wraps the optimizer (clip + noise), and keeps the accountant that
records every noisy step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from veil.csprng import CSPRNG
from veil.dp.accountants import Accountant, make_accountant
from veil.dp.calibration import noise_multiplier_for
from veil.dp.grad_sample import GradSampleModule
from veil.dp.optimizer import DPOptimizer, check_dp_settings
from veil.dp.sampling import PoissonBatchSampler, poisson_loader
from veil.dp.validators import validate


class PrivacyEngine:
    """DP-SGD for any PyTorch model.

    Parameters
    ----------
    accountant:
        ``"rdp"`` (Rényi DP) or ``"pld"`` (privacy loss distributions, tighter).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.randn(200, 5), torch.randint(0, 2, (200,)))  # not-secret
    >>> model = nn.Linear(5, 2)
    >>> engine = PrivacyEngine()
    >>> model, opt, loader = engine.make_private(
    ...     module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    ...     data_loader=DataLoader(data, batch_size=20), noise_multiplier=1.0,
    ...     max_grad_norm=1.0)
    >>> for x, y in loader:
    ...     opt.zero_grad()
    ...     nn.functional.cross_entropy(model(x), y).backward()
    ...     opt.step()
    >>> 0 < engine.get_epsilon(1e-5) < 10
    True
    """

    def __init__(self, accountant: str = "rdp", generator: CSPRNG | None = None) -> None:
        self.accountant: Accountant = make_accountant(accountant)
        self.generator = generator or CSPRNG()
        self.sample_rate: float | None = None

    def make_private(
        self, *, module: nn.Module, optimizer: Optimizer, data_loader: DataLoader,
        noise_multiplier: float, max_grad_norm: float, poisson_sampling: bool = True,
        loss_reduction: str = "mean",
    ) -> tuple[GradSampleModule, DPOptimizer, DataLoader]:
        """Wrap model, optimizer and loader for DP-SGD with a given σ and clipping norm C.

        With ``poisson_sampling`` (the default, and what the accountant assumes) the
        loader's batch size becomes the *expected* batch size.
        """
        check_dp_settings(noise_multiplier, max_grad_norm)
        validate(module)
        n = _check_loader(data_loader)
        if poisson_sampling:
            data_loader = poisson_loader(data_loader, generator=self.generator)
            sampler = data_loader.batch_sampler
            assert isinstance(sampler, PoissonBatchSampler)
            self.sample_rate = sampler.sample_rate
            expected = max(1, round(sampler.sample_rate * n))
        else:
            if data_loader.batch_size is None:
                raise ValueError("data_loader needs a batch_size")
            warnings.warn(
                "poisson_sampling=False: the accountants assume Poisson sampling; with "
                "shuffled fixed-size batches the reported ε is a heuristic, not a guarantee",
                stacklevel=2)
            self.sample_rate = data_loader.batch_size / n
            expected = data_loader.batch_size
        gsm = module if isinstance(module, GradSampleModule) else GradSampleModule(
            module, loss_reduction=loss_reduction)
        dp_opt = DPOptimizer(
            optimizer, gsm, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            expected_batch_size=expected, generator=self.generator,
        )
        dp_opt.step_hooks.append(self._record_step)
        return gsm, dp_opt, data_loader

    def make_private_with_epsilon(
        self, *, module: nn.Module, optimizer: Optimizer, data_loader: DataLoader,
        target_epsilon: float, target_delta: float, epochs: int, max_grad_norm: float,
        poisson_sampling: bool = True, loss_reduction: str = "mean",
    ) -> tuple[GradSampleModule, DPOptimizer, DataLoader]:
        """Like :meth:`make_private`, with σ calibrated so that ``epochs`` epochs spend
        at most ``target_epsilon`` (with this engine's accountant)."""
        n = _check_loader(data_loader)
        if not (math.isfinite(target_epsilon) and target_epsilon > 0):
            raise ValueError(f"target_epsilon must be a positive finite number, got {target_epsilon}")
        q = data_loader.batch_size / n
        steps = int(epochs) * max(1, round(n / data_loader.batch_size))
        sigma = noise_multiplier_for(target_epsilon, target_delta, q, steps,
                                     accountant=self.accountant.name)
        return self.make_private(
            module=module, optimizer=optimizer, data_loader=data_loader,
            noise_multiplier=sigma, max_grad_norm=max_grad_norm,
            poisson_sampling=poisson_sampling, loss_reduction=loss_reduction,
        )

    def _record_step(self, opt: DPOptimizer) -> None:
        assert self.sample_rate is not None
        self.accountant.step(noise_multiplier=opt.noise_multiplier, sample_rate=self.sample_rate)

    def get_epsilon(self, delta: float) -> float:
        """ε spent so far, at the given δ."""
        return self.accountant.get_epsilon(delta)


def _check_loader(data_loader: DataLoader) -> int:
    """The dataset size; refuses loaders whose sampling rate is not in (0, 1]."""
    n = len(data_loader.dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the data loader's dataset is empty")
    b = data_loader.batch_size
    if b is None:
        sampler = data_loader.batch_sampler
        if isinstance(sampler, PoissonBatchSampler):
            return n
        raise ValueError("data_loader needs a batch_size")
    if not 0 < b <= n:
        raise ValueError(f"batch_size {b} must be in [1, {n}] (the dataset size)")
    return n


def virtual_batches(
    data_loader: DataLoader, optimizer: DPOptimizer, max_physical_batch_size: int
) -> Iterator:
    """Split each (logical) batch into physical chunks of at most the given size.

    The optimizer is told to only accumulate on all chunks but the last, so a training
    loop written for one batch per step works unchanged; noise is added once per logical
    batch. Useful when the logical batch does not fit in memory.

    Example
    -------
    >>> # for x, y in virtual_batches(loader, opt, 64):   # loader batches of ~1024
    >>> #     opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """
    if max_physical_batch_size < 1:
        raise ValueError("max_physical_batch_size must be >= 1")
    for batch in data_loader:
        tensors = batch if isinstance(batch, list | tuple) else (batch,)
        size = tensors[0].shape[0]
        chunks = max(1, -(-size // max_physical_batch_size))
        for i in range(chunks):
            sl = slice(i * max_physical_batch_size, (i + 1) * max_physical_batch_size)
            part = [t[sl] if isinstance(t, torch.Tensor) else t for t in tensors]
            optimizer.signal_skip_step(i < chunks - 1)
            yield type(batch)(part) if isinstance(batch, list | tuple) else part[0]
