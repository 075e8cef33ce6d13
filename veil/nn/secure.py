"""Secure layers: run a :class:`~veil.nn.graph.SecureGraph` on secret shares.

Everything here is party-local SPMD code (it runs in party 0 and in party 1,
each on its own shares):

- :func:`share_weights`: the model owner secret-shares every parameter once
  (no communication: the peer's share is drawn from randomness common to both);
  with a ``session`` id, the weights of Linear, Conv2d and standalone BatchNorm
  layers are also opened once under reusable dealer masks
  (:meth:`~veil.mpc.tensor.SecretTensor.fix_mask`), so that each query opens
  only its activations, never the weights again;
- :func:`secure_forward`: the layers on :class:`~veil.mpc.tensor.SecretTensor` s,
  each by its op of :mod:`veil.nn.ops`: Linear and Conv2d through
  matrix/convolution Beaver triples (one round each), a standalone BatchNorm as
  an elementwise Beaver product, ReLU, max pooling and argmax through the
  function-secret-sharing gates of :mod:`veil.mpc.nonlinear`, average pooling,
  residual additions, reshapes and Dropout locally;
- :func:`material_plan`: the exact list of dealer requests ``(kind, params)`` of
  one forward pass (each op's :meth:`~veil.nn.ops.Op.plan`), known from the
  graph's shapes before any input exists, so that the offline phase runs (and
  is timed) separately; :func:`setup_plan` the requests of :func:`share_weights` with a session.

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

from veil.nn.graph import SecureGraph
from veil.nn.layer import Layer
from veil.nn.ops import get_op, mask_id

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import FixedSecretTensor, SecretTensor

__all__ = ["DATA_OWNER", "MODEL_OWNER", "SharedModel", "SharedWeights", "load_shares",
           "mask_id", "material_plan", "parameter_shapes", "save_shares", "secure_forward",
           "setup_plan", "share_weights"]

MODEL_OWNER = 0
DATA_OWNER = 1

Progress = Callable[[int, int], None]


@dataclass
class SharedModel:
    """This party's shares of a model's parameters, keyed by ``(layer, 'weight'|'bias')``.

    With a session, the weights of bilinear layers are :class:`FixedSecretTensor` s.
    """

    graph: SecureGraph
    params: dict[tuple[str, str], SecretTensor | FixedSecretTensor]
    session: str | None = None

    def layer_params(self, layer: Layer) -> dict[str, SecretTensor | FixedSecretTensor]:
        """``{'weight': ..., 'bias': ...}`` of ``layer`` (the ones it has)."""
        return {kind: self.params[(layer.name, kind)] for kind in ("weight", "bias")
                if (layer.name, kind) in self.params}


def parameter_shapes(graph: SecureGraph) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(layer, kind, shape-as-shared)`` for every parameter: public to both parties."""
    out = []
    for layer in graph.layers:
        op = get_op(layer.op)
        for kind in ("weight", "bias"):
            t = getattr(layer, kind)
            if t is not None:
                out.append((layer.name, kind, tuple(op.param_view(layer, kind, t).shape)))
    return out


def share_weights(party: Party, graph: SecureGraph, owner: int = MODEL_OWNER,
                  session: str | None = None) -> SharedModel:
    """Secret-share every parameter of ``graph``, owned by ``owner`` (once per model).

    The owner passes the graph with its weights; the other party passes
    ``graph.public()`` (weights replaced by zero placeholders of the same shape,
    never read). With ``session`` (a public id, new for every sharing of a
    model: the dealer refuses a mask id twice), the weights of bilinear layers
    are opened once under the dealer's reusable masks (one round and one
    weight-sized message per layer, once); then the plan of every batch must
    be :func:`material_plan` with the same session.
    """
    params: dict[tuple[str, str], SecretTensor | FixedSecretTensor] = {}
    by_name = {layer.name: layer for layer in graph.layers}
    for name, kind, shape in parameter_shapes(graph):
        layer = by_name[name]
        op = get_op(layer.op)
        value = None
        if party.rank == owner:
            value = op.param_view(layer, kind, getattr(layer, kind)).double()
        param = party.share(value, owner=owner, shape=shape)
        if session is not None and kind == "weight" and op.bilinear:
            param = param.fix_mask(mask_id(session, name))
        params[(name, kind)] = param
    return SharedModel(graph, params, session)


@dataclass(frozen=True)
class SharedWeights:
    """A model whose weights nobody knows: its public architecture and, for each party, a
    file only that party reads holding its raw shares (e.g. from private training with
    ``reveal_to=None``). :func:`veil.nn.inference.serve` accepts it in place of a model.
    """

    graph: SecureGraph
    files: tuple[str, str]
    frac_bits: int = 16


def private_save(obj: object, path: str) -> None:
    """``torch.save`` to ``path`` atomically (a crash leaves the old file or the new one),
    readable by this user only: a party's shares are for its own process."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".veil-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_shares(model: SharedModel, path: str) -> None:
    """Write this party's raw parameter shares to ``path`` (owner-only, atomically)."""
    private_save({f"{name}.{kind}": p.share.cpu() for (name, kind), p in model.params.items()},
                 path)


def load_shares(party: Party, graph: SecureGraph, path: str, frac_bits: int = 16,
                session: str | None = None) -> SharedModel:
    """This party's :class:`SharedModel` from its share file (see :func:`save_shares`);
    with a ``session``, the bilinear weights are opened once under reusable masks as in
    :func:`share_weights`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    params: dict[tuple[str, str], SecretTensor | FixedSecretTensor] = {}
    for name, kind, shape in parameter_shapes(graph):
        share = state.get(f"{name}.{kind}")
        if not isinstance(share, torch.Tensor) or tuple(share.shape) != shape \
                or share.dtype != torch.int64:
            raise ValueError(f"{path}: no int64 share of {name}.{kind} with shape {shape}")
        param = party.from_share(share, frac_bits)
        if session is not None and kind == "weight" and get_op(graph.layer(name).op).bilinear:
            param = param.fix_mask(mask_id(session, name))
        params[(name, kind)] = param
    return SharedModel(graph, params, session)


def setup_plan(graph: SecureGraph, session: str) -> list:
    """The dealer requests of :func:`share_weights` with ``session`` (the reusable masks)."""
    return [("fixed_mask", {"mask_id": mask_id(session, name), "shape": list(shape)})
            for name, kind, shape in parameter_shapes(graph)
            if kind == "weight" and get_op(graph.layer(name).op).bilinear]


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
        values[layer.name] = get_op(layer.op).forward(
            party, layer, model.layer_params(layer), [values[n] for n in layer.inputs])
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


def input_shapes(graph: SecureGraph) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every value of ``graph`` (the input and each layer's output)."""
    shapes = {graph.input_name: graph.input_shape}
    shapes.update({layer.name: layer.out_shape for layer in graph.layers})
    return shapes


def material_plan(graph: SecureGraph, batch: int, session: str | None = None) -> list:
    """The dealer requests ``[(kind, params), ...]`` of one forward pass on ``batch`` inputs.

    Each op plans its own layers (:meth:`veil.nn.ops.Op.plan`): bilinear layers a
    triple (with the reusable weight masks of ``session``, or fresh without
    one), non-linear gates their FSS keys (:func:`veil.mpc.nonlinear.plan`).
    """
    shapes = input_shapes(graph)
    out: list = []
    for layer in graph.layers:
        out += get_op(layer.op).plan(layer, [shapes[i] for i in layer.inputs], batch, session)
    return out
