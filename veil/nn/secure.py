"""Secure layers: run a :class:`~veil.nn.graph.SecureGraph` on secret shares.

Everything here is party-local SPMD code (it runs in party 0 and in party 1,
each on its own shares):

- :func:`share_weights`: the model owner secret-shares every parameter once
  (no communication: the peer's share is drawn from randomness common to both);
- :func:`secure_forward`: the layers on :class:`~veil.mpc.tensor.SecretTensor` s:
  Linear and Conv2d through matrix/convolution Beaver triples (one round each),
  a standalone BatchNorm as an elementwise Beaver product, ReLU, max pooling and
  argmax through the function-secret-sharing gates of :mod:`veil.mpc.nonlinear`,
  average pooling, residual additions, reshapes and Dropout locally;
- :func:`material_plan`: the exact list of dealer requests ``(kind, params)`` of
  one forward pass, known from the graph's shapes before any input exists, so
  that the offline phase runs (and is timed) separately.

The arithmetic is the one of the plaintext twin (:mod:`veil.nn.twin`): after
each product the shares are truncated locally (SecureML), which is off by at
most one unit in the last place (2^-16) per truncation except with
probability below 2^-21 per element for values below 2^10.

Example
-------
>>> import torch, veil
>>> from veil.nn import convert
>>> from veil.nn.secure import share_weights, secure_forward
>>> graph = convert(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()), (4,))
>>> def job(party):
...     weights = share_weights(party, graph if party.rank == 0 else graph.public())
...     x = party.share(torch.ones(3, 4) if party.rank == 1 else None, owner=1, shape=(3, 4))
...     return secure_forward(party, weights, x).reveal(to=1)
>>> veil.run(job)[1].shape     # doctest: +SKIP
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from veil.nn.graph import Layer, SecureGraph

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import SecretTensor

MODEL_OWNER = 0
DATA_OWNER = 1

Progress = Callable[[int, int], None]


@dataclass
class SharedModel:
    """This party's shares of a model's parameters, keyed by ``(layer, 'weight'|'bias')``."""

    graph: SecureGraph
    params: dict[tuple[str, str], SecretTensor]


def _param_view(layer: Layer, kind: str, t: torch.Tensor) -> torch.Tensor:
    """The layout each parameter is shared in (so the online phase does no re-layout)."""
    if layer.op == "linear" and kind == "weight":
        return t.t().contiguous()  # x @ W^T as one matmul triple
    if layer.op == "affine":
        return t.reshape((1, -1) + (1,) * (len(layer.out_shape) - 1))
    return t


def parameter_shapes(graph: SecureGraph) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(layer, kind, shape-as-shared)`` for every parameter: public to both parties."""
    out = []
    for layer in graph.layers:
        for kind in ("weight", "bias"):
            t = getattr(layer, kind)
            if t is not None:
                out.append((layer.name, kind, tuple(_param_view(layer, kind, t).shape)))
    return out


def share_weights(party: Party, graph: SecureGraph, owner: int = MODEL_OWNER) -> SharedModel:
    """Secret-share every parameter of ``graph``, owned by ``owner`` (once per model).

    The owner passes the graph with its weights; the other party passes
    ``graph.public()`` (weights replaced by zero placeholders of the same shape,
    never read).
    """
    params: dict[tuple[str, str], SecretTensor] = {}
    by_name = {layer.name: layer for layer in graph.layers}
    for name, kind, shape in parameter_shapes(graph):
        value = None
        if party.rank == owner:
            layer = by_name[name]
            value = _param_view(layer, kind, getattr(layer, kind)).double()
        params[(name, kind)] = party.share(value, owner=owner, shape=shape)
    return SharedModel(graph, params)


