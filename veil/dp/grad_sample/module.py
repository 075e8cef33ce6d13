"""GradSampleModule: wraps a model so that a normal ``loss.backward()`` leaves, per layer,
what is needed for per-sample clipping, then computes clipped sums in one pass."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from veil.dp.grad_sample.functorch import FALLBACK, check_fallback
from veil.dp.grad_sample.registry import Rule, materialised_norm_and_sum, rule_for, trainable


class _Tap:
    """What a layer's custom autograd function calls back: is capture on, and record."""

    __slots__ = ("gsm", "module")

    def __init__(self, gsm: GradSampleModule, module: nn.Module) -> None:
        self.gsm, self.module = gsm, module

    @property
    def active(self) -> bool:
        return self.gsm._active and self.gsm._capture

    def __call__(self, a: torch.Tensor, g: torch.Tensor) -> None:
        self.gsm._record(self.module, a, g)


class GradSampleModule(nn.Module):
    """A model wrapper that captures activations and backprops of every trainable layer.

    Parameters
    ----------
    module:
        The model. Every trainable parameter must belong to a layer with a registered
        rule (Linear, Conv1d/2d, GroupNorm, LayerNorm) or to a leaf layer that the
        ``torch.func`` fallback handles.
    loss_reduction:
        ``"mean"`` (the loss averages over the batch; backprops are rescaled by the
        batch size) or ``"sum"``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> gsm = GradSampleModule(nn.Linear(3, 2))
    >>> gsm(torch.randn(5, 3)).sum().backward()  # not-secret
    >>> gsm.per_sample_gradients()["weight"].shape
    torch.Size([5, 2, 3])
    """

    def __init__(self, module: nn.Module, loss_reduction: str = "mean") -> None:
        super().__init__()
        if loss_reduction not in ("mean", "sum"):
            raise ValueError("loss_reduction must be 'mean' or 'sum'")
        self._module = module
        self.loss_reduction = loss_reduction
        self._records: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._layers: list[tuple[str, nn.Module, Rule]] = []
        self._handles: list = []
        self._patched: list[nn.Module] = []
        self._capture = True  # off while rules re-run layers (torch.func fallback)
        self._active = False  # True only during a training forward through this wrapper
        self._attach()

    # -- set-up -------------------------------------------------------------------------
    def _attach(self) -> None:
        for name, m in self._module.named_modules():
            if not trainable(m):
                continue
            rule = rule_for(m)
            if rule is None:
                check_fallback(m, name)
                rule = FALLBACK
            self._layers.append((name, m, rule))
            record = _Tap(self, m)
            if rule.tap == "function":
                m.forward = functools.partial(type(rule).forward, m, record)  # type: ignore
                self._patched.append(m)
            else:
                self._handles.append(m.register_forward_hook(self._hook(m)))

    def _hook(self, m: nn.Module):
        def hook(_mod, inputs, output):
            if not (self._active and self._capture):
                return
            if len(inputs) != 1 or not isinstance(output, torch.Tensor):
                raise NotImplementedError(
                    f"{type(m).__name__}: per-sample gradients need one tensor input and "
                    "one tensor output"
                )
            a = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: self._record(m, a, g))

        return hook

    def _record(self, m: nn.Module, a: torch.Tensor, g: torch.Tensor) -> None:
        # With a mean loss, backprops are 1/B of the per-sample ones; the factor B is
        # applied to norms and sums later rather than by copying every backprop here.
        self._records.setdefault(m, []).append((a.detach(), g.detach()))

    def _scale(self, g: torch.Tensor) -> float:
        return float(g.shape[0]) if self.loss_reduction == "mean" else 1.0

    def detach(self) -> nn.Module:
        """Remove the taps and return the plain model."""
        for h in self._handles:
            h.remove()
        for m in self._patched:
            del m.forward
        self._handles, self._patched, self._layers = [], [], []
        return self._module

    # -- forward ------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        # Only forwards through this wrapper, in training mode with autograd on, are
        # captured; calling the wrapped model directly (or in eval mode) gives ordinary
        # gradients, so the same model object stays usable outside DP-SGD.
        self._active = self.training and torch.is_grad_enabled()
        try:
            return self._module(*args, **kwargs)
        finally:
            self._active = False

    @property
    def module(self) -> nn.Module:
        return self._module

    def clear(self) -> None:
        """Forget captured activations/backprops (called by the optimizer's zero_grad)."""
        self._records.clear()

    @property
    def has_records(self) -> bool:
        return bool(self._records)

    # -- per-sample quantities ----------------------------------------------------------
    def _batch_size(self) -> int:
        sizes = {a.shape[0] for recs in self._records.values() for a, _ in recs}
        if len(sizes) > 1:
            raise RuntimeError(
                f"layers saw different batch sizes {sorted(sizes)}: was the model called on "
                "several batches between zero_grad() and step()?"
            )
        return sizes.pop() if sizes else 0

    def _layer_parts(self, m: nn.Module, rule: Rule):
        self._capture = False
        try:
            return self._layer_parts_inner(m, rule)
        finally:
            self._capture = True

    def _layer_parts_inner(self, m: nn.Module, rule: Rule):
        recs = self._records.get(m, [])
        scale = self._scale(recs[0][1])
        if len(recs) == 1:
            norm_sq, summer = rule.norm_and_sum(m, *recs[0])
        else:
            # Layer used several times in one forward (weight sharing): sum per-sample grads.
            total: dict[str, torch.Tensor] = {}
            for a, g in recs:
                for k, v in rule.per_sample(m, a, g).items():
                    total[k] = total[k] + v if k in total else v
            norm_sq, summer = materialised_norm_and_sum(total)
        if scale == 1.0:
            return norm_sq, summer
        return norm_sq * scale**2, lambda c: summer(c * scale)

    def per_sample_gradients(self) -> dict[str, torch.Tensor]:
        """``{qualified param name: (B, *shape)}`` for the captured batch (materialised)."""
        out: dict[str, torch.Tensor] = {}
        for name, m, rule in self._layers:
            recs = self._records.get(m, [])
            for a, g in recs:
                self._capture = False
                try:
                    grads = rule.per_sample(m, a, g)
                finally:
                    self._capture = True
                scale = self._scale(g)
                for k, v in grads.items():
                    v = v * scale if scale != 1.0 else v
                    key = f"{name}.{k}" if name else k
                    out[key] = out[key] + v if key in out else v
        return out

    def clipped_sum(self, max_grad_norm: float) -> tuple[dict[nn.Parameter, torch.Tensor], dict]:
        """Clip every sample's whole gradient to ``max_grad_norm`` and sum over the batch.

        Returns ``({param: Σ_i c_i ∇_i}, stats)`` with ``c_i = min(1, C / ‖∇_i‖)``;
        stats holds the batch size and the fraction of clipped samples.
        """
        if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be a positive finite number, got {max_grad_norm}")
        b = self._batch_size()
        params = {id(p): p for _, m, _ in self._layers for p in trainable(m).values()}
        if b == 0:
            return {p: torch.zeros_like(p) for p in params.values()}, {"batch": 0, "clipped": 0.0}
        parts = []
        norm_sq = None
        for _, m, rule in self._layers:
            if m not in self._records:
                continue
            ns, summer = self._layer_parts(m, rule)
            norm_sq = ns if norm_sq is None else norm_sq + ns
            parts.append((m, summer))
        assert norm_sq is not None
        norms = norm_sq.clamp_min(0).sqrt()
        if not torch.isfinite(norms).all():
            raise FloatingPointError("non-finite per-sample gradient norm (NaN/inf in the loss?)")
        c = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        sums: dict[nn.Parameter, torch.Tensor] = {}
        for m, summer in parts:
            own = trainable(m)
            for k, v in summer(c).items():
                sums[own[k]] = v.to(own[k].dtype)
        for p in params.values():  # layers that did not take part in this forward
            sums.setdefault(p, torch.zeros_like(p))
        stats = {"batch": b, "clipped": float((norms > max_grad_norm).float().mean())}
        return sums, stats

    def state_dict(self, *args, **kwargs):  # the plain model's keys, loadable without Veil
        return self._module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self._module.load_state_dict(*args, **kwargs)
