"""The op table: one :class:`Op` per layer kind, registered by decorator.

An op carries every phase of its layer kind, in one file:

- **lowering** from ``torch.fx``: the modules, functions and tensor methods it
  claims (:attr:`Op.modules`, :attr:`Op.functions`, :attr:`Op.methods`) and
  :meth:`Op.lower`, which turns a claimed node into a
  :class:`~veil.nn.layer.Layer` (or ``None`` for an identity), refusing
  unsupported options with the model's source line;
- **plaintext evaluation**: :meth:`Op.float_forward` (float64) and
  :meth:`Op.twin` (the fixed-point twin, the secure arithmetic on plaintext);
- **secure forward** on this party's shares, :meth:`Op.forward`, and its
  **material plan** :meth:`Op.plan` (the dealer requests, from shapes alone);
- **backward** and its plan (:meth:`Op.backward`, :meth:`Op.backward_plan`,
  :meth:`Op.twin_backward`) for private training.

Adding a layer kind is adding a file under ``veil/nn/ops/``::

    @register
    class Square(Op):
        name = "square"
        ...

Example
-------
>>> from veil.nn.ops import get_op
>>> get_op("relu").name, get_op("linear").parameters
('relu', ('weight', 'bias'))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from veil.nn.layer import Layer

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import SecretTensor
    from veil.nn.lowering import Lowering

Request = tuple[str, dict]


def mask_id(session: str, layer: str) -> str:
    """The dealer's reusable-mask id of ``layer``'s weight in ``session`` (public)."""
    return f"{session}/{layer}.weight"


class Op:
    """One layer kind; subclasses override what applies to them (see the module docstring).

    Class attributes
    ----------------
    name: the ``Layer.op`` string.
    modules: ``nn.Module`` types it lowers (checked with ``isinstance``, in registration order).
    functions: callables of ``call_function`` nodes it lowers.
    methods: tensor method names of ``call_method`` nodes it lowers.
    parameters: which of ``weight``/``bias`` its layers may carry (model owner's).
    bilinear: its weight multiplies the input (a Beaver triple; a reusable mask when served).
    """

    name: ClassVar[str] = ""
    modules: ClassVar[tuple[type, ...]] = ()
    functions: ClassVar[tuple[Any, ...]] = ()
    methods: ClassVar[tuple[str, ...]] = ()
    parameters: ClassVar[tuple[str, ...]] = ()
    bilinear: ClassVar[bool] = False

    # -- lowering ------------------------------------------------------------------
    def lower(self, low: Lowering) -> Layer | None:
        """The layer of a claimed fx node (``None``: the node is an identity)."""
        return low.layer(self.name, (low.first_input(),))

    # -- plaintext -----------------------------------------------------------------
    def float_forward(self, layer: Layer, args: list[torch.Tensor]) -> torch.Tensor:
        """Float64 plaintext evaluation (checks conversion and folding)."""
        raise NotImplementedError(self.name)

    def twin(self, layer: Layer, args: list[torch.Tensor], frac_bits: int) -> torch.Tensor:
        """Fixed-point int64 plaintext evaluation: exactly the secure arithmetic."""
        raise NotImplementedError(self.name)

    # -- secure forward ----------------------------------------------------------------
    def param_view(self, layer: Layer, kind: str, t: torch.Tensor) -> torch.Tensor:
        """The layout a parameter is shared in (so the online phase does no re-layout)."""
        return t

    def param_unview(self, layer: Layer, kind: str, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`param_view`: the parameter in its module's layout."""
        return t.reshape(getattr(layer, kind).shape)

    def forward(self, party: Party, layer: Layer, params: dict[str, Any],
                args: list[SecretTensor]) -> SecretTensor:
        """This party's shares of the output (``params``: shared ``weight``/``bias``)."""
        raise NotImplementedError(self.name)

    def plan(self, layer: Layer, in_shapes: list[tuple[int, ...]], batch: int,
             session: str | None = None) -> list[Request]:
        """The dealer requests of :meth:`forward` on a batch of ``batch`` inputs.

        ``in_shapes`` are the per-sample input shapes; ``session`` names the reusable
        weight masks of a served model (``None``: fresh triples).
        """
        return []

    # -- training ------------------------------------------------------------------------
    #: Whether private training can run through this op (it has a backward).
    trainable: ClassVar[bool] = False

    def train_forward(self, party: Party, layer: Layer, params: dict[str, Any],
                      args: list[SecretTensor]) -> tuple[SecretTensor, Any]:
        """Forward for training, every truncation exact; returns ``(output, saved)`` where
        ``saved`` is what :meth:`backward` needs (shares only)."""
        return self.forward(party, layer, params, args), None

    def train_plan(self, layer: Layer, in_shapes: list[tuple[int, ...]], batch: int,
                   frac_bits: int) -> list[Request]:
        """The dealer requests of :meth:`train_forward`."""
        return self.plan(layer, in_shapes, batch)

    def grad_bits(self, kind: str, frac_bits: int) -> int:
        """Fractional bits of the gradient of parameter ``kind`` as :meth:`backward` returns
        it: a weight gradient may stay untruncated (``2 * frac_bits``), so that SGD truncates
        once for the gradient and the update together."""
        return frac_bits

    def backward(self, party: Party, layer: Layer, params: dict[str, Any], saved: Any,
                 grad: SecretTensor, needs: list[bool]
                 ) -> tuple[list[SecretTensor | None], dict[str, SecretTensor]]:
        """Shares of the gradients of the inputs (``None`` where ``needs`` is false) and of
        the parameters (held at :meth:`grad_bits`), from the output's gradient ``grad``."""
        raise NotImplementedError(f"op {self.name!r} has no backward")

    def backward_plan(self, layer: Layer, in_shapes: list[tuple[int, ...]], batch: int,
                      needs: list[bool], frac_bits: int) -> list[Request]:
        """The dealer requests of :meth:`backward`."""
        return []

    def twin_train_forward(self, layer: Layer, params: dict[str, torch.Tensor],
                           args: list[torch.Tensor], frac_bits: int
                           ) -> tuple[torch.Tensor, Any]:
        """:meth:`train_forward` on plaintext int64 (``params`` in the shared layout)."""
        return self.twin(layer, args, frac_bits), None

    def twin_backward(self, layer: Layer, params: dict[str, torch.Tensor], saved: Any,
                      grad: torch.Tensor, needs: list[bool], frac_bits: int
                      ) -> tuple[list[torch.Tensor | None], dict[str, torch.Tensor]]:
        """:meth:`backward` on plaintext int64: bit-exactly what the parties compute."""
        raise NotImplementedError(f"op {self.name!r} has no backward")


_OPS: dict[str, Op] = {}
_MODULES: list[tuple[type, Op]] = []
_FUNCTIONS: dict[Any, Op] = {}
_METHODS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op (and its lowering claims) to the table."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _OPS and type(_OPS[cls.name]).__qualname__ != cls.__qualname__:
        raise ValueError(f"op {cls.name!r} is already registered by "
                         f"{type(_OPS[cls.name]).__module__}")
    op = cls()
    _OPS[cls.name] = op
    _MODULES[:] = [(t, o) for t, o in _MODULES if o.name != cls.name]
    _MODULES.extend((t, op) for t in cls.modules)
    _FUNCTIONS.update({f: op for f in cls.functions})
    _METHODS.update({m: op for m in cls.methods})
    return cls


def get_op(name: str) -> Op:
    """The registered op ``name`` (a clear error when there is none)."""
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"no op {name!r} is registered (known: {', '.join(sorted(_OPS))})") \
            from None


def op_names() -> tuple[str, ...]:
    """Every registered op that layers can carry."""
    return tuple(n for n in _OPS if n != "identity")


def op_for_module(module: Any) -> Op | None:
    for t, op in _MODULES:
        if isinstance(module, t):
            return op
    return None


def op_for_function(fn: Any) -> Op | None:
    try:
        return _FUNCTIONS.get(fn)
    except TypeError:  # unhashable targets
        return None


def op_for_method(name: str) -> Op | None:
    return _METHODS.get(name)
