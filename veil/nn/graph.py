"""Convert a PyTorch model into a secure-inference graph with ``torch.fx``.

:func:`convert` traces any ``nn.Module`` (``nn.Sequential``, custom
``forward``, residual networks), propagates shapes from the input shape,
validates every node and lowers it to a short list of :class:`Layer` s that the
secure executor and its plaintext twin both run. BatchNorm is folded into the
preceding Linear/Conv2d when that layer feeds nothing else; otherwise it stays
as a per-channel affine layer. A ReLU followed by a max pool runs after the pool
(the same function, with fewer comparisons). Anything unsupported is refused *before* any
computation, with an error naming the op and the model source line using it.

Supported: Linear, Conv2d (stride, padding, bias; groups=1, dilation=1), ReLU,
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (output dividing the input),
BatchNorm1d/2d (eval statistics), Flatten / view / reshape, Dropout and
Identity (identity in eval), residual addition, and argmax of the output.

Example
-------
>>> import torch
>>> from veil.models import build
>>> from veil.nn import convert
>>> g = convert(build("lenet"), (1, 28, 28))
>>> [layer.op for layer in g.layers][:4]      # ReLU after the pool: 4x fewer comparisons
['conv2d', 'maxpool2d', 'relu', 'conv2d']
>>> g.output_shape
(10,)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from veil import ring
from veil.nn.layer import Layer, UnsupportedModelError
from veil.nn.lowering import Lowering, meta_shape, refuse, target_name
from veil.nn.ops import get_op, op_for_function, op_for_method, op_for_module, op_names

#: Every op a layer can carry (the table of :mod:`veil.nn.ops`).
OPS = op_names()


@dataclass
class SecureGraph:
    """A validated, BatchNorm-folded model, ready for secure or twin execution.

    ``input_shape`` and ``output_shape`` exclude the batch dimension.
    """

    input_name: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    output: str

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layer(self.output).out_shape if self.output != self.input_name \
            else self.input_shape

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def parameters(self) -> list[tuple[str, str, torch.Tensor]]:
        """``(layer, 'weight'|'bias', tensor)`` for every model-owner parameter, in order."""
        out = []
        for layer in self.layers:
            for kind in ("weight", "bias"):
                t = getattr(layer, kind)
                if t is not None:
                    out.append((layer.name, kind, t))
        return out

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error when ``x`` is not a finite float batch of the right shape."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            dims = ", ".join(map(str, self.input_shape))
            raise ValueError(f"input must have shape (batch, {dims}), got {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError("input batch is empty")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        ring.check_range(x, what="input")  # locally, before any party starts

    def check_parameters(self, frac_bits: int = ring.DEFAULT_FRAC_BITS) -> None:
        """Raise a clear error, naming the parameter, if a weight is not encodable."""
        for name, kind, t in self.parameters():
            ring.check_range(t, frac_bits, f"parameter {name}.{kind}")

    def signature(self) -> tuple:
        """A hashable description of the architecture (ops, wiring, shapes; no weights)."""
        return (self.input_name, self.input_shape, self.output, tuple(
            (layer.name, layer.op, layer.inputs, layer.out_shape,
             repr(sorted(layer.params.items())),
             None if layer.weight is None else tuple(layer.weight.shape),
             None if layer.bias is None else tuple(layer.bias.shape))
            for layer in self.layers))

    def public(self) -> SecureGraph:
        """The architecture without the weights (zeros of the same shapes): what the data
        owner's process gets."""
        layers = [replace(layer,
                          weight=None if layer.weight is None else torch.zeros_like(layer.weight),
                          bias=None if layer.bias is None else torch.zeros_like(layer.bias))
                  for layer in self.layers]
        return replace(self, layers=layers)

    def with_weights(self, state: dict[str, torch.Tensor]) -> SecureGraph:
        """A copy with the parameters of ``state`` (keys ``'<layer>.weight'``/``'.bias'``)."""
        layers = []
        for layer in self.layers:
            kw = {}
            for kind in ("weight", "bias"):
                old = getattr(layer, kind)
                if old is not None:
                    new = state[f"{layer.name}.{kind}"]
                    if new.shape != old.shape:
                        raise ValueError(f"{layer.name}.{kind} has shape {tuple(new.shape)}, "
                                         f"expected {tuple(old.shape)}")
                    kw[kind] = new
            layers.append(replace(layer, **kw))
        return replace(self, layers=layers)

    def state(self) -> dict[str, torch.Tensor]:
        """The parameters as ``{'<layer>.weight': tensor, ...}`` (for files and transport)."""
        return {f"{name}.{kind}": t for name, kind, t in self.parameters()}

    def with_argmax(self) -> SecureGraph:
        """A copy that ends with a one-hot argmax over the last output dimension."""
        if len(self.output_shape) != 1:
            raise UnsupportedModelError(f"argmax needs a (batch, classes) output, "
                                        f"got per-sample shape {self.output_shape}")
        layer = Layer("argmax", "argmax", (self.output,), self.output_shape,
                      source="secure_inference(..., argmax=True)")
        return replace(self, layers=[*self.layers, layer], output="argmax")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float plaintext execution of the converted graph (checks conversion and folding)."""
        self.check_input(x)
        values: dict[str, torch.Tensor] = {self.input_name: x.double()}
        for layer in self.layers:
            args = [values[i] for i in layer.inputs]
            values[layer.name] = get_op(layer.op).float_forward(layer, args)
        return values[self.output]


# --------------------------------------------------------------------------- conversion

_STATIC_FUNCS = {operator.getitem, operator.mul, operator.floordiv, operator.add, operator.sub,
                 getattr}


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; the user needs the message
        raise UnsupportedModelError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Secure inference needs "
            "a forward without data-dependent control flow.") from exc
    return torch.fx.GraphModule(tracer.root, graph)


def convert(model: nn.Module, input_shape: tuple[int, ...] | torch.Size,
            fold_batchnorm: bool = True, pool_before_relu: bool = True) -> SecureGraph:
    """Trace, validate and lower ``model`` into a :class:`SecureGraph`.

    Parameters
    ----------
    model: any ``nn.Module``; it is put in eval mode (a copy is not made).
    input_shape: the per-sample input shape, e.g. ``(1, 28, 28)``.
    fold_batchnorm: fold BatchNorm into the preceding Linear/Conv2d where possible.
    pool_before_relu: run ``ReLU -> MaxPool2d`` as ``MaxPool2d -> ReLU`` (the same
        function; see :func:`pool_before_relu_layers`).

    Raises
    ------
    UnsupportedModelError
        Naming the unsupported op and the source line that uses it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(s) for s in input_shape)
    model.eval()
    gm = _trace(model)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"secure inference needs exactly one input tensor, "
                                    f"{type(model).__name__}.forward takes {len(placeholders)}")
    batch = 2
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(batch, *input_shape, dtype=dtype))
    except UnsupportedModelError:
        raise
    except Exception as exc:
        raise ValueError(f"{type(model).__name__} does not accept inputs of shape "
                         f"(batch, {', '.join(map(str, input_shape))}): {exc}") from exc
    modules = dict(gm.named_modules())
    layers: list[Layer] = []
    alias: dict[str, str] = {}  # identity nodes point at their input
    output = None

    def src(arg: Any) -> str:
        if not isinstance(arg, torch.fx.Node) or meta_shape(arg) is None:
            raise AssertionError("tensor argument expected")
        return alias.get(arg.name, arg.name)

    for node in gm.graph.nodes:
        shape = meta_shape(node)
        if node.op == "placeholder":
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node) or meta_shape(out) is None:
                raise refuse(node, "a non-tensor or multi-tensor model output")
            output = src(out)
            continue
        if shape is None:  # shape arithmetic such as x.size(0): static, allowed
            _check_static(node)
            continue
        if shape[0] != batch:
            raise refuse(node, "an op that mixes samples of the batch (batch dimension changed)")
        per = shape[1:]
        lay = _lower(node, modules, per, src)
        if lay is None:
            alias[node.name] = src(node.args[0])
            continue
        layers.append(lay)
    assert output is not None
    graph = SecureGraph(placeholders[0].name, input_shape, layers, output)
    _check_used_tensors(graph)
    if fold_batchnorm:
        graph = fold_batchnorm_layers(graph)
    graph.check_parameters()  # (folded) weights in range, before any party starts
    return pool_before_relu_layers(graph) if pool_before_relu else graph


