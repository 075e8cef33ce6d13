"""``conv2d``: ``nn.Conv2d`` (stride, padding, bias; groups=1, dilation=1); one convolution
Beaver triple per batch.

Backward, with convolution triples only (exact truncation):

- ``dx`` is the transposed convolution of ``dy``: ``dy`` dilated by the stride and
  padded by ``k - 1 - p`` (plus the rows the forward's stride skipped), convolved with
  the flipped, channel-swapped weight ``W'[c, o] = W[o, c]`` flipped;
- ``dW[o, c] = sum_n x_pad[n, c] (*) dilate(dy)[n, o]``: a convolution with the batch
  as channels (``x_pad`` as ``(C, N, H, W)``, ``dy`` as ``(O, N, ., .)``), cropped to
  the kernel, left at ``2f`` fractional bits (SGD truncates it with the update);
- ``db = sum(dy)`` over batch and pixels (local).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.mpc import exact
from veil.nn.fixedpoint import encode, exact_gemm
from veil.nn.lowering import pair
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import bilinear_plan


@register
class Conv2d(Op):
    name = "conv2d"
    modules = (nn.Conv2d,)
    parameters = ("weight", "bias")
    bilinear = True
    trainable = True

    def lower(self, low):
        mod = low.module
        if mod.groups != 1 or pair(mod.dilation) != (1, 1):
            raise low.refuse(f"Conv2d with groups={mod.groups}, dilation={mod.dilation}")
        if mod.padding_mode != "zeros":
            raise low.refuse(f"Conv2d with padding_mode={mod.padding_mode!r}")
        padding = mod.padding
        if isinstance(padding, str):  # 'same'/'valid' with odd kernels
            k = pair(mod.kernel_size)
            if padding == "same" and any(kk % 2 == 0 for kk in k):
                raise low.refuse("Conv2d padding='same' with an even kernel")
            padding = (0, 0) if padding == "valid" else (k[0] // 2, k[1] // 2)
        return low.layer(self.name, (low.first_input(),), weight=mod.weight.detach().clone(),
                         bias=None if mod.bias is None else mod.bias.detach().clone(),
                         params={"stride": pair(mod.stride), "padding": pair(padding),
                                 "kernel_size": pair(mod.kernel_size)})

    def float_forward(self, layer, args):
        p = layer.params
        b = None if layer.bias is None else layer.bias.double()
        return F.conv2d(args[0], layer.weight.double(), b, stride=p["stride"],
                        padding=p["padding"])

    def twin(self, layer, args, frac_bits):
        p = layer.params
        y = exact_gemm(F.conv2d, args[0], encode(layer.weight, frac_bits), p["stride"],
                       p["padding"]) >> frac_bits
        if layer.bias is not None:
            y = y + encode(layer.bias, frac_bits).reshape(1, -1, 1, 1)
        return y

    def forward(self, party, layer, params, args):
        p = layer.params
        return args[0].conv2d(params["weight"], params.get("bias"), stride=p["stride"],
                              padding=p["padding"])

    def plan(self, layer, in_shapes, batch, session=None):
        p = layer.params
        return bilinear_plan(self, layer, "conv2d", in_shapes[0], batch, session,
                             stride=list(p["stride"]), padding=list(p["padding"]))

    # -- training ------------------------------------------------------------------------
    def train_forward(self, party, layer, params, args):
        p = layer.params
        x = args[0]
        y = exact.product(x, params["weight"], "conv2d", stride=p["stride"],
                          padding=p["padding"])
        b = params.get("bias")
        return (y + b.reshape(-1, 1, 1) if b is not None else y), x

    def train_plan(self, layer, in_shapes, batch, frac_bits):
        p = layer.params
        return exact.product_plan("conv2d", (batch, *in_shapes[0]), tuple(layer.weight.shape),
                                  frac_bits, stride=p["stride"], padding=p["padding"])

    def grad_bits(self, kind, frac_bits):
        return 2 * frac_bits if kind == "weight" else frac_bits

    def backward(self, party, layer, params, x, grad, needs):
        p = layer.params
        w = params["weight"]
        gx = None
        if needs[0]:
            gp, wt = _input_grad_operands(grad.share, w.share, x.shape[2:], p)
            gx = exact.product(grad._wrap(gp), w._wrap(wt), "conv2d")
        xt, gt = _weight_grad_operands(x.share, grad.share, p)
        gw = exact.product(x._wrap(xt), grad._wrap(gt), "conv2d", truncate=False)
        kh, kw = p["kernel_size"]
        grads = {"weight": gw[:, :, :kh, :kw].transpose(0, 1).contiguous()}
        if "bias" in params:
            grads["bias"] = grad.sum((0, 2, 3))
        return [gx], grads

    def backward_plan(self, layer, in_shapes, batch, needs, frac_bits):
        in_shape = (batch, *in_shapes[0])
        out_shape = (batch, *layer.out_shape)
        w = tuple(layer.weight.shape)
        out = []
        if needs[0]:
            gp, wt = _shapes(_input_grad_operands, out_shape, w, in_shape[2:], layer.params)
            out += exact.product_plan("conv2d", gp, wt, frac_bits)
        xt, gt = _shapes(_weight_grad_operands, in_shape, out_shape, layer.params)
        return out + exact.product_plan("conv2d", xt, gt, 0)

    def twin_train_forward(self, layer, params, args, frac_bits):
        p = layer.params
        x = args[0]
        y = exact.twin_product(x, params["weight"], frac_bits, "conv2d", stride=p["stride"],
                               padding=p["padding"])
        return (y + params["bias"].reshape(-1, 1, 1) if "bias" in params else y), x

    def twin_backward(self, layer, params, x, grad, needs, frac_bits):
        p = layer.params
        gx = None
        if needs[0]:
            gp, wt = _input_grad_operands(grad, params["weight"], x.shape[2:], p)
            gx = exact.twin_product(gp, wt, frac_bits, "conv2d")
        xt, gt = _weight_grad_operands(x, grad, p)
        kh, kw = p["kernel_size"]
        gw = exact.twin_product(xt, gt, 0, "conv2d")[:, :, :kh, :kw]
        grads = {"weight": gw.transpose(0, 1).contiguous()}
        if "bias" in params:
            grads["bias"] = grad.sum((0, 2, 3))
        return [gx], grads


def _dilate(t: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Insert ``stride - 1`` zeros between the pixels of ``(N, C, H, W)`` (shares or values)."""
    sh, sw = stride
    if (sh, sw) == (1, 1):
        return t
    n, c, h, w = t.shape
    out = t.new_zeros((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1))
    out[:, :, ::sh, ::sw] = t
    return out


