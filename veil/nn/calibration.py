"""Per-layer magnitude bounds for comparisons on fewer bits (``bits=k`` FSS gates).

A sign gate on ``k`` bits is exact when the value it compares satisfies
``-2^(k-1) <= z < 2^(k-1)`` in the ring (fixed point: ``|z| < 2^(k-1-f)`` in real
units with ``f`` fractional bits; ``f = 16``, ``k = 32``: ``|z| < 32768``). The
bound must be known, not hoped: :func:`calibrate` runs the fixed-point twin (the
secure arithmetic on plaintext) on the model owner's own samples, records the
largest magnitude entering each comparison layer, multiplies it by a safety
``margin`` (default :data:`DEFAULT_MARGIN`) and stores, in the converted graph
(``layer.params``, part of the public architecture both parties hold):

- ``bound``: the real-valued magnitude the layer is assumed to stay below;
- ``bits``: ``bits`` (default 32) when ``bound`` fits, else 64 (always exact);
- ``lean``: the two-round lean gate (1-bit DCF with early termination) or not.

The user may give a layer's bound directly (``bounds={"relu1": 100.0}``); it then
replaces the calibrated one (no margin). ReLU compares its input ``x``; max-pool
and argmax compare differences of two inputs, so their inputs must stay below
half the ``k``-bit range (and max-pool's padding needs ``|x| < 2^(k-2)``).

**Detecting a violation.** A value outside the bound gets the sign of
``z mod 2^k``: a wrong ReLU/max for that element, never an error by itself.
Two ways to know:

- :func:`check` re-runs the twin on held-out plaintext samples and lists the
  layers whose observed magnitudes exceed their stored bound (no cost online);
- ``guard=True`` in :func:`calibrate` marks the layers so that the secure
  forward also counts, with two exact 64-bit comparisons per element, the inputs
  outside the ``k``-bit range, opens that one count per layer to both parties and
  raises :class:`BoundViolationError` when it is not zero (for audits and
  debugging: it reveals how many elements violated the bound and costs more than
  the saving).

Example
-------
>>> import torch
>>> from veil.nn import convert
>>> from veil.nn.calibration import calibrate
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> g = calibrate(convert(net, (4,)), torch.ones(8, 4))
>>> [(l.op, l.params["bits"]) for l in g.layers if l.op == "relu"]
[('relu', 32)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from veil.nn.fixedpoint import DEFAULT_FRAC_BITS, encode
from veil.nn.graph import SecureGraph
from veil.nn.ops import get_op

__all__ = ["COMPARED", "DEFAULT_BITS", "DEFAULT_LEAN", "DEFAULT_MARGIN", "BoundViolationError",
           "calibrate", "check", "gate_options", "guard", "guard_plan"]

#: Safety factor on the largest calibrated magnitude.
DEFAULT_MARGIN = 4.0
#: Comparison width used where the calibrated bound holds.
DEFAULT_BITS = 32
#: The lean two-round gate (measured faster under the LAN model for LeNet@64, docs/fss.md).
DEFAULT_LEAN = True
#: Comparison ops and how far their compared value can exceed their inputs' magnitude
#: (max-pool and argmax compare differences of two inputs).
COMPARED = {"relu": 1, "maxpool2d": 2, "argmax": 2}


class BoundViolationError(ArithmeticError):
    """A guarded layer saw values outside the range of its ``k``-bit comparisons."""


def _observe(graph: SecureGraph, samples: torch.Tensor, frac_bits: int,
             chunk: int = 256) -> dict[str, int]:
    """Largest fixed-point magnitude entering each comparison layer (the twin's values)."""
    seen = {layer.name: 0 for layer in graph.layers if layer.op in COMPARED}
    graph.check_input(samples)
    for lo in range(0, samples.shape[0], chunk):
        values = {graph.input_name: encode(samples[lo:lo + chunk].double(), frac_bits)}
        for layer in graph.layers:
            args = [values[i] for i in layer.inputs]
            if layer.name in seen:
                seen[layer.name] = max(seen[layer.name], int(args[0].abs().max()))
            values[layer.name] = get_op(layer.op).twin(layer, args, frac_bits)
    return seen


def calibrate(graph: SecureGraph, samples: torch.Tensor, *, margin: float = DEFAULT_MARGIN,
              bits: int = DEFAULT_BITS, lean: bool = DEFAULT_LEAN,
              bounds: Mapping[str, float] | None = None, guard: bool = False,
              frac_bits: int = DEFAULT_FRAC_BITS) -> SecureGraph:
    """A copy of ``graph`` whose comparison layers carry ``bound``, ``bits`` and ``lean``.

    Parameters
    ----------
    graph: a converted model (:func:`veil.nn.convert`), with its weights.
    samples: float inputs ``(n, *input_shape)`` representative of the data (the model
        owner's own, e.g. training data; never the data owner's private inputs).
    margin: safety factor (>= 1) on the largest magnitude observed per layer.
    bits: the narrow comparison width (2..63); layers whose bound does not fit use 64.
    lean: use the two-round lean gates (smaller keys) on the narrow layers.
    bounds: ``{layer name: real bound}`` set by the user; replaces the calibration there.
    guard: count out-of-range values in the secure forward (see the module docstring).
    """
    if not margin >= 1.0:
        raise ValueError(f"margin must be >= 1, got {margin}")
    if not 2 <= bits <= 63:
        raise ValueError(f"bits must be in 2..63 (64 is the default gate), got {bits}")
    bounds = dict(bounds or {})
    names = {layer.name for layer in graph.layers if layer.op in COMPARED}
    unknown = set(bounds) - names
    if unknown:
        raise ValueError(f"bounds given for {sorted(unknown)}, which are not comparison layers "
                         f"(those are {sorted(names)})")
    seen = _observe(graph, samples, frac_bits) if samples is not None else {}
    scale = float(2**frac_bits)
    layers = []
    for layer in graph.layers:
        if layer.op not in COMPARED:
            layers.append(layer)
            continue
        if layer.name in bounds:
            bound = float(bounds[layer.name])
        elif layer.name in seen:
            bound = margin * (seen[layer.name] + 1) / scale
        else:
            raise ValueError(f"no samples and no bound for comparison layer {layer.name}")
        # the compared value (input or a difference of two) within [-2^(k-1), 2^(k-1))
        fits = COMPARED[layer.op] * bound * scale < 2 ** (bits - 1)
        params = {**layer.params, "bound": bound, "bits": bits if fits else 64,
                  "lean": bool(lean and fits), "guard": bool(guard and fits)}
        layers.append(replace(layer, params=params))
    return replace(graph, layers=layers)


def check(graph: SecureGraph, samples: torch.Tensor,
          frac_bits: int = DEFAULT_FRAC_BITS) -> dict[str, float]:
    """Layers whose inputs on ``samples`` exceed their stored bound: ``{name: observed}``
    (real units); empty when every calibrated bound holds on these samples."""
    seen = _observe(graph, samples, frac_bits)
    out = {}
    for layer in graph.layers:
        if "bound" in layer.params and layer.name in seen:
            observed = seen[layer.name] / 2**frac_bits
            if observed >= layer.params["bound"]:
                out[layer.name] = observed
    return out


def gate_options(layer) -> dict[str, Any]:
    """The gate keywords (``bits``, ``lean``) a calibrated layer asks for ({} otherwise)."""
    if "bits" not in layer.params:
        return {}
    return {"bits": int(layer.params["bits"]), "lean": bool(layer.params.get("lean", False))}


def guard(x, layer) -> None:
    """If ``layer`` is guarded, count ``x``'s elements outside its ``k``-bit range (exact
    64-bit comparisons), open the count to both parties and raise if it is not zero.

    The range is the gate's: ``x`` itself for ReLU, half of it for max-pool and argmax.
    """
    if not layer.params.get("guard"):
        return
    from veil.mpc import nonlinear

    limit = 2 ** (int(layer.params["bits"]) - 1) // COMPARED[layer.op]
    flat = x.reshape(-1)
    over = nonlinear.drelu(flat - _raw(flat, limit), lean=True)
    under = nonlinear.lt(flat, _raw(flat, -limit), lean=True)
    count = int(round(float((over.sum() + under.sum()).reveal())))
    if count:
        raise BoundViolationError(
            f"{count} value(s) entering {layer.op} layer {layer.name} are outside the range "
            f"of its {layer.params['bits']}-bit comparisons (calibrated bound "
            f"{layer.params['bound']:g}); recalibrate with a larger margin or bound")


def guard_plan(layer, shape: tuple[int, ...]) -> list:
    """The dealer requests of :func:`guard` on an input of ``shape`` (none if unguarded)."""
    if not layer.params.get("guard"):
        return []
    from veil.mpc import nonlinear

    return nonlinear.plan("drelu", shape, lean=True) + nonlinear.plan("lt", shape, lean=True)


def _raw(x, value: int):
    """The public ring value ``value`` (not scaled) as a constant to subtract from ``x``."""
    return value / 2**x.frac_bits
