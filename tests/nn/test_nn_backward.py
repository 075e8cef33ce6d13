"""Every op's backward: the fixed-point twin against torch autograd, the secure backward
against the twin (bit for bit), with the plans prefetched (a plan that differs fails)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import veil
from veil.nn.fixedpoint import decode, encode
from veil.nn.layer import Layer
from veil.nn.ops import get_op

FRAC = 16


def _case(name: str, gen: torch.Generator):
    """(layer, input shapes, params in the shared layout (float), torch reference)."""
    def rnd(*shape, s=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * s

    if name == "linear":
        w, b = rnd(5, 7, s=0.3), rnd(5)
        layer = Layer("l", "linear", ("x",), (5,), weight=w.float(), bias=b.float())
        return layer, [(7,)], {"weight": w.t(), "bias": b}, \
            lambda xs, p: xs[0] @ p["weight"] + p["bias"]
    if name == "linear_nobias":
        w = rnd(3, 4, s=0.3)
        layer = Layer("l", "linear", ("x",), (3,), weight=w.float())
        return layer, [(4,)], {"weight": w.t()}, lambda xs, p: xs[0] @ p["weight"]
    if name.startswith("conv2d"):
        stride, pad, hw = {"conv2d": ((1, 1), (1, 1), (5, 6)),
                           "conv2d_strided": ((2, 1), (1, 0), (7, 6)),
                           "conv2d_s3": ((3, 2), (2, 1), (8, 7))}[name]
        w, b = rnd(4, 3, 3, 2, s=0.3), rnd(4)
        ho = (hw[0] + 2 * pad[0] - 3) // stride[0] + 1
        wo = (hw[1] + 2 * pad[1] - 2) // stride[1] + 1
        layer = Layer("c", "conv2d", ("x",), (4, ho, wo), weight=w.float(), bias=b.float(),
                      params={"stride": stride, "padding": pad, "kernel_size": (3, 2)})
        return layer, [(3, *hw)], {"weight": w, "bias": b}, \
            lambda xs, p: F.conv2d(xs[0], p["weight"], p["bias"], stride=stride, padding=pad)
    if name == "relu":
        return Layer("r", "relu", ("x",), (3, 5)), [(3, 5)], {}, lambda xs, p: torch.relu(xs[0])
    if name.startswith("maxpool"):
        k, s, pad, hw = {"maxpool": ((2, 2), (2, 2), (0, 0), (6, 6)),
                         "maxpool_overlap": ((3, 2), (2, 1), (1, 0), (7, 5))}[name]
        ho, wo = (hw[0] + 2 * pad[0] - k[0]) // s[0] + 1, (hw[1] + 2 * pad[1] - k[1]) // s[1] + 1
        layer = Layer("m", "maxpool2d", ("x",), (2, ho, wo),
                      params={"kernel_size": k, "stride": s, "padding": pad})
        return layer, [(2, *hw)], {}, lambda xs, p: F.max_pool2d(xs[0], k, s, pad)
    if name == "avgpool":
        layer = Layer("p", "avgpool2d", ("x",), (2, 2, 3),
                      params={"kernel_size": (3, 2), "stride": (2, 2), "padding": (1, 0)})
        return layer, [(2, 4, 6)], {}, lambda xs, p: F.avg_pool2d(xs[0], (3, 2), (2, 2), (1, 0))
    if name == "add":
        return Layer("s", "add", ("x", "y"), (3, 2)), [(3, 2), (3, 2)], {}, \
            lambda xs, p: xs[0] + xs[1]
    if name == "reshape":
        return Layer("f", "reshape", ("x",), (12,)), [(3, 2, 2)], {}, \
            lambda xs, p: xs[0].reshape(xs[0].shape[0], 12)
    raise AssertionError(name)


CASES = ["linear", "linear_nobias", "conv2d", "conv2d_strided", "conv2d_s3", "relu", "maxpool",
         "maxpool_overlap", "avgpool", "add", "reshape"]
BATCH = 3


def _twin_run(name: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    layer, in_shapes, params, ref = _case(name, gen)
    op = get_op(layer.op)
    xs = [encode(torch.randn(BATCH, *s, generator=gen, dtype=torch.float64)) for s in in_shapes]
    qp = {k: encode(v) for k, v in params.items()}
    out, saved = op.twin_train_forward(layer, qp, xs, FRAC)
    g = encode(torch.randn(out.shape, generator=gen, dtype=torch.float64))
    needs = [True] * len(xs)
    gxs, gps = op.twin_backward(layer, qp, saved, g, needs, FRAC)
    return layer, in_shapes, ref, xs, qp, out, g, gxs, gps


@pytest.mark.parametrize("name", CASES)
def test_twin_backward_matches_torch_autograd(name: str) -> None:
    layer, _, ref, xs, qp, out, g, gxs, gps = _twin_run(name, 1)
    fx = [decode(x).requires_grad_() for x in xs]
    fp = {k: decode(v).requires_grad_() for k, v in qp.items()}
    y = ref(fx, fp)
    assert (decode(out) - y.detach()).abs().max() < 1e-3
    (y * decode(g)).sum().backward()
    for q, t in zip(gxs, fx, strict=True):
        assert q.shape == t.shape and (decode(q) - t.grad).abs().max() < 2e-3, name
    op = get_op(layer.op)
    for k, t in fp.items():
        got = decode(gps[k], op.grad_bits(k, FRAC))
        assert gps[k].shape == t.shape and (got - t.grad).abs().max() < 2e-3, name


@pytest.mark.parametrize("name", CASES)
def test_secure_backward_is_the_twin(name: str) -> None:
    layer, in_shapes, _, xs, qp, out, g, gxs, gps = _twin_run(name, 2)
    op = get_op(layer.op)
    needs = [True] * len(xs)
    plan = op.train_plan(layer, in_shapes, BATCH, FRAC) + \
        op.backward_plan(layer, in_shapes, BATCH, needs, FRAC)
    gen = torch.Generator().manual_seed(9)

    def split(q):
        r = torch.randint(-2**63, 2**63 - 1, q.shape, generator=gen)
        return q - r, r

    sx, sp, sg = [split(x) for x in xs], {k: split(v) for k, v in qp.items()}, split(g)

    def job(party):
        party.prefetch(plan)
        r = party.rank
        args = [party.from_share(s[r]) for s in sx]
        params = {k: party.from_share(s[r]) for k, s in sp.items()}
        y, saved = op.train_forward(party, layer, params, args)
        gx, gp = op.backward(party, layer, params, saved, party.from_share(sg[r]), needs)
        assert not party._buffer, "the plan has unused items"
        return (party.open(y.share), [party.open(t.share) for t in gx],
                {k: party.open(t.share) for k, t in gp.items()})

    (y, gx, gp), _ = veil.run(job, timeout=60)
    assert torch.equal(y, out)
    assert all(torch.equal(a, b) for a, b in zip(gx, gxs, strict=True))
    assert gp.keys() == gps.keys() and all(torch.equal(gp[k], gps[k]) for k in gp)
