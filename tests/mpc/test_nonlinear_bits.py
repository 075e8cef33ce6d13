"""Exact comparisons on fewer bits (``bits=k``) and the lean two-round gate.

When the compared value satisfies ``-2^(k-1) <= x < 2^(k-1)`` the sign gate
may look at the low ``k`` bits only: each party reduces its share mod ``2^k``
(the opened ``x + r`` is reduced, nothing else changes) and the DCF has
``k - 1`` levels. Checked exhaustively at small ``k``, on 10^6 random values
within the bound plus its edges (the gate code of both parties, as the engine
runs it), and through ``veil.run`` on both transports, for both gate shapes
(one round with a payload DCF; ``lean``: two rounds, 1-bit DCF with early
termination and a selection).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import veil
from veil.fss import gates
from veil.mpc import nonlinear

SHAPES = [False, True]  # lean


def _oracle_split(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Additive 64-bit shares of ``x`` (the test oracle plays the data owner; not secret)."""
    r = np.frombuffer(np.random.default_rng(seed).bytes(8 * x.shape[0]), np.uint64)  # not-secret
    return x - r, r.copy()


def _gate(x: np.ndarray, bits: int, lean: bool, relu: bool = True, extra: int = 0, seed: int = 0):
    """Both parties' gate code on the oracle's shares of ``x`` (uint64); returns the sums."""
    m0, m1 = gates.sign_keygen(x.shape[0], relu=relu, extra=extra, bits=bits, lean=lean)
    x0, x1 = _oracle_split(x, seed)
    w = w0 = w1 = None
    if extra:
        w = np.arange(x.shape[0] * extra, dtype=np.uint64).reshape(-1, extra) * np.uint64(977)
        w0, w1 = w - np.uint64(5), np.full_like(w, 5)
    (xa, wa), (xb, wb) = gates.sign_mask(m0, x0, w0), gates.sign_mask(m1, x1, w1)
    xh, wh = xa + xb, (wa + wb if extra else None)
    eh = None
    if lean:  # the second opening
        eh = gates.sign_select_bit(m0, 0, xh) ^ gates.sign_select_bit(m1, 1, xh)
    o0, o1 = gates.sign_finish(m0, 0, xh, wh, eh), gates.sign_finish(m1, 1, xh, wh, eh)
    out = {k: o0[k] + o1[k] for k in o0}
    return out, w


def _check(x: np.ndarray, out: dict, w=None) -> int:
    xi = x.view(np.int64)
    d = out["d"].view(np.int64)
    errors = np.count_nonzero(d != (xi >= 0))
    if "dx" in out:
        errors += np.count_nonzero(out["dx"].view(np.int64) != np.where(xi >= 0, xi, 0))
    if w is not None:
        errors += np.count_nonzero(out["dw"] != w * (xi >= 0).astype(np.uint64)[:, None])
    return errors


@pytest.mark.parametrize("lean", SHAPES)
@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8, 9, 10])
def test_every_value_within_the_bound_at_small_k(bits: int, lean: bool) -> None:
    x = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=np.int64).view(np.uint64)
    for relu, extra in ((True, 0), (False, 0), (True, 2)):
        out, w = _gate(x, bits, lean, relu, extra, seed=bits)
        assert _check(x, out, w) == 0, (bits, lean, relu, extra)


def _bounded_values(count: int, bits: int, seed: int) -> np.ndarray:
    """``count`` random values in ``[-2^(k-1), 2^(k-1))`` and the bound's edges."""
    half = 2 ** (bits - 1)
    edges = np.array([-half, -half + 1, -1, 0, 1, half - 2, half - 1], dtype=np.int64)
    raw = np.frombuffer(np.random.default_rng(seed).bytes(8 * count), np.int64)  # not-secret
    return np.concatenate([edges, raw >> np.int64(64 - bits)]).view(np.uint64)


@pytest.mark.parametrize("lean", SHAPES)
def test_a_million_values_within_the_bound_at_k32(lean: bool) -> None:
    values = _bounded_values(10**6, 32, 40 + lean)
    errors = 0
    for lo in range(0, values.shape[0], nonlinear.MAX_CHUNK):
        x = values[lo:lo + nonlinear.MAX_CHUNK]
        out, _ = _gate(x, 32, lean, seed=lo)
        errors += _check(x, out)
    assert errors == 0, f"{errors} DReLU/ReLU errors at k=32"


@pytest.mark.parametrize("bits", [16, 24, 40, 63])
def test_random_values_and_edges_at_other_k(bits: int) -> None:
    x = _bounded_values(20_000, bits, bits)
    for lean in SHAPES:
        out, _ = _gate(x, bits, lean, seed=bits)
        assert _check(x, out) == 0


def test_outside_the_bound_the_answer_is_the_low_bits_sign() -> None:
    """The documented failure mode: a value outside the bound gets the sign of ``x mod 2^k``."""
    x = np.array([2**31, 2**31 + 5, -(2**31) - 1, 3 * 2**32], dtype=np.int64).view(np.uint64)
    out, _ = _gate(x, 32, True, relu=False)
    assert out["d"].view(np.int64).tolist() == [0, 0, 1, 1]