def _layer(party: Party, model: SharedModel, layer: Layer, args: list[SecretTensor]
           ) -> SecretTensor:
    x = args[0]
    p = layer.params
    w = model.params.get((layer.name, "weight"))
    b = model.params.get((layer.name, "bias"))
    if layer.op == "linear":
        y = x @ w
        return y + b if b is not None else y
    if layer.op == "conv2d":
        return x.conv2d(w, b, stride=p["stride"], padding=p["padding"])
    if layer.op == "affine":
        return x * w + b
    if layer.op == "relu":
        return x.relu()
    if layer.op == "maxpool2d":
        return x.max_pool2d(p["kernel_size"], stride=p["stride"], padding=p["padding"])
    if layer.op == "avgpool2d":
        return x.avg_pool2d(p["kernel_size"], stride=p["stride"], padding=p["padding"])
    if layer.op == "add":
        return args[0] + args[1]
    if layer.op == "reshape":
        return x.reshape(x.shape[0], *layer.out_shape)
    if layer.op == "argmax":
        return x.argmax(dim=-1)
    raise AssertionError(layer.op)


def secure_forward(party: Party, model: SharedModel, x: SecretTensor,
                   progress: Progress | None = None) -> SecretTensor:
    """Run the shared model on the shared batch ``x``; returns the shared output.

    ``progress(done, total)`` is called after every layer.
    """
    graph = model.graph
    if tuple(x.shape[1:]) != graph.input_shape:
        raise ValueError(f"shared input has shape {tuple(x.shape)}, the model expects "
                         f"(batch, {', '.join(map(str, graph.input_shape))})")
    values: dict[str, SecretTensor] = {graph.input_name: x}
    remaining = _last_use(graph)
    for i, layer in enumerate(graph.layers):
        values[layer.name] = _layer(party, model, layer, [values[n] for n in layer.inputs])
        for n in layer.inputs:  # free activations early: big batches are memory-bound
            if remaining[n] == i and n != graph.output:
                del values[n]
        if progress is not None:
            progress(i + 1, len(graph.layers))
    return values[graph.output]


def _last_use(graph: SecureGraph) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, layer in enumerate(graph.layers):
        for n in layer.inputs:
            last[n] = i
    return last


# --------------------------------------------------------------------------- the dealer's plan

def _beaver_plan(layer: Layer, in_shape: tuple[int, ...], batch: int) -> list[tuple[str, dict]]:
    x_shape = [batch, *in_shape]
    if layer.op == "linear":
        w = layer.weight
        return [("matmul", {"shape_x": x_shape, "shape_y": [w.shape[1], w.shape[0]]})]
    if layer.op == "conv2d":
        return [("conv2d", {"shape_x": x_shape, "shape_y": list(layer.weight.shape),
                            "stride": list(layer.params["stride"]),
                            "padding": list(layer.params["padding"])})]
    if layer.op == "affine":
        shape_y = [1, layer.weight.shape[0]] + [1] * (len(in_shape) - 1)
        return [("beaver", {"shape_x": x_shape, "shape_y": shape_y})]
    return []


def material_plan(graph: SecureGraph, batch: int) -> list:
    """The dealer requests ``[(kind, params), ...]`` of one forward pass on ``batch`` inputs.

    Linear layers' requests follow from their shapes; the non-linear gates' requests
    come from :func:`veil.mpc.nonlinear.plan`.
    """
    from veil.mpc import nonlinear

    shapes = {graph.input_name: graph.input_shape}
    out: list = []
    for layer in graph.layers:
        in_shape = shapes[layer.inputs[0]]
        shapes[layer.name] = layer.out_shape
        if layer.op in ("linear", "conv2d", "affine"):
            out += _beaver_plan(layer, in_shape, batch)
        elif layer.op in ("relu", "maxpool2d", "argmax"):
            out += _gate_plan(nonlinear.plan, layer, (batch, *in_shape))
    return out


def _gate_plan(planner, layer: Layer, shape: tuple[int, ...]) -> list:
    p = layer.params
    if layer.op == "relu":
        return list(planner("relu", shape))
    if layer.op == "maxpool2d":
        return list(planner("max_pool2d", shape, kernel_size=p["kernel_size"],
                            stride=p["stride"], padding=p["padding"]))
    return list(planner("argmax", shape, dim=-1))