def _check_static(node: torch.fx.Node) -> None:
    ok = (node.op == "call_method" and node.target in ("size", "dim")) or \
         (node.op == "call_function" and node.target in _STATIC_FUNCS)
    if not ok:
        raise refuse(node, f"{node.op} {target_name(node)!r}")


def _lower(node: torch.fx.Node, modules: dict[str, nn.Module], per: tuple[int, ...],
           src) -> Layer | None:
    """One fx node to a Layer through the op table (``None`` for identities)."""
    if node.op == "get_attr":
        raise refuse(node, f"direct use of the tensor attribute {node.target!r}",
                     "(parameters must live in supported layers) is not supported")
    module = None
    if node.op == "call_module":
        module = modules[node.target]
        op = op_for_module(module)
        what = f"the layer {type(module).__name__} ({node.target})"
    elif node.op == "call_function":
        op = op_for_function(node.target)
        what = f"the function {target_name(node)}"
    elif node.op == "call_method":
        op = op_for_method(node.target)
        what = f"the tensor method .{node.target}()"
    else:
        raise refuse(node, f"the fx op {node.op} {target_name(node)!r}")
    if op is None:
        raise refuse(node, what)
    return op.lower(Lowering(node, module, per, src))


def _check_used_tensors(graph: SecureGraph) -> None:
    known = {graph.input_name}
    for layer in graph.layers:
        for i in layer.inputs:
            if i not in known:
                raise AssertionError(f"layer {layer.name} reads unknown {i}")
        known.add(layer.name)


