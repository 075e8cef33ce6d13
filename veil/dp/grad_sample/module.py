"""GradSampleModule: wraps a model so that a normal ``loss.backward()`` leaves, per layer,
what is needed for per-sample clipping, then computes clipped sums in one pass."""

from __future__ import annotations

import contextlib
import functools
import math
import weakref

import torch
from torch import nn

from veil.dp.grad_sample.functorch import fallback_for
from veil.dp.grad_sample.registry import Rule, materialised_norm_and_sum, rule_for, trainable


class _Tap:
    """What a layer's custom autograd function calls back: is capture on, and record."""

    __slots__ = ("gsm", "module")

    def __init__(self, gsm: GradSampleModule, module: nn.Module) -> None:
        self.gsm, self.module = gsm, module

    @property
    def active(self) -> bool:
        return self.gsm._active and self.gsm._capture

    def __call__(self, *record) -> None:
        self.gsm._record(self.module, record)


class GradSampleModule(nn.Module):
    """A model wrapper that captures activations and backprops of every trainable layer.

    Parameters
    ----------
    module:
        The model. Each trainable parameter is handled by its layer's registered rule
        (Linear, Conv1d/2d, GroupNorm, LayerNorm, LSTM/GRU/RNN, MultiheadAttention) or
        by the ``torch.func`` fallback (any other layer owning parameters, leaf or
        not). A parameter shared by several layers (weight tying) is handled exactly.
        Parameters must be used through their module's forward: for Linear, conv,
        recurrent and attention layers a use elsewhere (a parent reading
        ``child.weight`` directly) is detected and refused at the optimizer step.
    loss_reduction:
        ``"mean"`` (the loss averages over the batch; backprops are rescaled by the
        batch size) or ``"sum"``.
    batch_first:
        Whether the batch is dimension 0 of the tensors that Linear, convolution and
        normalisation layers see (``False``: dimension 1 of tensors with 3 or more
        dimensions, e.g. a sequence-first Transformer; as Opacus' ``batch_first``). RNN
        and attention layers read their own ``batch_first``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> gsm = GradSampleModule(nn.Linear(3, 2))
    >>> gsm(torch.randn(5, 3)).sum().backward()  # not-secret
    >>> gsm.per_sample_gradients()["weight"].shape
    torch.Size([5, 2, 3])
    """

    def __init__(self, module: nn.Module, loss_reduction: str = "mean",
                 batch_first: bool = True) -> None:
        super().__init__()
        if loss_reduction not in ("mean", "sum"):
            raise ValueError("loss_reduction must be 'mean' or 'sum'")
        self._module = module
        self.loss_reduction = loss_reduction
        self.batch_first = batch_first
        # {backward pass: {layer: [record, ...]}}: each backward pass is its own group of
        # examples (gradient accumulation concatenates, as in Opacus; never sums example i
        # of one batch with example i of another).
        self._records: dict[int, dict[nn.Module, list[tuple]]] = {}
        self._layers: list[tuple[str, nn.Module, Rule]] = []
        self._handles: list = []
        self._patched: list[nn.Module] = []
        self._tied: set[nn.Module] = set()
        self._grad_sample_cache: dict[int, torch.Tensor] | None = None
        self._capture = True  # off while rules re-run layers (torch.func fallback)
        self._active = False  # True only during a training forward through this wrapper
        self._attach()

    # -- set-up -------------------------------------------------------------------------
    def _attach(self) -> None:
        covered: set[nn.Module] = set()  # sub-modules whose parameters a rule handles
        for name, m in self._module.named_modules():
            if m in covered or not any(p.requires_grad for p in m.parameters()):
                continue
            rule = rule_for(m)
            if rule is not None and rule.covers_children:
                covered.update(m.modules())
            elif not trainable(m):
                continue
            elif rule is None:
                rule = fallback_for(m, name)
            self._layers.append((name, m, rule))
            record = _Tap(self, m)
            if rule.tap == "function":
                m.forward = functools.partial(type(rule).forward, m, record)  # type: ignore
                self._patched.append(m)
            else:
                self._handles.append(rule.attach(m, record))
        owners: dict[int, list[nn.Module]] = {}
        for _, m, rule in self._layers:
            for p in rule.parameters(m).values():
                owners.setdefault(id(p), []).append(m)
        self._tied = {m for ms in owners.values() if len(ms) > 1 for m in ms}
        self._names = {id(p): n for n, p in self._module.named_parameters()}
        _install_grad_sample()
        for _, m, rule in self._layers:
            for p in rule.parameters(m).values():
                _OWNERS[id(p)] = weakref.ref(self)
        self._rules = {m: rule for _, m, rule in self._layers}

    def _record(self, m: nn.Module, record: tuple) -> None:
        # With a mean loss, backprops are 1/B of the per-sample ones; the factor B is
        # applied to norms and sums later rather than by copying every backprop here.
        task = torch._C._current_graph_task_id()
        rec = tuple(r.detach() if isinstance(r, torch.Tensor) else r for r in record)
        if not self.batch_first and not self._rules[m].knows_batch_dim:
            # sequence-first (T, B, ...) tensors; 2-D ones (a head on pooled features) are
            # (B, features) either way
            rec = tuple(r.movedim(1, 0) if isinstance(r, torch.Tensor) and r.dim() >= 3 else r
                        for r in rec)
        self._records.setdefault(task, {}).setdefault(m, []).append(rec)
        self._grad_sample_cache = None

    def check_captured(self) -> None:
        """Refuse batch gradients on parameters whose layers skip them when capturing:
        such a gradient comes from a use outside the layer's forward, which no
        per-sample rule saw (it would be silently replaced by noise)."""
        for name, m, rule in self._layers:
            if rule.tap != "function":
                continue
            for k, p in rule.parameters(m).items():
                if p.grad is not None and bool(p.grad.ne(0).any()):
                    raise RuntimeError(
                        f"parameter {name}.{k} got a gradient outside {type(m).__name__}"
                        ".forward (used directly by another module?): per-sample "
                        "gradients cannot see that use; call the layer instead")

    def _scale(self, b: int) -> float:
        return float(b) if self.loss_reduction == "mean" else 1.0

    def detach(self) -> nn.Module:
        """Remove the taps and return the plain model."""
        for h in self._handles:
            h.remove()
        for m in self._patched:
            del m.forward
        for _, m, rule in self._layers:
            for p in rule.parameters(m).values():
                ref = _OWNERS.get(id(p))
                if ref is not None and ref() is self:
                    del _OWNERS[id(p)]
        self._handles, self._patched, self._layers = [], [], []
        return self._module

    # -- forward ------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        # Only forwards through this wrapper, in training mode with autograd on, are
        # captured; calling the wrapped model directly (or in eval mode) gives ordinary
        # gradients, so the same model object stays usable outside DP-SGD (and the DP
        # optimizer refuses to step on such gradients).
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
        self._grad_sample_cache = None

    @property
    def has_records(self) -> bool:
        return bool(self._records)

    # -- per-sample quantities ----------------------------------------------------------
    def _group_batch_size(self, group: dict[nn.Module, list[tuple]]) -> int:
        sizes = {self._rules[m].batch_size(rec) for m, recs in group.items() for rec in recs}
        if len(sizes) > 1:
            raise RuntimeError(
                f"layers saw different batch sizes {sorted(sizes)} in one backward pass: was "
                "the model called on several batches for one loss?"
            )
        return sizes.pop()

    @contextlib.contextmanager
    def _uncaptured(self):
        """Run rules with the layers' taps off (the torch.func fallback re-runs layers)."""
        before, self._capture = self._capture, False
        try:
            yield
        finally:
            self._capture = before

    def _group_per_sample(self, group) -> dict[int, torch.Tensor]:
        """``{id(param): (B, *shape)}`` for one backward pass, tied parameters summed."""
        b = self._group_batch_size(group)
        scale = self._scale(b)
        out: dict[int, torch.Tensor] = {}
        with self._uncaptured():
            for _, m, rule in self._layers:
                if m not in group:
                    continue
                own = rule.parameters(m)
                for k, v in rule.per_sample_all(m, group[m]).items():
                    v = v * scale if scale != 1.0 else v
                    key = id(own[k])
                    out[key] = out[key] + v if key in out else v
        return out

    def per_sample_gradients(self) -> dict[str, torch.Tensor]:
        """``{qualified param name: (B, *shape)}`` of the captured examples (materialised).

        Examples of several backward passes (gradient accumulation) are concatenated.
        """
        per: dict[int, list[torch.Tensor]] = {}
        for group in self._records.values():
            for key, v in self._group_per_sample(group).items():
                per.setdefault(key, []).append(v)
        return {self._names[k]: torch.cat(v) for k, v in per.items()}

    def clipped_sum(self, max_grad_norm: float) -> tuple[dict[nn.Parameter, torch.Tensor], dict]:
        """Clip every example's whole gradient to ``max_grad_norm`` and sum over examples.

        Returns ``({param: Σ_i c_i ∇_i}, stats)`` with ``c_i = min(1, C / ‖∇_i‖)``;
        stats holds the number of examples and the fraction of clipped ones. Each backward
        pass since the last :meth:`clear` is a separate set of examples.
        """
        if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be a positive finite number, got {max_grad_norm}")
        params = {id(p): p for _, m, r in self._layers for p in r.parameters(m).values()}
        sums: dict[int, torch.Tensor] = {}
        total, clipped = 0, 0.0
        for group in self._records.values():
            b = self._group_batch_size(group)
            if b == 0:  # an empty (Poisson) batch: no examples, nothing to clip
                continue
            norms, parts = self._group_norms(group, b)
            if not torch.isfinite(norms).all():
                raise FloatingPointError(
                    "non-finite per-sample gradient norm (NaN/inf in the loss?)")
            c = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            with self._uncaptured():
                for summer in parts:
                    for pid, v in summer(c).items():
                        sums[pid] = sums[pid] + v if pid in sums else v
            total += b
            clipped += float((norms > max_grad_norm).float().sum())
        out = {p: sums[k].to(p.dtype) if k in sums else torch.zeros_like(p)
               for k, p in params.items()}
        stats = {"batch": total, "clipped": clipped / total if total else 0.0}
        return out, stats

    def clipped_sum_per_parameter(
        self, max_grad_norms: dict[nn.Parameter, float]
    ) -> tuple[dict[nn.Parameter, torch.Tensor], dict]:
        """Per-layer clipping (Opacus' ``clipping="per_layer"``): each example's gradient
        of each parameter is clipped to that parameter's own bound, then summed.

        ``stats["clipped"]`` is the fraction of examples with any parameter clipped.
        """
        params = {id(p): p for _, m, r in self._layers for p in r.parameters(m).values()}
        bounds = {id(p): float(c) for p, c in max_grad_norms.items()}
        sums: dict[int, torch.Tensor] = {}
        total, clipped = 0, 0.0
        for group in self._records.values():
            b = self._group_batch_size(group)
            if b == 0:
                continue
            any_clipped = torch.zeros(b, dtype=torch.bool)
            for pid, g in self._group_per_sample(group).items():
                norms = g.reshape(b, -1).norm(dim=1)
                if not torch.isfinite(norms).all():
                    raise FloatingPointError("non-finite per-sample gradient norm")
                c = (bounds[pid] / (norms + 1e-6)).clamp(max=1.0)
                any_clipped |= (norms > bounds[pid]).cpu()
                s = torch.einsum("b,b...->...", c.to(g.dtype), g)
                sums[pid] = sums[pid] + s if pid in sums else s
            total += b
            clipped += float(any_clipped.sum())
        out = {p: sums[k].to(p.dtype) if k in sums else torch.zeros_like(p)
               for k, p in params.items()}
        return out, {"batch": total, "clipped": clipped / total if total else 0.0}

    def grad_sample(self, p: nn.Parameter) -> torch.Tensor | None:
        """Per-sample gradients ``(B, *p.shape)`` of one parameter (what Opacus stores in
        ``p.grad_sample``; here computed on demand, once per set of captured examples)."""
        if not self._records:
            return None
        if self._grad_sample_cache is None:
            per: dict[int, list[torch.Tensor]] = {}
            for group in self._records.values():
                for key, v in self._group_per_sample(group).items():
                    per.setdefault(key, []).append(v)
            self._grad_sample_cache = {k: torch.cat(v) for k, v in per.items()}
        return self._grad_sample_cache.get(id(p))

    def _group_norms(self, group, b: int):
        """Per-example norms of one backward pass, and the summers of its layers."""
        scale = self._scale(b)
        norm_sq = None
        parts: list = []
        tied: dict[nn.Module, list[tuple]] = {}
        with self._uncaptured():
            for _, m, rule in self._layers:
                if m not in group:
                    continue
                if m in self._tied:  # one parameter in several layers: ‖Σ_layers ∇‖
                    tied[m] = group[m]
                    continue
                ns, summer = rule.norm_and_sum_all(m, group[m])
                if scale != 1.0:
                    ns, summer = ns * scale**2, _scaled(summer, scale)
                norm_sq = ns if norm_sq is None else norm_sq + ns
                parts.append(_by_param(summer, rule.parameters(m)))
            if tied:
                ns, summer = materialised_norm_and_sum(self._group_per_sample(tied))
                norm_sq = ns if norm_sq is None else norm_sq + ns
                parts.append(summer)
        assert norm_sq is not None
        return norm_sq.clamp_min(0).sqrt(), parts

    def state_dict(self, *args, **kwargs):  # the plain model's keys, loadable without Veil
        return self._module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self._module.load_state_dict(*args, **kwargs)