def _input_grad_operands(grad: torch.Tensor, weight: torch.Tensor, in_hw, p: dict
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dy', W')`` with ``dx = conv2d(dy', W')`` (stride 1, no padding)."""
    (kh, kw), (sh, sw), (ph, pw) = p["kernel_size"], p["stride"], p["padding"]
    extra_h = (in_hw[0] + 2 * ph - kh) % sh  # input rows the forward's stride never reached
    extra_w = (in_hw[1] + 2 * pw - kw) % sw
    g = F.pad(_dilate(grad, (sh, sw)),
              (kw - 1 - pw, kw - 1 - pw + extra_w, kh - 1 - ph, kh - 1 - ph + extra_h))
    return g, weight.flip(2, 3).transpose(0, 1)


def _weight_grad_operands(x: torch.Tensor, grad: torch.Tensor, p: dict
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x', dy')`` with ``dW^T = conv2d(x', dy')`` cropped to the kernel."""
    ph, pw = p["padding"]
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    return xp.transpose(0, 1), _dilate(grad, p["stride"]).transpose(0, 1)


def _shapes(fn, shape_a, shape_b, *args) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes ``fn`` gives for operands of these shapes (on empty meta tensors)."""
    a, b = fn(torch.empty(shape_a, device="meta"), torch.empty(shape_b, device="meta"), *args)
    return tuple(a.shape), tuple(b.shape)
