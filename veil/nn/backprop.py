"""One private training step on a :class:`~veil.nn.graph.SecureGraph`, and its twin.

Party-local SPMD code: :func:`train_step` runs the ops' training forwards
(:meth:`veil.nn.ops.Op.train_forward`), the loss gradient
(:mod:`veil.nn.losses`), the ops' backwards in reverse order (gradients of a
value read by several layers are summed) and SGD (:mod:`veil.nn.optim`), all on
shares, with exact truncation; nothing is opened but masked values.
:func:`step_plan` lists the dealer requests of one step in the order the step
makes them, from shapes alone. :func:`twin_step` is the same step on plaintext
integers: the parties' result equals it bit for bit.

Example
-------
>>> import torch
>>> from veil.nn import convert
>>> g = convert(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
...                                 torch.nn.Linear(3, 2)), (4,))
>>> [kind for kind, _ in step_plan(g, 8, "mse", 16)][:4]
['matmul', 'trunc', 'fss_sign', 'matmul']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from veil.mpc import exact
from veil.nn.graph import SecureGraph
from veil.nn.layer import UnsupportedModelError
from veil.nn.losses import loss_grad, loss_grad_plan, twin_loss_grad
from veil.nn.ops import get_op
from veil.nn.optim import SGDConfig, sgd_plan, sgd_step, twin_sgd_step
from veil.nn.secure import SharedModel, input_shapes, parameter_shapes

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import SecretTensor

ParamKey = tuple[str, str]


def check_trainable(graph: SecureGraph) -> None:
    """Refuse, before any computation, a graph that private training cannot run."""
    for layer in graph.layers:
        if not get_op(layer.op).trainable:
            what = "BatchNorm" if layer.op == "affine" else f"the op {layer.op!r}"
            raise UnsupportedModelError(
                f"{what} is not supported in private training (trainable: Linear, Conv2d, "
                f"ReLU, MaxPool2d, AvgPool2d, Flatten, residual add); used at {layer.source}")
    if len(graph.output_shape) != 1:
        raise UnsupportedModelError(f"private training needs (batch, classes) logits, the "
                                    f"model outputs per-sample shape {graph.output_shape}")
    live = {graph.output}
    for layer in reversed(graph.layers):
        if layer.name in live:
            live.update(layer.inputs)
        else:
            raise UnsupportedModelError(f"layer {layer.name} does not contribute to the output "
                                        f"(used at {layer.source})")
    if not graph.parameters():
        raise UnsupportedModelError("the model has no parameters to train")


def _requires_grad(graph: SecureGraph) -> dict[str, bool]:
    """Which values have a parameter upstream (the input does not): only their gradients
    are computed (e.g. no ``dx`` for a first layer behind a reshape of the input)."""
    req = {graph.input_name: False}
    for layer in graph.layers:
        req[layer.name] = any(req[i] for i in layer.inputs) or any(
            t is not None for t in (layer.weight, layer.bias))
    return req


def _needs(graph: SecureGraph, layer, req: dict[str, bool]) -> list[bool] | None:
    """Which inputs of ``layer`` need a gradient; ``None``: skip its backward altogether."""
    needs = [req[i] for i in layer.inputs]
    has_params = any(t is not None for t in (layer.weight, layer.bias))
    return needs if any(needs) or has_params else None


def step_plan(graph: SecureGraph, batch: int, loss: str, frac_bits: int) -> list:
    """The dealer requests of one :func:`train_step` on ``batch`` samples, in order."""
    shapes = input_shapes(graph)
    out: list = []
    for layer in graph.layers:
        out += get_op(layer.op).train_plan(layer, [shapes[i] for i in layer.inputs], batch,
                                           frac_bits)
    out += loss_grad_plan(loss, batch, graph.output_shape[0], frac_bits)
    req = _requires_grad(graph)
    for layer in reversed(graph.layers):
        needs = _needs(graph, layer, req)
        if needs is not None:
            out += get_op(layer.op).backward_plan(layer, [shapes[i] for i in layer.inputs],
                                                  batch, needs, frac_bits)
    for name, kind, shape in parameter_shapes(graph):
        bits = get_op(graph.layer(name).op).grad_bits(kind, frac_bits)
        out += sgd_plan(math.prod(shape), bits, frac_bits)
    return out


@dataclass
class TrainState:
    """This party's shares of the weights (a :class:`SharedModel`) and SGD velocities."""

    model: SharedModel
    velocity: dict[ParamKey, SecretTensor] = field(default_factory=dict)

    @classmethod
    def start(cls, party: Party, model: SharedModel) -> TrainState:
        zeros = {k: party.zeros(p.shape) for k, p in model.params.items()}
        return cls(model, zeros)


def _forward(party: Party, model: SharedModel, x: SecretTensor, keep: bool):
    graph = model.graph
    values: dict[str, SecretTensor] = {graph.input_name: x}
    saved: dict[str, object] = {}
    for layer in graph.layers:
        y, s = get_op(layer.op).train_forward(party, layer, model.layer_params(layer),
                                              [values[i] for i in layer.inputs])
        values[layer.name] = y
        if keep:
            saved[layer.name] = s
    return values[graph.output], saved


