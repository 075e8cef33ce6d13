"""Convert an HE-friendly ``nn.Module`` into a chain of affine maps and low-degree polynomials.

CKKS evaluates additions and multiplications only, so :func:`convert` traces the
model with ``torch.fx`` (as :mod:`veil.nn` does), keeps what is affine
(``Linear``, ``Conv1d/2d`` as im2col matrix products, average pooling, eval-mode
BatchNorm, flatten/view/reshape, scaling by constants) and polynomial (``x * x``,
``x ** 2``, ``torch.square``, :class:`Square`, :class:`Polynomial` of degree <= 2),
and refuses anything else before any encryption, naming the op and the model
source line. Consecutive affine steps fuse into one matrix (one level instead of
several), so the multiplicative depth is the number of affine groups plus the
activations' depths.

Example
-------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 7, stride=3), Square(), nn.Flatten(),
...                     nn.Linear(256, 64), Square(), nn.Linear(64, 10))
>>> g = convert(net, (1, 28, 28))
>>> [op.kind for op in g.ops], g.depth
(['affine', 'square', 'affine', 'square', 'affine'], 5)
>>> x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
>>> bool(torch.allclose(torch.from_numpy(g.forward(x.numpy())), net.double()(x)))
True
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from veil.nn.layer import UnsupportedModelError
from veil.nn.lowering import source_of as _source


class Square(nn.Module):
    """``x ** 2``: the HE-friendly activation (one multiplicative level)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Polynomial(nn.Module):
    """``c0 + c1 x + c2 x**2`` elementwise (two levels in CKKS; one for ``x**2`` itself).

    Example
    -------
    >>> Polynomial((0.5, 0.25, 0.125))(torch.tensor([2.0]))
    tensor([1.5000])
    """

    def __init__(self, coeffs: tuple[float, ...] | list[float]):
        super().__init__()
        coeffs = tuple(float(c) for c in coeffs)
        if not 1 <= len(coeffs) <= 3 or not all(math.isfinite(c) for c in coeffs):
            raise ValueError(f"coeffs must be 1 to 3 finite numbers (degree <= 2), got {coeffs}")
        self.coeffs = coeffs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for c in reversed(self.coeffs):
            out = out * x + c
        return out

    def extra_repr(self) -> str:
        return f"coeffs={self.coeffs}"


@dataclass
class HEOp:
    """One step: ``affine`` (``y = matrix @ x + bias``), ``square`` or ``poly`` (``coeffs``)."""

    kind: str
    in_features: int
    out_features: int
    matrix: np.ndarray | None = None
    bias: np.ndarray | None = None
    coeffs: tuple[float, ...] = ()
    source: str = ""

    @property
    def depth(self) -> int:
        """Levels consumed: 1 for affine maps and squares, 2 for ``c0 + x (c1 + c2 x)``."""
        return 2 if self.kind == "poly" else 1

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Plaintext float64 evaluation on a ``(batch, in_features)`` array."""
        if self.kind == "affine":
            return x @ self.matrix.T + self.bias
        if self.kind == "square":
            return x * x
        c = (*self.coeffs, 0.0, 0.0)[:3]
        return c[0] + x * (c[1] + c[2] * x)


@dataclass
class HEGraph:
    """A converted model: a chain of :class:`HEOp` on flattened per-sample features."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    ops: list[HEOp] = field(default_factory=list)

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def depth(self) -> int:
        """Multiplicative depth (rescales) of the whole evaluation."""
        return sum(op.depth for op in self.ops)

    def check_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``x`` as a ``(batch, features)`` float64 array; clear errors for bad input."""
        if isinstance(x, torch.Tensor):
            if not x.is_floating_point():
                raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
            x = x.detach().cpu().double().numpy()
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"input must be floating point, got dtype {x.dtype}")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            dims = ", ".join(map(str, self.input_shape))
            raise ValueError(f"input must have shape (batch, {dims}), got {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError("input batch is empty")
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        return x.reshape(x.shape[0], -1).astype(np.float64)

    def forward(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Plaintext twin: float64 outputs ``(batch, *output_shape)``."""
        h = self.check_input(x)
        for op in self.ops:
            h = op.forward(h)
        return h.reshape(h.shape[0], *self.output_shape)

    def bounds(self, input_bound: float) -> list[float]:
        """Max |value| after each op for inputs in ``[-input_bound, input_bound]`` (interval
        arithmetic; used for the stated error and the integer headroom)."""
        b = np.full(self.in_features, float(input_bound))
        out = []
        for op in self.ops:
            if op.kind == "affine":
                b = np.abs(op.matrix) @ b + np.abs(op.bias)
            elif op.kind == "square":
                b = b * b
            else:
                c = np.abs((*op.coeffs, 0.0, 0.0)[:3])
                b = c[0] + c[1] * b + c[2] * b * b
            out.append(float(b.max()))
        return out


    def error_bound(self, params, input_bound: float) -> float:
        """The stated CKKS error: a bound on ``max |decrypted - plaintext|`` for inputs in
        ``[-input_bound, input_bound]`` under ``params`` (a
        :class:`~veil.he.params.CKKSParameters`).

        Each encryption, rescale and key switch adds at most ``delta = 6 sigma sqrt(N) /
        scale`` (sigma = 3.2, the standard's error width; a high-probability bound on the
        canonical-embedding norm), and weights round to ``1 / (2 q)``; errors then propagate
        through each op with the interval bounds of :meth:`bounds`.
        """
        delta = 6 * 3.2 * math.sqrt(params.poly_modulus_degree) / 2.0 ** params.scale_bits
        weight_err = 0.5 / 2.0 ** params.scale_bits
        e = np.full(self.in_features, delta)
        b = np.full(self.in_features, float(input_bound))
        for op in self.ops:
            if op.kind == "affine":
                e = np.abs(op.matrix) @ e + weight_err * op.in_features * b.max() + delta
                b = np.abs(op.matrix) @ b + np.abs(op.bias)
            elif op.kind == "square":
                e = 2 * b * e + e * e + delta
                b = b * b
            else:
                c = np.abs((*op.coeffs, 0.0, 0.0)[:3])
                e = (c[1] + 2 * c[2] * b) * e + c[2] * e * e + 2 * delta
                b = c[0] + c[1] * b + c[2] * b * b
        return float(e.max())


