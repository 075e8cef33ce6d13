"""``maxpool2d``: max pooling as comparison trees (``k - 1`` sign gates per window,
``ceil(log2 k)`` rounds for a ``k``-element window).

Training keeps the tournament's one-hot of each window's winner (the first maximal
element, an integer sharing computed in the same rounds), and the backward routes
``dy`` through it: one Beaver product, no comparison and no truncation, then the
windows are added back at their input positions (local).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from veil.mpc import exact
from veil.nn.fixedpoint import fold_windows
from veil.nn.lowering import pair
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import gate_plan

# Below every encodable value; differences with encodable values do not wrap the ring.
_PAD_VALUE = -(2**62)


@register
class MaxPool2d(Op):
    name = "maxpool2d"
    modules = (nn.MaxPool2d,)
    functions = (F.max_pool2d, torch.max_pool2d)
    trainable = True

    def lower(self, low):
        if low.module is not None:
            m = low.module
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "dilation": m.dilation, "ceil_mode": m.ceil_mode,
                 "return_indices": m.return_indices}
            x = low.first_input()
        else:
            a = low.args(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                          "return_indices"))
            x = low.src(a["input"])
        if pair(a.get("dilation", 1)) != (1, 1) or a.get("ceil_mode", False) \
                or a.get("return_indices", False):
            raise low.refuse("MaxPool2d with dilation, ceil_mode or return_indices")
        k = pair(a["kernel_size"])
        stride = a.get("stride")
        s = k if stride is None or stride == [] else pair(stride)
        return low.layer(self.name, (x,), params={"kernel_size": k, "stride": s,
                                                  "padding": pair(a.get("padding", 0))})

    def float_forward(self, layer, args):
        p = layer.params
        return F.max_pool2d(args[0], p["kernel_size"], p["stride"], p["padding"])

    def twin(self, layer, args, frac_bits):
        p = layer.params
        x, pad = args[0], p["padding"]
        if pad != (0, 0):
            x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=torch.iinfo(torch.int64).min)
        win = x.unfold(2, p["kernel_size"][0], p["stride"][0]).unfold(
            3, p["kernel_size"][1], p["stride"][1])
        return win.flatten(-2).max(-1).values

    def forward(self, party, layer, params, args):
        from veil.nn import calibration  # bits=k from the calibrated bound (if any)

        p = layer.params
        calibration.guard(args[0], layer)
        return args[0].max_pool2d(p["kernel_size"], stride=p["stride"], padding=p["padding"],
                                  **calibration.gate_options(layer))

    def plan(self, layer, in_shapes, batch, session=None):
        from veil.nn import calibration

        p = layer.params
        shape = (batch, *in_shapes[0])
        return calibration.guard_plan(layer, shape) + gate_plan(
            "max_pool2d", shape, kernel_size=p["kernel_size"], stride=p["stride"],
            padding=p["padding"], **calibration.gate_options(layer))

    # -- training ------------------------------------------------------------------------
    def train_forward(self, party, layer, params, args):
        from veil.mpc.nonlinear import _tournament  # the winner's one-hot at scale 1

        x = args[0]
        win = _windows(x.share, layer.params, _PAD_VALUE if party.rank == 0 else 0)
        best, sel = _tournament(x, win.reshape(-1, win.shape[-1]), True, "exact")
        return x._wrap(best.reshape(win.shape[:-1])), (x._wrap(sel, 0), tuple(x.shape))

    def train_plan(self, layer, in_shapes, batch, frac_bits):
        p = layer.params
        return gate_plan("max_pool2d", (batch, *in_shapes[0]), kernel_size=p["kernel_size"],
                         stride=p["stride"], padding=p["padding"], return_onehot=True)

    def backward(self, party, layer, params, saved, grad, needs):
        sel, in_shape = saved
        routed = exact.product(grad.reshape(-1, 1), sel)
        return [routed._wrap(self._fold(routed.share, grad.shape, in_shape, layer))], {}

    def backward_plan(self, layer, in_shapes, batch, needs, frac_bits):
        rows = batch * math.prod(layer.out_shape)
        k = layer.params["kernel_size"][0] * layer.params["kernel_size"][1]
        return exact.product_plan("beaver", (rows, 1), (rows, k), 0)

    def twin_train_forward(self, layer, params, args, frac_bits):
        x = args[0]
        win = _windows(x, layer.params, _PAD_VALUE)
        flat = win.reshape(-1, win.shape[-1])
        sel = F.one_hot(flat.argmax(-1), flat.shape[-1]).to(torch.int64)
        return flat.max(-1).values.reshape(win.shape[:-1]), (sel, tuple(x.shape))

    def twin_backward(self, layer, params, saved, grad, needs, frac_bits):
        sel, in_shape = saved
        return [self._fold(grad.reshape(-1, 1) * sel, grad.shape, in_shape, layer)], {}

    @staticmethod
    def _fold(routed, out_shape, in_shape, layer):
        p = layer.params
        values = routed.reshape(*out_shape, -1)
        return fold_windows(values, in_shape[2:], p["kernel_size"], p["stride"], p["padding"])


def _windows(x: torch.Tensor, p: dict, pad_value: int) -> torch.Tensor:
    """``(N, C, oh, ow, kh*kw)`` windows of ``x`` padded with ``pad_value``."""
    (kh, kw), (sh, sw), (ph, pw) = p["kernel_size"], p["stride"], p["padding"]
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph), value=pad_value)
    win = x.unfold(2, kh, sh).unfold(3, kw, sw)
    return win.reshape(*win.shape[:4], kh * kw)