def train_step(party: Party, state: TrainState, x: SecretTensor, targets: SecretTensor,
               loss: str, sgd: SGDConfig) -> SecretTensor:
    """One SGD step on the shared batch ``x`` with shared one-hot ``targets`` (in place).

    Returns the shared logits of the batch (before the update; never opened here).
    """
    model = state.model
    graph = model.graph
    logits, saved = _forward(party, model, x, keep=True)
    grads: dict[str, SecretTensor] = {graph.output: loss_grad(loss, logits, targets)}
    pgrads: dict[ParamKey, SecretTensor] = {}
    req = _requires_grad(graph)
    for layer in reversed(graph.layers):
        needs = _needs(graph, layer, req)
        if needs is None:
            continue
        gx, gp = get_op(layer.op).backward(party, layer, model.layer_params(layer),
                                           saved.pop(layer.name), grads.pop(layer.name), needs)
        for name, g in zip(layer.inputs, gx, strict=True):
            if g is not None:
                grads[name] = grads[name] + g if name in grads else g
        pgrads.update({(layer.name, kind): g for kind, g in gp.items()})
    for name, kind, _ in parameter_shapes(graph):
        key = (name, kind)
        bits = get_op(graph.layer(name).op).grad_bits(kind, x.frac_bits)
        model.params[key], state.velocity[key] = sgd_step(
            sgd, model.params[key], state.velocity[key], pgrads[key], bits)
    return logits


def correct_count(party: Party, model: SharedModel, x: SecretTensor, targets: SecretTensor
                  ) -> SecretTensor:
    """Shares of the number of samples whose argmax matches the one-hot ``targets``."""
    logits, _ = _forward(party, model, x, keep=False)
    hits = exact.product(logits.argmax(dim=-1), targets)
    return hits.sum()


def correct_count_plan(graph: SecureGraph, batch: int, frac_bits: int) -> list:
    from veil.nn.ops.common import gate_plan

    shapes = input_shapes(graph)
    out: list = []
    for layer in graph.layers:
        out += get_op(layer.op).train_plan(layer, [shapes[i] for i in layer.inputs], batch,
                                           frac_bits)
    classes = graph.output_shape[0]
    out += gate_plan("argmax", (batch, classes), dim=-1)
    return out + exact.product_plan("beaver", (batch, classes), (batch, classes), frac_bits)


# --------------------------------------------------------------------------- plaintext twin

def twin_params(graph: SecureGraph, frac_bits: int) -> dict[ParamKey, torch.Tensor]:
    """The model owner's parameters as int64 fixed point, in the shared layout."""
    from veil.nn.fixedpoint import encode

    out = {}
    for layer in graph.layers:
        op = get_op(layer.op)
        for kind in ("weight", "bias"):
            t = getattr(layer, kind)
            if t is not None:
                out[(layer.name, kind)] = encode(op.param_view(layer, kind, t.double()),
                                                 frac_bits)
    return out


def _twin_forward(graph, params, x, frac_bits, keep):
    values = {graph.input_name: x}
    saved = {}
    for layer in graph.layers:
        p = {k: params[(layer.name, k)] for k in ("weight", "bias") if (layer.name, k) in params}
        y, s = get_op(layer.op).twin_train_forward(layer, p, [values[i] for i in layer.inputs],
                                                   frac_bits)
        values[layer.name] = y
        if keep:
            saved[layer.name] = s
    return values[graph.output], saved


def twin_step(graph: SecureGraph, params: dict[ParamKey, torch.Tensor],
              velocity: dict[ParamKey, torch.Tensor], x: torch.Tensor, targets: torch.Tensor,
              loss: str, sgd: SGDConfig, frac_bits: int) -> None:
    """:func:`train_step` on plaintext int64 (updates ``params`` and ``velocity`` in place)."""
    logits, saved = _twin_forward(graph, params, x, frac_bits, keep=True)
    grads = {graph.output: twin_loss_grad(loss, logits, targets, frac_bits)}
    pgrads = {}
    req = _requires_grad(graph)
    for layer in reversed(graph.layers):
        needs = _needs(graph, layer, req)
        if needs is None:
            continue
        p = {k: params[(layer.name, k)] for k in ("weight", "bias") if (layer.name, k) in params}
        gx, gp = get_op(layer.op).twin_backward(layer, p, saved.pop(layer.name),
                                                grads.pop(layer.name), needs, frac_bits)
        for name, g in zip(layer.inputs, gx, strict=True):
            if g is not None:
                grads[name] = grads[name] + g if name in grads else g
        pgrads.update({(layer.name, kind): g for kind, g in gp.items()})
    for key in params:
        v = velocity.get(key, torch.zeros_like(params[key]))
        bits = get_op(graph.layer(key[0]).op).grad_bits(key[1], frac_bits)
        params[key], velocity[key] = twin_sgd_step(sgd, params[key], v, pgrads[key], bits,
                                                   frac_bits)


def twin_predict(graph: SecureGraph, params: dict[ParamKey, torch.Tensor], x: torch.Tensor,
                 frac_bits: int) -> torch.Tensor:
    """Class predictions of the twin (int64 fixed-point input)."""
    logits, _ = _twin_forward(graph, params, x, frac_bits, keep=False)
    return logits.argmax(-1)