# --------------------------------------------------------------------------- tracing

_IDENTITY_MODULES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)
_AFFINE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)
_RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape}
_AFFINE_FUNCS = {torch.nn.functional.avg_pool2d, torch.nn.functional.avg_pool1d,
                 torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.dropout}
_SCALAR_OPS = {operator.mul, operator.truediv, operator.add, operator.sub, torch.mul, torch.add,
               torch.sub, torch.div}


def _refuse(node: torch.fx.Node, what: str, why: str = "is not supported") -> UnsupportedModelError:
    return UnsupportedModelError(f"{what} {why} in HE inference (CKKS evaluates only affine "
                                 f"maps and low-degree polynomials); used at {_source(node)}")


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _affine_of(fn, in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The matrix and bias of an affine ``fn`` on per-sample shape ``in_shape`` (im2col for
    convolutions: evaluating the layer on the standard basis gives its columns exactly)."""
    n = math.prod(in_shape)
    with torch.no_grad():
        zero = fn(torch.zeros(1, *in_shape, dtype=torch.float64)).reshape(1, -1)
        cols = fn(torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)).reshape(n, -1)
    return (cols - zero).T.numpy().copy(), zero[0].numpy().copy()


class _Tracer(torch.fx.Tracer):
    """Keeps :class:`Square` and :class:`Polynomial` as leaves (their ops are known)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Square | Polynomial) or super().is_leaf_module(m, qualname)


