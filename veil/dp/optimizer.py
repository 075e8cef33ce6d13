"""DPOptimizer: clip per-sample gradients, add Gaussian noise, then the wrapped step."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim import Optimizer

from veil.csprng import CSPRNG
from veil.dp.grad_sample import GradSampleModule


class DPOptimizer(Optimizer):
    """Wraps a torch optimizer for DP-SGD (Abadi et al. 2016).

    On :meth:`step`: each sample's gradient (over all parameters) is clipped to norm
    ``max_grad_norm`` = C, the clipped gradients are summed (over all physical batches
    of a logical batch, see :meth:`virtual_step`), Gaussian noise N(0, σ²C²) from
    :mod:`veil.csprng` is added once per logical batch, the sum is divided by the
    *expected* batch size (fixed, so that the sensitivity stays C / expected size under
    Poisson sampling) and the wrapped optimizer steps.

    Parameters
    ----------
    optimizer:
        Any torch optimizer over the model's parameters.
    module:
        The :class:`GradSampleModule` wrapping the model.
    noise_multiplier, max_grad_norm:
        σ and C.
    expected_batch_size:
        q · n, the logical batch size the noise is calibrated for.
    """

    def __init__(
        self, optimizer: Optimizer, module: GradSampleModule, *, noise_multiplier: float,
        max_grad_norm: float | list[float], expected_batch_size: int,
        generator: CSPRNG | None = None, clipping: str = "flat",
        target_unclipped_quantile: float = 0.5, clipbound_learning_rate: float = 0.2,
        max_clipbound: float = 1e8, min_clipbound: float = 1e-8,
        unclipped_num_std: float | None = None,
    ) -> None:
        if clipping not in ("flat", "per_layer", "adaptive"):
            raise ValueError(
                f"clipping must be 'flat', 'per_layer' or 'adaptive', got {clipping!r}")
        if expected_batch_size <= 0:
            raise ValueError("expected_batch_size must be positive")
        self.params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        self.clipping = clipping
        if clipping == "per_layer":
            norms = [float(c) for c in max_grad_norm]  # type: ignore[union-attr]
            if len(norms) != len(self.params):
                raise ValueError(f"per_layer clipping needs one max_grad_norm per trainable "
                                 f"parameter ({len(self.params)}), got {len(norms)}")
            for c in norms:
                check_dp_settings(noise_multiplier, c)
            self.max_grad_norms = norms
            # the L2 norm of the per-parameter bounds bounds each example's whole gradient
            max_grad_norm = math.sqrt(sum(c * c for c in norms))
        check_dp_settings(noise_multiplier, max_grad_norm)  # type: ignore[arg-type]
        self.original_optimizer = optimizer
        self.module = module
        self.noise_multiplier = float(noise_multiplier)
        self.max_grad_norm = float(max_grad_norm)  # type: ignore[arg-type]
        self.expected_batch_size = int(expected_batch_size)
        self._grad_noise_multiplier = self.noise_multiplier
        if clipping == "adaptive":
            # Andrew et al. 2021: the unclipped count gets noise σ_b; gradient noise σ_Δ
            # with σ_Δ^-2 + (2σ_b)^-2 = σ^-2 keeps the pair exactly as private as σ alone,
            # so the accountant records σ.
            std = unclipped_num_std if unclipped_num_std is not None else expected_batch_size / 20
            if not 2 * std > self.noise_multiplier > 0:
                raise ValueError("adaptive clipping needs 0 < noise_multiplier < "
                                 "2 * unclipped_num_std")
            self._grad_noise_multiplier = (self.noise_multiplier**-2 - (2 * std) ** -2) ** -0.5
            self.unclipped_num_std = float(std)
            self.target_unclipped_quantile = float(target_unclipped_quantile)
            self.clipbound_learning_rate = float(clipbound_learning_rate)
            self.max_clipbound, self.min_clipbound = float(max_clipbound), float(min_clipbound)
            self._unclipped = 0.0
        self.generator = generator or CSPRNG()
        self.step_hooks: list[Callable[[DPOptimizer], None]] = []
        self._summed: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._skip_next = False
        self.last_stats: dict = {}

    # torch.optim.Optimizer interface, delegated to the wrapped optimizer (the subclassing
    # lets LR schedulers and other tools accept a DPOptimizer) ----------------------------
    @property
    def param_groups(self):  # type: ignore[override]
        return self.original_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value) -> None:
        self.original_optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.original_optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.original_optimizer.state = value

    @property
    def defaults(self):  # type: ignore[override]
        return self.original_optimizer.defaults

    @defaults.setter
    def defaults(self, value) -> None:
        self.original_optimizer.defaults = value

    def state_dict(self):
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state) -> None:
        self.original_optimizer.load_state_dict(state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the captured activations/backprops and the parameters' .grad."""
        self.module.clear()
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    # DP ---------------------------------------------------------------------------------
    def signal_skip_step(self, do_skip: bool = True) -> None:
        """Make the next :meth:`step` only accumulate (a non-final physical batch)."""
        self._skip_next = do_skip

    def _accumulate(self) -> None:
        if not self.module.has_records:
            self._refuse_uncaptured()
        self.module.check_captured()
        if self.clipping == "per_layer":
            sums, stats = self.module.clipped_sum_per_parameter(
                dict(zip(self.params, self.max_grad_norms, strict=True)))
        else:
            sums, stats = self.module.clipped_sum(self.max_grad_norm)
        if self.clipping == "adaptive":
            self._unclipped += stats["batch"] * (1.0 - stats["clipped"])
        self.last_stats = stats
        for p, s in sums.items():
            self._summed[p] = self._summed[p] + s if p in self._summed else s
        self.module.clear()

    def _refuse_uncaptured(self) -> None:
        # Gradients without per-sample records came from outside DP-SGD (eval() mode, or
        # the model called directly instead of through its wrapper); stepping would
        # replace them by pure noise and still spend the budget.
        if any(p.grad is not None and bool(p.grad.ne(0).any()) for p in self.params):
            raise RuntimeError(
                "the parameters have gradients but no per-sample gradients were captured: "
                "was the model in eval() mode (call model.train() before training) or "
                "called directly instead of through the model returned by make_private? "
                "Nothing was stepped and no privacy budget was spent."
            )

    def virtual_step(self) -> None:
        """Clip and accumulate this physical batch; no noise, no parameter update."""
        self._accumulate()

    def step(self, closure: Callable[[], float] | None = None):
        """Clip, accumulate, and (unless skipping) add noise and update the parameters."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        self._accumulate()
        if self._skip_next:
            self._skip_next = False
            return None
        # One noise draw for all parameters (per-call overhead dominates small tensors).
        std = self._grad_noise_multiplier * self.max_grad_norm
        total = sum(p.numel() for p in self.params)
        flat = self.generator.normal(total, std=std, dtype=torch.float32)
        offset = 0
        for p in self.params:
            noise = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
            s = self._summed.get(p)
            noise = noise.to(device=p.device, dtype=p.dtype)
            p.grad = (noise if s is None else s + noise) / self.expected_batch_size
        self._summed = {}
        if self.clipping == "adaptive":
            self._update_clipbound()
        out = self.original_optimizer.step()
        for hook in self.step_hooks:
            hook(self)
        return out

    def _update_clipbound(self) -> None:
        """Geometric update of C towards the target quantile of unclipped examples."""
        noisy = self._unclipped + float(
            self.generator.normal(1, std=self.unclipped_num_std, dtype=torch.float64)[0])
        frac = noisy / self.expected_batch_size
        c = self.max_grad_norm * math.exp(
            -self.clipbound_learning_rate * (frac - self.target_unclipped_quantile))
        self.max_grad_norm = min(self.max_clipbound, max(self.min_clipbound, c))
        self._unclipped = 0.0

    def __repr__(self) -> str:
        return (f"DPOptimizer(σ={self.noise_multiplier}, C={self.max_grad_norm}, "
                f"expected_batch_size={self.expected_batch_size}, {self.original_optimizer!r})")


def check_dp_settings(noise_multiplier: float, max_grad_norm: float) -> None:
    """Refuse σ and C that give no guarantee or break the first step (NaN, inf, <= 0)."""
    if not (isinstance(noise_multiplier, int | float) and math.isfinite(noise_multiplier)
            and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if not (isinstance(max_grad_norm, int | float) and math.isfinite(max_grad_norm)
            and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