# --------------------------------------------------------------------------- BatchNorm folding

def fold_batchnorm_layers(graph: SecureGraph) -> SecureGraph:
    """Fold each ``affine`` (BatchNorm) layer into the Linear/Conv2d feeding it, when possible.

    Folding is exact in real arithmetic: ``BN(Wx + b) = (sW)x + (sb + t)``. It
    applies only when the producer feeds nothing but the BatchNorm and the
    BatchNorm acts on the producer's channels; otherwise the affine layer stays.
    """
    consumers: dict[str, int] = {}
    for layer in graph.layers:
        for i in layer.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    consumers[graph.output] = consumers.get(graph.output, 0) + 1
    by_name = {layer.name: layer for layer in graph.layers}
    folded: dict[str, str] = {}  # removed affine -> producer
    new_layers: list[Layer] = []
    replaced: dict[str, Layer] = {}
    for layer in graph.layers:
        prod = by_name.get(layer.inputs[0]) if layer.op == "affine" else None
        if prod is not None and prod.op in ("linear", "conv2d") and consumers[prod.name] == 1 \
                and prod.weight.shape[0] == layer.weight.shape[0] and prod.name not in folded:
            cur = replaced.get(prod.name, prod)
            s, t = layer.weight.double(), layer.bias.double()
            w = cur.weight.double() * s.reshape(-1, *([1] * (cur.weight.dim() - 1)))
            b = t if cur.bias is None else cur.bias.double() * s + t
            new = replace(cur, weight=w.to(cur.weight.dtype), bias=b.to(cur.weight.dtype),
                          source=f"{cur.source} + folded {layer.source}")
            replaced[prod.name] = new
            folded[layer.name] = prod.name
            continue
        new_layers.append(layer)
    out_layers = []
    for layer in new_layers:
        layer = replaced.get(layer.name, layer)
        inputs = tuple(folded.get(i, i) for i in layer.inputs)
        out_layers.append(replace(layer, inputs=inputs))
    return SecureGraph(graph.input_name, graph.input_shape, out_layers,
                       folded.get(graph.output, graph.output))


# --------------------------------------------------------------------------- ReLU / MaxPool order

def pool_before_relu_layers(graph: SecureGraph) -> SecureGraph:
    """Run each ``ReLU -> MaxPool2d`` pair as ``MaxPool2d -> ReLU``.

    ReLU is non-decreasing, so ``max_i relu(x_i) = relu(max_i x_i)`` exactly (in
    fixed point too: both are selections of input values or zero), whatever the
    pool's padding. The ReLU's comparisons then run on the pooled tensor:
    kernel-area times fewer (4x for 2x2 pools). Applies when the ReLU feeds
    only the pool; the pair keeps its two names, swapped, so later layers still
    read the pool's name.
    """
    consumers: dict[str, int] = {graph.output: 1}
    for layer in graph.layers:
        for i in layer.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    position = {layer.name: i for i, layer in enumerate(graph.layers)}
    layers = list(graph.layers)
    for pool in graph.layers:
        relu = graph.layers[position[pool.inputs[0]]] if pool.inputs[0] in position else None
        if pool.op != "maxpool2d" or relu is None or relu.op != "relu" \
                or consumers[relu.name] != 1:
            continue
        # Nothing between the two reads the ReLU (its only consumer is the pool), so the
        # pooled-then-rectified pair can take the ReLU's and the pool's places.
        layers[position[relu.name]] = replace(pool, name=relu.name, inputs=relu.inputs)
        layers[position[pool.name]] = replace(relu, name=pool.name, inputs=(relu.name,),
                                              out_shape=pool.out_shape)
    return replace(graph, layers=layers)