def test_key_sizes() -> None:
    # lean ReLU at k = 32: 425-byte DCF (24 levels, one 128-bit leaf) + 25 bytes of masks
    assert gates.sign_material_bytes(relu=True, bits=32, lean=True) == 450
    m0, _ = gates.sign_keygen(64, relu=True, bits=32, lean=True)
    shipped = sum(v.nbytes for k, v in m0.items() if isinstance(v, np.ndarray) and k != "shape")
    assert shipped == 64 * 450
    assert gates.sign_material_bytes(relu=True, bits=32) < gates.sign_material_bytes(relu=True)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="bits"):
        gates.sign_keygen(2, bits=1)
    with pytest.raises(ValueError, match="bits"):
        gates.sign_keygen(2, bits=65)
    with pytest.raises(ValueError, match="lean"):
        gates.sign_keygen(2, lean=True, method="ariann")
    with pytest.raises(ValueError, match="exact gates"):
        nonlinear.plan("relu", (3,), bits=32, method="ariann")


# -- through the engine ---------------------------------------------------------------------
def _job(party, shares, bits, lean):
    xs, ys = shares
    x, y = party.from_share(xs, frac_bits=0), party.from_share(ys, frac_bits=0)
    opts = {"bits": bits, "lean": lean}
    r, d = nonlinear.relu(x, return_drelu=True, **opts)
    out = [r, d, nonlinear.lt(x, y, **opts), nonlinear.ge(x, y, **opts),
           nonlinear.maximum(x, y, **opts)]
    before = party.stats()["rounds"]
    m, oh = nonlinear.max(x.reshape(-1, 4), dim=1, **opts)
    tree_rounds = party.stats()["rounds"] - before
    am = nonlinear.argmax(y.reshape(-1, 4), dim=1, **opts)
    pool = nonlinear.max_pool2d(x.reshape(1, 1, -1, 4), 3, stride=1, padding=1, **opts)
    return [o.share for o in (*out, m, oh, am, pool)] + [torch.tensor(tree_rounds)]


def _split_tensor(x: torch.Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return _oracle_split(x.numpy().view(np.uint64), seed)


def _engine_check(bits: int, lean: bool, transport: str) -> None:
    # |x|, |y| < 2^(k-2): every difference the gates compare is within the k-bit bound
    q = 2 ** (bits - 2)
    edges = torch.tensor([q - 1, -(q - 1), 0, 1, -1, q - 2, -(q - 2), 5], dtype=torch.int64)
    g = torch.Generator().manual_seed(bits)
    x = torch.cat([edges, torch.randint(-(q - 1), q, (56,), generator=g)])  # not-secret
    y = torch.cat([edges.flip(0), torch.randint(-(q - 1), q, (56,), generator=g)])  # not-secret
    sx, sy = (torch.from_numpy(s.view(np.int64)) for s in _split_tensor(x, 1))
    tx, ty = (torch.from_numpy(s.view(np.int64)) for s in _split_tensor(y, 2))
    res = veil.run(_job, inputs=((sx, tx), (sy, ty)), transport=transport, timeout=120,
                   args=(bits, lean), **({"threads": 1} if transport == "tcp" else {}))
    got = [a + b for a, b in zip(res[0][:-1], res[1][:-1], strict=True)]
    xm, ym = x.reshape(-1, 4), y.reshape(-1, 4)
    onehot = torch.nn.functional.one_hot(xm.argmax(dim=1), 4)
    pool = torch.nn.functional.max_pool2d(x.reshape(1, 1, -1, 4).double(), 3, 1, 1).long()
    want = [x.clamp(min=0), (x >= 0).long(), (x < y).long(), (x >= y).long(), torch.maximum(x, y),
            xm.max(dim=1).values, onehot, torch.nn.functional.one_hot(ym.argmax(dim=1), 4), pool]
    names = ["relu", "drelu", "lt", "ge", "maximum", "max", "max onehot", "argmax", "maxpool"]
    for name, g_, w_ in zip(names, got, want, strict=True):
        assert torch.equal(g_, w_), name
    assert int(res[0][-1]) == 2 * (1 + lean)  # a 4-way tree: 2 levels of 1 (lean: 2) rounds


@pytest.mark.parametrize("lean", SHAPES)
def test_gates_at_k_bits_through_veil_run_local(lean: bool) -> None:
    _engine_check(32, lean, "local")
    _engine_check(12, lean, "local")


@pytest.mark.tcp
def test_gates_at_k_bits_through_veil_run_tcp() -> None:
    _engine_check(32, True, "tcp")
    _engine_check(20, False, "tcp")


def test_boolean_drelu_on_a_small_ring_keeps_its_shares() -> None:
    """The one-round gate with 1-bit outputs (the BCG+21 key) on a 32-bit ring: XOR shares."""
    x = np.array([5, 2**31 - 1, 2**31, 2**32 - 1, 0], dtype=np.uint64)  # 2**31.. are negative
    m0, m1 = gates.sign_keygen(x.shape[0], ring_bits=32, ell=1)
    x0 = np.array([7, 9, 11, 13, 17], dtype=np.uint64)
    x1 = (x - x0) & np.uint64(2**32 - 1)
    xh = gates.sign_mask(m0, x0)[0] + gates.sign_mask(m1, x1)[0]
    d = (gates.sign_finish(m0, 0, xh)["d"] + gates.sign_finish(m1, 1, xh)["d"]) & np.uint64(1)
    assert d.tolist() == [1, 1, 0, 0, 1]
