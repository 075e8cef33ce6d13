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
    """DP-SGD for any PyTorch model, with the interface of Opacus 1.6's ``PrivacyEngine``.

    Parameters
    ----------
    accountant:
        ``"rdp"`` (Rényi DP, the default), ``"pld"`` / ``"prv"`` (tight) or ``"gdp"``
        (CLT approximation, not a bound). Opacus defaults to ``"prv"``; Veil keeps RDP as
        the default because it is a closed-form bound that costs milliseconds at any
        step count, and its ε is the one most papers report; ``"pld"`` is 10-20 % tighter.
    secure_mode:
        Accepted for Opacus compatibility: Veil's noise always comes from its CSPRNG
        (:mod:`veil.csprng`); with ``secure_mode=True`` a seeded ``noise_generator`` is
        refused.
    generator:
        The CSPRNG for noise and Poisson sampling (default: a fresh OS-seeded one).

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

    def __init__(self, accountant: str = "rdp", secure_mode: bool = False,
                 generator: CSPRNG | None = None) -> None:
        self.accountant: Accountant = make_accountant(accountant)
        self.secure_mode = bool(secure_mode)
        self.generator = generator or CSPRNG()
        self.sample_rate: float | None = None

    def make_private(
        self, *, module: nn.Module, optimizer: Optimizer, data_loader: DataLoader,
        noise_multiplier: float, max_grad_norm: float | list[float],
        criterion: nn.Module | None = None, batch_first: bool = True,
        loss_reduction: str = "mean", poisson_sampling: bool = True, clipping: str = "flat",
        noise_generator=None, grad_sample_mode: str = "hooks", **clipping_kwargs,
    ):
        """Wrap model, optimizer and loader for DP-SGD with a given σ and clipping norm C.

        Returns ``(model, optimizer, data_loader)``, or ``(model, optimizer, criterion,
        data_loader)`` with ``grad_sample_mode="ghost"`` (as Opacus). With
        ``poisson_sampling`` (the default, and what the accountant assumes) the loader
        becomes a :class:`~veil.dp.data_loader.DPDataLoader` whose expected batch size is
        the loader's batch size.

        ``clipping``: ``"flat"`` (one norm C over all parameters), ``"per_layer"``
        (``max_grad_norm`` is a list, one C per parameter; the noise uses their L2
        norm) or ``"adaptive"`` (Andrew et al. 2021; keyword arguments
        ``target_unclipped_quantile``, ``clipbound_learning_rate``, ``max_clipbound``,
        ``min_clipbound``, ``unclipped_num_std``). ``grad_sample_mode`` (``"hooks"``,
        ``"functorch"``, ``"ew"``, ``"ghost"``) only selects Opacus' return shape:
        Veil picks ghost norms or materialised per-sample gradients per layer, exactly.
        """
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode must be one of {GRAD_SAMPLE_MODES}, got "
                             f"{grad_sample_mode!r}")
        norms = max_grad_norm if isinstance(max_grad_norm, list | tuple) else [max_grad_norm]
        if (clipping == "per_layer") != isinstance(max_grad_norm, list | tuple):
            raise ValueError("clipping='per_layer' takes a list of max_grad_norm (one per "
                             "parameter); the other modes a number")
        for c in norms:
            check_dp_settings(noise_multiplier, c)
        generator = self._noise_generator(noise_generator)
        validate(module)
        n = _check_loader(data_loader)
        if poisson_sampling:
            data_loader = poisson_loader(data_loader, generator=generator)
            self.sample_rate = data_loader.sample_rate
            expected = max(1, round(self.sample_rate * n))
        else:
            warnings.warn(
                "poisson_sampling=False: the accountants assume Poisson sampling; with "
                "shuffled fixed-size batches the reported ε is a heuristic, not a guarantee",
                stacklevel=2)
            self.sample_rate = data_loader.batch_size / n
            expected = data_loader.batch_size
        gsm = module if isinstance(module, GradSampleModule) else GradSampleModule(
            module, loss_reduction=loss_reduction, batch_first=batch_first)
        dp_opt = DPOptimizer(
            optimizer, gsm, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            expected_batch_size=expected, generator=generator, clipping=clipping,
            **clipping_kwargs,
        )
        dp_opt.step_hooks.append(self._record_step)
        if grad_sample_mode == "ghost":
            return gsm, dp_opt, criterion or nn.CrossEntropyLoss(), data_loader
        return gsm, dp_opt, data_loader

    def make_private_with_epsilon(
        self, *, module: nn.Module, optimizer: Optimizer, data_loader: DataLoader,
        target_epsilon: float, target_delta: float, epochs: int,
        max_grad_norm: float | list[float], epsilon_tolerance: float = 0.01, **kwargs,
    ):
        """Like :meth:`make_private`, with σ calibrated so that ``epochs`` epochs spend
        at most ``target_epsilon`` (with this engine's accountant; ε within
        ``epsilon_tolerance`` of the target, never above it)."""
        n = _check_loader(data_loader)
        if not (math.isfinite(target_epsilon) and target_epsilon > 0):
            raise ValueError(
                f"target_epsilon must be a positive finite number, got {target_epsilon}")
        if data_loader.batch_size is None:
            q = data_loader.sample_rate  # type: ignore[attr-defined]
            steps = int(epochs) * len(data_loader)
        else:
            q = data_loader.batch_size / n
            steps = int(epochs) * max(1, round(n / data_loader.batch_size))
        sigma = noise_multiplier_for(target_epsilon, target_delta, q, steps,
                                     accountant=self.accountant.name,
                                     tolerance=epsilon_tolerance)
        return self.make_private(module=module, optimizer=optimizer, data_loader=data_loader,
                                 noise_multiplier=sigma, max_grad_norm=max_grad_norm, **kwargs)

    def _noise_generator(self, noise_generator) -> CSPRNG:
        if noise_generator is None:
            return self.generator
        if isinstance(noise_generator, CSPRNG):
            return noise_generator
        if isinstance(noise_generator, torch.Generator):
            if self.secure_mode:
                raise ValueError("secure_mode=True: a seeded noise_generator would make the "
                                 "noise reproducible; leave it out")
            # Reproducible runs: the torch generator's seed seeds Veil's CSPRNG; the noise
            # itself is still drawn by the CSPRNG.
            return CSPRNG(noise_generator.initial_seed().to_bytes(16, "little"))
        raise TypeError("noise_generator must be a veil.csprng.CSPRNG or a torch.Generator")

    def _record_step(self, opt: DPOptimizer) -> None:
        assert self.sample_rate is not None
        self.accountant.step(noise_multiplier=opt.noise_multiplier, sample_rate=self.sample_rate)

    def get_epsilon(self, delta: float) -> float:
        """ε spent so far, at the given δ."""
        return self.accountant.get_epsilon(delta)

    def is_compatible(self, *, module: nn.Module, optimizer: Optimizer | None = None,
                      data_loader: DataLoader | None = None) -> bool:
        """Whether :meth:`make_private` accepts this model (and loader)."""
        from veil.dp.validators import ModuleValidator

        if not ModuleValidator.is_valid(module):
            return False
        try:
            if data_loader is not None:
                _check_loader(data_loader)
        except ValueError:
            return False
        return True

    def save_checkpoint(self, *, path, module: nn.Module, optimizer: Optimizer | None = None,
                        noise_scheduler=None, grad_clip_scheduler=None,
                        checkpoint_dict: dict | None = None,
                        module_state_dict_kwargs: dict | None = None,
                        torch_save_kwargs: dict | None = None) -> None:
        """Save model, accountant (and optimizer) state, with Opacus' keys."""
        ckpt = dict(checkpoint_dict or {})
        ckpt["module_state_dict"] = module.state_dict(**(module_state_dict_kwargs or {}))
        ckpt["privacy_accountant_state_dict"] = self.accountant.state_dict()
        if optimizer is not None:
            ckpt["optimizer_state_dict"] = optimizer.state_dict()
        if noise_scheduler is not None:
            ckpt["noise_scheduler_state_dict"] = noise_scheduler.state_dict()
        if grad_clip_scheduler is not None:
            ckpt["grad_clip_scheduler_state_dict"] = grad_clip_scheduler.state_dict()
        torch.save(ckpt, path, **(torch_save_kwargs or {}))

    def load_checkpoint(self, *, path, module: nn.Module, optimizer: Optimizer | None = None,
                        noise_scheduler=None, grad_clip_scheduler=None,
                        module_load_dict_kwargs: dict | None = None,
                        torch_load_kwargs: dict | None = None) -> dict:
        """Restore what :meth:`save_checkpoint` saved; returns the remaining entries."""
        ckpt = torch.load(path, **({"weights_only": False} | (torch_load_kwargs or {})))
        module.load_state_dict(ckpt.pop("module_state_dict"), **(module_load_dict_kwargs or {}))
        self.accountant.load_state_dict(ckpt.pop("privacy_accountant_state_dict"))
        opt_state = ckpt.pop("optimizer_state_dict", None)
        if optimizer is not None and opt_state is not None:
            optimizer.load_state_dict(opt_state)
        for key, obj in (("noise_scheduler_state_dict", noise_scheduler),
                         ("grad_clip_scheduler_state_dict", grad_clip_scheduler)):
            state = ckpt.pop(key, None)
            if obj is not None and state is not None:
                obj.load_state_dict(state)
        return ckpt


GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost")


def _check_loader(data_loader: DataLoader) -> int:
    """The dataset size; refuses loaders whose sampling rate is not in (0, 1]."""
    n = len(data_loader.dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the data loader's dataset is empty")
    b = data_loader.batch_size
    if b is None:
        if isinstance(data_loader.batch_sampler, PoissonBatchSampler):
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
