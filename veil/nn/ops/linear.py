"""``linear``: ``nn.Linear``; one matrix Beaver triple per batch (x @ W^T + b).

Backward: ``dx = dy @ W`` (a matrix triple, exact truncation) and ``dW = x^T @ dy``
(a matrix triple, left at ``2f`` fractional bits: SGD truncates it together with the
update), ``db = sum(dy)`` (local). The weight is shared as ``W^T`` (``in x out``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from veil.mpc import exact
from veil.nn.fixedpoint import encode, exact_gemm
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import bilinear_plan


@register
class Linear(Op):
    name = "linear"
    modules = (nn.Linear,)
    parameters = ("weight", "bias")
    bilinear = True
    trainable = True

    def lower(self, low):
        mod = low.module
        return low.layer(self.name, (low.first_input(),), weight=mod.weight.detach().clone(),
                         bias=None if mod.bias is None else mod.bias.detach().clone())

    def float_forward(self, layer, args):
        b = None if layer.bias is None else layer.bias.double()
        return F.linear(args[0], layer.weight.double(), b)

    def twin(self, layer, args, frac_bits):
        y = exact_gemm(F.linear, args[0], encode(layer.weight, frac_bits)) >> frac_bits
        if layer.bias is not None:
            y = y + encode(layer.bias, frac_bits)
        return y

    def param_view(self, layer, kind, t):
        return t.t().contiguous() if kind == "weight" else t  # x @ W^T as one matmul triple

    def param_unview(self, layer, kind, t):
        return t.t().contiguous() if kind == "weight" else t

    def forward(self, party, layer, params, args):
        y = args[0] @ params["weight"]
        b = params.get("bias")
        return y + b if b is not None else y

    def plan(self, layer, in_shapes, batch, session=None):
        return bilinear_plan(self, layer, "matmul", in_shapes[0], batch, session)


    # -- training ------------------------------------------------------------------------
    def train_forward(self, party, layer, params, args):
        x = args[0]
        y = exact.product(x, params["weight"], "matmul")
        b = params.get("bias")
        return (y + b if b is not None else y), x

    def train_plan(self, layer, in_shapes, batch, frac_bits):
        w = tuple(self.param_view(layer, "weight", layer.weight).shape)
        return exact.product_plan("matmul", (batch, *in_shapes[0]), w, frac_bits)

    def grad_bits(self, kind, frac_bits):
        return 2 * frac_bits if kind == "weight" else frac_bits

    def backward(self, party, layer, params, x, grad, needs):
        gx = exact.product(grad, params["weight"].t(), "matmul") if needs[0] else None
        grads = {"weight": exact.product(x.t(), grad, "matmul", truncate=False)}
        if "bias" in params:
            grads["bias"] = grad.sum(0)
        return [gx], grads

    def backward_plan(self, layer, in_shapes, batch, needs, frac_bits):
        n_in, n_out = self.param_view(layer, "weight", layer.weight).shape
        out = []
        if needs[0]:
            out += exact.product_plan("matmul", (batch, n_out), (n_out, n_in), frac_bits)
        return out + exact.product_plan("matmul", (n_in, batch), (batch, n_out), 0)

    def twin_train_forward(self, layer, params, args, frac_bits):
        x = args[0]
        y = exact.twin_product(x, params["weight"], frac_bits, "matmul")
        return (y + params["bias"] if "bias" in params else y), x

    def twin_backward(self, layer, params, x, grad, needs, frac_bits):
        gx = exact.twin_product(grad, params["weight"].t(), frac_bits, "matmul") \
            if needs[0] else None
        grads = {"weight": exact.twin_product(x.t(), grad, 0, "matmul")}
        if "bias" in params:
            grads["bias"] = grad.sum(0)
        return [gx], grads
