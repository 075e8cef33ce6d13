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
import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

# Ops with secret-dependent cost; everything else is local.
LINEAR_OPS = ("linear", "conv2d", "affine")
OPS = ("linear", "conv2d", "affine", "relu", "maxpool2d", "avgpool2d", "add", "reshape",
       "argmax")


class UnsupportedModelError(ValueError):
    """The model uses an op that secure inference cannot run (raised before any computation)."""


@dataclass
class Layer:
    """One step of a secure graph.

    Attributes
    ----------
    name: unique name (the fx node's).
    op: one of :data:`OPS`.
    inputs: names of the layers (or the graph input) it reads.
    out_shape: output shape without the batch dimension.
    weight, bias: float parameters of ``linear``/``conv2d``/``affine`` (model owner's).
    params: static hyper-parameters (stride, padding, kernel size, ...).
    source: the model source line that produced it.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""


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
            values[layer.name] = _float_op(layer, args)
        return values[self.output]


def _float_op(layer: Layer, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    p = layer.params
    w = None if layer.weight is None else layer.weight.double()
    b = None if layer.bias is None else layer.bias.double()
    if layer.op == "linear":
        return F.linear(x, w, b)
    if layer.op == "conv2d":
        return F.conv2d(x, w, b, stride=p["stride"], padding=p["padding"])
    if layer.op == "affine":
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * w.reshape(shape) + b.reshape(shape)
    if layer.op == "relu":
        return torch.relu(x)
    if layer.op == "maxpool2d":
        return F.max_pool2d(x, p["kernel_size"], p["stride"], p["padding"])
    if layer.op == "avgpool2d":
        return F.avg_pool2d(x, p["kernel_size"], p["stride"], p["padding"])
    if layer.op == "add":
        return args[0] + args[1]
    if layer.op == "reshape":
        return x.reshape(x.shape[0], *layer.out_shape)
    if layer.op == "argmax":
        return F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
    raise AssertionError(layer.op)


# --------------------------------------------------------------------------- conversion

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s+(.*)')


def _source(node: torch.fx.Node) -> str:
    """``file:line (function): code`` of the user's line that created ``node``."""
    frames = _FRAME.findall(node.stack_trace or "")
    user = [f for f in frames if "/torch/" not in f[0]]
    if not user:
        return f"fx node {node.name!r}"
    path, line, func, code = user[-1]
    return f"{path}:{line} (in {func}): {code.strip()}"


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _refuse(node: torch.fx.Node, what: str, why: str = "is not supported") -> UnsupportedModelError:
    return UnsupportedModelError(f"{what} {why} in secure inference; used at {_source(node)}")


_RELU_FUNCS = {F.relu, torch.relu, torch.nn.functional.relu}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                     nn.Identity)
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


def _meta_shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


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
        if not isinstance(arg, torch.fx.Node) or _meta_shape(arg) is None:
            raise AssertionError("tensor argument expected")
        return alias.get(arg.name, arg.name)

    for node in gm.graph.nodes:
        shape = _meta_shape(node)
        if node.op == "placeholder":
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node) or _meta_shape(out) is None:
                raise _refuse(node, "a non-tensor or multi-tensor model output")
            output = src(out)
            continue
        if shape is None:  # shape arithmetic such as x.size(0): static, allowed
            _check_static(node)
            continue
        if shape[0] != batch:
            raise _refuse(node, "an op that mixes samples of the batch (batch dimension changed)")
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
    return pool_before_relu_layers(graph) if pool_before_relu else graph


def _check_static(node: torch.fx.Node) -> None:
    ok = (node.op == "call_method" and node.target in ("size", "dim")) or \
         (node.op == "call_function" and node.target in _STATIC_FUNCS)
    if not ok:
        raise _refuse(node, f"{node.op} {_target_name(node)!r}")


def _target_name(node: torch.fx.Node) -> str:
    t = node.target
    return getattr(t, "__name__", str(t))