def _scaled(summer, scale: float):
    return lambda c: summer(c * scale)


def _by_param(summer, own: dict[str, nn.Parameter]):
    """A layer's summer keyed by parameter identity (several layers may share one)."""
    return lambda c: {id(own[k]): v for k, v in summer(c).items()}


# ``p.grad_sample`` (Opacus' per-sample gradients on each parameter), computed on demand:
# materialising them after every backward pass would undo ghost clipping. A property on
# nn.Parameter reads them from the wrapper that owns ``p``; for any other parameter (or
# after an explicit assignment, as Opacus itself does) it is a plain attribute.
# id(parameter) -> weak reference to its wrapper (the wrapper holds the parameter, so the
# id cannot be reused while the reference is alive)
_OWNERS: dict[int, weakref.ref] = {}


def _get_grad_sample(p):
    if "_grad_sample" in p.__dict__:
        return p.__dict__["_grad_sample"]
    ref = _OWNERS.get(id(p))
    gsm = ref() if ref is not None else None
    return gsm.grad_sample(p) if gsm is not None else None


def _set_grad_sample(p, value) -> None:
    p.__dict__["_grad_sample"] = value


def _del_grad_sample(p) -> None:
    p.__dict__.pop("_grad_sample", None)


def _install_grad_sample() -> None:
    if not isinstance(getattr(nn.Parameter, "grad_sample", None), property):
        nn.Parameter.grad_sample = property(  # type: ignore[attr-defined]
            _get_grad_sample, _set_grad_sample, _del_grad_sample)