def convert(model: nn.Module, input_shape: tuple[int, ...] | torch.Size) -> HEGraph:
    """Trace ``model`` and lower it to an :class:`HEGraph`.

    Parameters
    ----------
    model: an ``nn.Module`` (a float64 eval-mode copy is traced; the model is not modified).
    input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.

    Raises
    ------
    UnsupportedModelError
        For any op CKKS cannot evaluate (ReLU, max pooling, residual additions, ...),
        naming the op and the source line.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    model = copy.deepcopy(model).eval()  # the float64 copy below must not touch the caller's
    if isinstance(model, (*_AFFINE_MODULES, Square, Polynomial)):
        model = nn.Sequential(model)  # trace a bare layer as a layer, not its functional body
    tracer = _Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
        gm = torch.fx.GraphModule(tracer.root, graph)
    except Exception as exc:  # fx raises many types; the user needs the message
        raise UnsupportedModelError(f"torch.fx could not trace {type(model).__name__}: {exc}. "
                                    "HE inference needs a forward without data-dependent "
                                    "control flow.") from exc
    gm = gm.double()
    batch = 2
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(batch, *input_shape, dtype=torch.float64))
    except Exception as exc:
        raise ValueError(f"{type(model).__name__} does not accept inputs of shape "
                         f"(batch, {', '.join(map(str, input_shape))}): {exc}") from exc
    modules = dict(gm.named_modules())
    ops: list[HEOp] = []
    current: torch.fx.Node | None = None  # the node holding the running value
    output_shape: tuple[int, ...] | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                raise _refuse(node, "a second model input")
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise _refuse(node, "a model output other than the last computed tensor")
            output_shape = _shape(current)[1:]
            continue
        shape = _shape(node)
        if shape is None:  # x.size(0) and friends: static shape arithmetic
            if (node.op == "call_method" and node.target in ("size", "dim")) or \
                    (node.op == "call_function" and node.target in (operator.getitem, getattr)):
                continue
            raise _refuse(node, f"{node.op} {getattr(node.target, '__name__', node.target)!r}")
        if shape[0] != batch:
            raise _refuse(node, "an op that mixes the samples of a batch")
        tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node) and _shape(a)]
        if node.op == "get_attr" or any(a is not current for a in tensor_args) or not tensor_args:
            if node.op == "call_function" and node.target in (operator.mul, torch.mul) and \
                    len(tensor_args) == 2 and all(a is current for a in tensor_args):
                pass
            else:
                raise _refuse(node, "combining tensors other than the running activation "
                              "(a residual or parameter used outside a layer)")
        in_shape = _shape(current)[1:]
        op = _lower(node, modules, in_shape, shape[1:])
        if op is not None:
            ops.append(op)
        current = node
    assert output_shape is not None
    return HEGraph(input_shape, tuple(output_shape), _fuse(ops))


def _lower(node: torch.fx.Node, modules: dict, in_shape: tuple[int, ...],
           out_shape: tuple[int, ...]) -> HEOp | None:
    n_in, n_out, src = math.prod(in_shape), math.prod(out_shape), _source(node)

    def affine(fn) -> HEOp:
        m, b = _affine_of(fn, in_shape)
        return HEOp("affine", n_in, n_out, m, b, source=src)

    if node.op == "call_module":
        mod = modules[node.target]
        if isinstance(mod, _IDENTITY_MODULES):
            return None
        if isinstance(mod, _AFFINE_MODULES):
            return affine(mod)
        if isinstance(mod, Square):
            return HEOp("square", n_in, n_out, source=src)
        if isinstance(mod, Polynomial):
            c = mod.coeffs
            if c == (0.0, 0.0, 1.0):
                return HEOp("square", n_in, n_out, source=src)
            if len(c) < 3 or c[2] == 0.0:  # degree <= 1: an affine map
                return affine(mod)
            return HEOp("poly", n_in, n_out, coeffs=c, source=src)
        raise _refuse(node, f"the layer {type(mod).__name__} ({node.target})")
    if node.op == "call_method":
        if node.target in _RESHAPE_METHODS:
            return None
        if node.target in ("pow", "square") or node.target == "__pow__":
            return _power(node, n_in, n_out, src)
        if node.target in ("mul", "div", "add", "sub"):
            return _scalar(node, in_shape, affine)
        raise _refuse(node, f"the tensor method .{node.target}()")
    if node.op == "call_function":
        t = node.target
        if t in _RESHAPE_FUNCS:
            return None
        if t in (operator.pow, torch.pow, torch.square):
            return _power(node, n_in, n_out, src)
        if t in (operator.mul, torch.mul) and len(node.args) == 2 and \
                node.args[0] is node.args[1]:
            return HEOp("square", n_in, n_out, source=src)
        if t in _SCALAR_OPS:
            return _scalar(node, in_shape, affine)
        if t in _AFFINE_FUNCS:
            kwargs = dict(node.kwargs)
            rest = node.args[1:]
            return affine(lambda x: t(x, *rest, **kwargs))
        raise _refuse(node, f"the function {getattr(t, '__name__', t)}")
    raise _refuse(node, f"the fx op {node.op}")


def _power(node: torch.fx.Node, n_in: int, n_out: int, src: str) -> HEOp:
    exp = 2 if node.target in (torch.square, "square") else \
        (node.args[1] if len(node.args) > 1 else node.kwargs.get("exponent"))
    if exp != 2:
        raise _refuse(node, f"the power {exp!r}", "is not supported (only squares are)")
    return HEOp("square", n_in, n_out, source=src)


def _scalar(node: torch.fx.Node, in_shape, affine) -> HEOp:
    """``x op c`` with a Python number ``c`` (any other operand is refused)."""
    args = list(node.args)
    consts = [a for a in args if not isinstance(a, torch.fx.Node)]
    if len(args) != 2 or len(consts) != 1 or not isinstance(consts[0], int | float):
        raise _refuse(node, f"{getattr(node.target, '__name__', node.target)} with a "
                      "non-constant operand")
    c = float(consts[0])
    name = getattr(node.target, "__name__", str(node.target)).strip("_")
    first = isinstance(args[0], torch.fx.Node)
    if name in ("truediv", "div") and not first:
        raise _refuse(node, "dividing by the activation")
    fns = {"mul": lambda x: x * c, "truediv": lambda x: x / c, "div": lambda x: x / c,
           "add": lambda x: x + c, "sub": (lambda x: x - c) if first else (lambda x: c - x)}
    return affine(fns[name])


def _fuse(ops: list[HEOp]) -> list[HEOp]:
    """Compose consecutive affine ops into one (one rescale instead of several)."""
    out: list[HEOp] = []
    for op in ops:
        if op.kind == "affine" and out and out[-1].kind == "affine":
            prev = out.pop()
            op = HEOp("affine", prev.in_features, op.out_features, op.matrix @ prev.matrix,
                      op.matrix @ prev.bias + op.bias, source=f"{prev.source} + {op.source}")
        out.append(op)
    if not out or out[0].kind != "affine":
        # Every level's plaintext factor is chosen per affine op; an identity map keeps the
        # evaluator uniform when the model starts with an activation.
        n = out[0].in_features if out else 0
        if n:
            out.insert(0, HEOp("affine", n, n, np.eye(n), np.zeros(n), source="input"))
    return out