def _lower(node: torch.fx.Node, modules: dict[str, nn.Module], per: tuple[int, ...],
           src) -> Layer | None:
    """One fx node to a Layer (``None`` for identities)."""
    name, source = node.name, _source(node)

    def mk(op: str, inputs: tuple[str, ...], **kw: Any) -> Layer:
        return Layer(name, op, inputs, per, source=source, **kw)

    def tensor_args() -> list[torch.fx.Node]:
        return [a for a in node.args if isinstance(a, torch.fx.Node) and _meta_shape(a)]

    if node.op == "get_attr":
        raise _refuse(node, f"direct use of the tensor attribute {node.target!r}",
                      "(parameters must live in supported layers) is not supported")
    if node.op == "call_module":
        mod = modules[node.target]
        x = src(node.args[0])
        if isinstance(mod, _IDENTITY_MODULES):
            return None
        if isinstance(mod, nn.Linear):
            return mk("linear", (x,), weight=mod.weight.detach().clone(),
                      bias=None if mod.bias is None else mod.bias.detach().clone())
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1 or _pair(mod.dilation) != (1, 1):
                raise _refuse(node, f"Conv2d with groups={mod.groups}, dilation={mod.dilation}")
            if mod.padding_mode != "zeros":
                raise _refuse(node, f"Conv2d with padding_mode={mod.padding_mode!r}")
            padding = mod.padding
            if isinstance(padding, str):  # 'same'/'valid' with odd kernels
                k = _pair(mod.kernel_size)
                if padding == "same" and any(kk % 2 == 0 for kk in k):
                    raise _refuse(node, "Conv2d padding='same' with an even kernel")
                padding = (0, 0) if padding == "valid" else (k[0] // 2, k[1] // 2)
            return mk("conv2d", (x,), weight=mod.weight.detach().clone(),
                      bias=None if mod.bias is None else mod.bias.detach().clone(),
                      params={"stride": _pair(mod.stride), "padding": _pair(padding),
                              "kernel_size": _pair(mod.kernel_size)})
        if isinstance(mod, nn.ReLU):
            return mk("relu", (x,))
        if isinstance(mod, nn.MaxPool2d):
            return _maxpool(node, mk, x, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                            mod.ceil_mode, mod.return_indices)
        if isinstance(mod, nn.AvgPool2d):
            return _avgpool(node, mk, x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode,
                            mod.count_include_pad, mod.divisor_override)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return _adaptive(node, mk, x, _meta_shape(node.args[0])[2:], per)
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            if mod.running_mean is None or mod.running_var is None:
                raise _refuse(node, "BatchNorm without running statistics")
            if isinstance(mod, nn.BatchNorm1d) and len(per) != 1:
                raise _refuse(node, "BatchNorm1d on a (N, C, L) input")
            scale = torch.rsqrt(mod.running_var.detach().double() + mod.eps)
            shift = -mod.running_mean.detach().double() * scale
            if mod.affine:
                scale = scale * mod.weight.detach().double()
                shift = shift * mod.weight.detach().double() + mod.bias.detach().double()
            return mk("affine", (x,), weight=scale, bias=shift)
        if isinstance(mod, nn.Flatten):
            if mod.start_dim not in (1, -len(per) - 1) or mod.end_dim != -1:
                raise _refuse(node, f"Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim})")
            return mk("reshape", (x,))
        raise _refuse(node, f"the layer {type(mod).__name__} ({node.target})")
    if node.op == "call_function":
        fn = node.target
        if fn in _RELU_FUNCS:
            return mk("relu", (src(node.args[0]),))
        if fn in _ADD_FUNCS:
            ts = tensor_args()
            if len(ts) != 2 or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
                raise _refuse(node, "addition of a constant (only tensor + tensor, the residual "
                                    "addition,)")
            if _meta_shape(ts[0]) != _meta_shape(ts[1]):
                raise _refuse(node, "broadcasting addition")
            return mk("add", (src(ts[0]), src(ts[1])))
        if fn is F.max_pool2d or fn is torch.max_pool2d:
            a = _fargs(node, ("input", "kernel_size", "stride", "padding", "dilation",
                              "ceil_mode", "return_indices"))
            return _maxpool(node, mk, src(a["input"]), a["kernel_size"], a.get("stride"),
                            a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode", False),
                            a.get("return_indices", False))
        if fn is F.avg_pool2d:
            a = _fargs(node, ("input", "kernel_size", "stride", "padding", "ceil_mode",
                              "count_include_pad", "divisor_override"))
            return _avgpool(node, mk, src(a["input"]), a["kernel_size"], a.get("stride"),
                            a.get("padding", 0), a.get("ceil_mode", False),
                            a.get("count_include_pad", True), a.get("divisor_override"))
        if fn is F.adaptive_avg_pool2d:
            return _adaptive(node, mk, src(node.args[0]), _meta_shape(node.args[0])[2:], per)
        if fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise _refuse(node, f"torch.flatten(start_dim={start}, end_dim={end})")
            return mk("reshape", (src(node.args[0]),))
        if fn is F.dropout or fn is F.dropout2d:
            return None
        if fn in (torch.reshape,):
            return mk("reshape", (src(node.args[0]),))
        raise _refuse(node, f"the function {_target_name(node)}")
    if node.op == "call_method":
        m = node.target
        if m == "relu":
            return mk("relu", (src(node.args[0]),))
        if m in ("reshape", "view", "flatten"):
            if m == "flatten":
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start != 1:
                    raise _refuse(node, f"Tensor.flatten(start_dim={start})")
            return mk("reshape", (src(node.args[0]),))
        if m in ("contiguous",):
            return None
        if m == "add":
            ts = tensor_args()
            if len(ts) != 2 or _meta_shape(ts[0]) != _meta_shape(ts[1]):
                raise _refuse(node, "Tensor.add of a constant or broadcast tensor")
            return mk("add", (src(ts[0]), src(ts[1])))
        raise _refuse(node, f"the tensor method .{m}()")
    raise _refuse(node, f"the fx op {node.op} {_target_name(node)!r}")


def _fargs(node: torch.fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    out = dict(zip(names, node.args, strict=False))
    out.update(node.kwargs)
    return out


def _maxpool(node, mk, x, kernel, stride, padding, dilation, ceil_mode, return_indices) -> Layer:
    if _pair(dilation) != (1, 1) or ceil_mode or return_indices:
        raise _refuse(node, "MaxPool2d with dilation, ceil_mode or return_indices")
    k = _pair(kernel)
    s = k if stride is None or stride == [] else _pair(stride)
    return mk("maxpool2d", (x,), params={"kernel_size": k, "stride": s,
                                         "padding": _pair(padding)})


def _avgpool(node, mk, x, kernel, stride, padding, ceil_mode, count_include_pad,
             divisor_override) -> Layer:
    k = _pair(kernel)
    s = k if stride is None or stride == [] else _pair(stride)
    p = _pair(padding)
    if ceil_mode or divisor_override is not None or (p != (0, 0) and not count_include_pad):
        raise _refuse(node, "AvgPool2d with ceil_mode, divisor_override or count_include_pad=False")
    return mk("avgpool2d", (x,), params={"kernel_size": k, "stride": s, "padding": p})


def _adaptive(node, mk, x, in_hw, per) -> Layer:
    out_hw = per[1:]
    if any(i % o for i, o in zip(in_hw, out_hw, strict=True)):
        raise _refuse(node, f"AdaptiveAvgPool2d from {tuple(in_hw)} to {tuple(out_hw)}",
                      "(output size must divide the input size) is not supported")
    k = tuple(i // o for i, o in zip(in_hw, out_hw, strict=True))
    return mk("avgpool2d", (x,), params={"kernel_size": k, "stride": k, "padding": (0, 0)})


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
