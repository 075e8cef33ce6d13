"""Every SecretTensor operation against its plaintext twin (hypothesis, edges, odd shapes)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mpc_helpers import assert_close, run_both

import veil
from veil import ring
from veil.mpc import SecretTensor

ULP = 2.0**-16


def _tensor(draw, shape, bound):
    n = 1
    for s in shape:
        n *= s
    vals = draw(st.lists(st.floats(-bound, bound, allow_nan=False, width=32),
                         min_size=n, max_size=n))
    return torch.tensor(vals, dtype=torch.float32).reshape(shape)


@st.composite
def two_tensors(draw, bound=100.0):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    return _tensor(draw, shape, bound), _tensor(draw, shape, bound)


def _share_pair(party, x, y):
    a = party.share(x if party.rank == 0 else None, owner=0, shape=x.shape)
    b = party.share(y if party.rank == 1 else None, owner=1, shape=y.shape)
    return a, b


@given(two_tensors())
def test_linear_ops_and_products(xy):
    x, y = xy

    def job(party):
        a, b = _share_pair(party, x, y)
        outs = [a + b, a - b, a + 2.5, 3.25 - a, -a, a * 3, a * -2.0, a * 0.1, 0.5 * a,
                a / 4.0, a * b, a.square(), a * a, a.sum(), a.mean(), a.sum(0),
                a.mean(dim=-1, keepdim=True), a + y, a * y]
        return [o.reveal() for o in outs], party.stats()

    got, stats = run_both(job)
    want = [x + y, x - y, x + 2.5, 3.25 - x, -x, x * 3, x * -2.0, x * 0.1, 0.5 * x, x / 4.0,
            x * y, x * x, x * x, x.sum(), x.mean(), x.sum(0), x.mean(dim=-1, keepdim=True),
            x + y, x * y]
    n = x.numel()
    tol = [ULP] * 5 + [4 * ULP, 4 * ULP, 4 * ULP, 4 * ULP, 2 * ULP, 2e-3, 2e-3, 2e-3,
           n * ULP, 2 * ULP + n * ULP, n * ULP, 2 * n * ULP, 2 * ULP, 2e-3]
    # Public floats are encoded with error <= ULP/2, scaled by |x|; products add ~1 ULP.
    scale = ULP * n * (1 + max(x.abs().max().item(), y.abs().max().item()))
    for g, w, t in zip(got, want, tol, strict=True):
        assert_close(g, w, t + scale)
    # a*b, square, a*a, a*y public: 3 rounds for the secret products, 1 per reveal.
    assert stats["rounds"] == 3 + len(got)


@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 5), st.booleans())
@settings(max_examples=15)
def test_matmul_secret_and_public(m, k, n, batched):
    g = torch.Generator().manual_seed(m * 100 + k * 10 + n)
    shape_x = (2, m, k) if batched else (m, k)
    x = torch.randn(shape_x, generator=g)  # not-secret: test data
    y = torch.randn(k, n, generator=g)  # not-secret: test data

    def job(party):
        a, b = _share_pair(party, x, y)
        outs = [a @ b, a @ y, x @ b, a.matmul(b), torch.matmul(a, b),
                a.linear(b.t(), 1.0), F.linear(a, y.t())]
        return [o.reveal() for o in outs]

    want = x @ y
    for got in run_both(job)[:5]:
        assert_close(got, want, 1e-3 * k)
    got = run_both(job)
    assert_close(got[5], want + 1.0, 1e-3 * k)
    assert_close(got[6], want, 1e-3 * k)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((2, 1), (0, 2))])
def test_conv2d_secret_and_public_weight(stride, padding):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 7, 6, generator=g)  # not-secret: test data
    w = torch.randn(4, 3, 3, 2, generator=g)  # not-secret: test data
    bias = torch.randn(4, generator=g)  # not-secret: test data

    def job(party):
        a, b = _share_pair(party, x, w)
        bb = party.share(bias if party.rank == 1 else None, owner=1, shape=(4,))
        outs = [a.conv2d(b, bb, stride=stride, padding=padding),
                a.conv2d(w, bias, stride=stride, padding=padding),
                veil.mpc.conv2d(x, b, stride=stride, padding=padding),
                F.conv2d(a, b, stride=stride, padding=padding)]
        return [o.reveal() for o in outs], party.stats()["rounds"]

    outs, rounds = run_both(job)
    want = F.conv2d(x, w, bias, stride=stride, padding=padding)
    assert_close(outs[0], want, 5e-3)
    assert_close(outs[1], want, 5e-3)
    assert_close(outs[2], want - bias.reshape(-1, 1, 1), 5e-3)
    assert_close(outs[3], want - bias.reshape(-1, 1, 1), 5e-3)
    assert rounds == 2 + 4  # two secret-weight convolutions, four reveals


def test_shape_ops_indexing_cat_stack_pool_pad():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) / 7 - 3

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=x.shape)
        b = a.clone()
        b[0, 1] = 5.5
        b[1, 2, 0] = a[0, 0, 0]
        outs = [a.reshape(6, 16), a.view(2, -1), a.flatten(1), a.transpose(1, 3),
                a.permute(3, 0, 2, 1), a[0].T, a[:, 1:, ::2, -1], a[0, 0, 0, 0],
                a.unsqueeze(0).squeeze(0), veil.mpc.cat([a, b], dim=1), torch.stack([a, b]),
                a.avg_pool2d(2), F.avg_pool2d(a, 3, stride=1, padding=1), a.pad((1, 0, 0, 2)),
                a.pad((1, 1), value=2.0), b, a.flip([0]), a.expand(2, 2, 3, 4, 4),
                a.repeat(1, 2, 1, 1), a.flatten()[3:9].reshape(2, 3).t()]
        return [o.reveal() for o in outs]

    b = x.clone()
    b[0, 1] = 5.5
    b[1, 2, 0] = x[0, 0, 0]
    want = [x.reshape(6, 16), x.view(2, -1), x.flatten(1), x.transpose(1, 3),
            x.permute(3, 0, 2, 1), x[0].permute(2, 1, 0), x[:, 1:, ::2, -1], x[0, 0, 0, 0],
            x, torch.cat([x, b], dim=1), torch.stack([x, b]), F.avg_pool2d(x, 2),
            F.avg_pool2d(x, 3, stride=1, padding=1), F.pad(x, (1, 0, 0, 2)),
            F.pad(x, (1, 1), value=2.0), b, x.flip([0]), x.expand(2, 2, 3, 4, 4),
            x.repeat(1, 2, 1, 1), x.flatten()[3:9].reshape(2, 3).t()]
    # Averages multiply by an encoded 1/k (error <= ULP/2) a sum of k values.
    tol = 3 * ULP + ULP / 2 * 9 * x.abs().max().item()
    for g, w in zip(run_both(job), want, strict=True):
        assert_close(g, w, tol)


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, ULP, -ULP, 2.0**20, -(2.0**20),
                                   ring.encode_limit() / 4, -ring.encode_limit() / 2])
def test_edge_values_round_trip_and_add(value):
    x = torch.tensor([value, -value, 0.0], dtype=torch.float64)

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(3,),
                        dtype=torch.float64)
        return a.reveal(), (a + a).reveal(), (a - a).reveal(), (a * 1).reveal()

    r, s, z, one = run_both(job)
    assert torch.equal(r, x) and torch.equal(s, 2 * x) and torch.equal(z, torch.zeros(3))
    assert torch.equal(one, x)


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 2.0**10, -(2.0**10), ULP])
def test_edge_values_secret_product(value):
    x = torch.tensor([value, -value, 1.0, -1.0], dtype=torch.float64)

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(4,))
        b = party.share(x if party.rank == 1 else None, owner=1, shape=(4,))
        return (a * b).reveal(dtype=torch.float64)

    assert_close(run_both(job), x * x, 2 * ULP)


def test_integer_sharing_is_exact_and_wraps():
    x = torch.tensor([3, -7, 2**40, 0])
    y = torch.tensor([5, 11, 2**30, -1])

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(4,), frac_bits=0)
        b = party.share(y if party.rank == 1 else None, owner=1, shape=(4,), frac_bits=0)
        return (a * b).reveal(), (a @ b).reveal(), (a + b * 2).reveal()

    prod, dot, lin = run_both(job)
    assert prod.dtype == torch.int64
    assert torch.equal(prod, x * y)  # 2^70 wraps exactly like int64
    assert dot.item() == (x * y).sum().item()
    assert torch.equal(lin, x + 2 * y)


def test_mixed_precision_aligns():
    x = torch.tensor([1.25, -2.5])

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(2,), frac_bits=8)
        b = party.share(x if party.rank == 1 else None, owner=1, shape=(2,), frac_bits=20)
        s, p = a + b, a * b
        return s.frac_bits, s.reveal(), p.frac_bits, p.reveal()

    fs, s, fp, p = run_both(job)
    assert fs == 20 and fp == 20
    assert_close(s, 2 * x, 1e-5)
    assert_close(p, x * x, 1e-2)


def test_broadcasting_products_and_pow():
    x = torch.tensor([[0.5], [-1.5], [2.0]])
    y = torch.tensor([1.0, -2.0, 0.25, 3.0])

    def job(party):
        a, b = _share_pair(party, x, y)
        return (a * b).reveal(), (a ** 3).reveal(), (b ** 1).reveal(), (b + a).reveal()

    prod, cube, same, bsum = run_both(job)
    assert_close(prod, x * y, 1e-4)
    assert_close(cube, x**3, 1e-3)
    assert_close(same, y, ULP)
    assert_close(bsum, x + y, ULP)


def test_shape_sent_by_owner_and_reveal_to_one_party():
    x = torch.tensor([[1.0, 2.0, 3.0]])

    def job(party):
        a = party.share(x if party.rank == 1 else None, owner=1)
        return tuple(a.shape), a.reveal(to=0), a.reveal(to=1), party.stats()["rounds"]

    r0, r1 = veil.run(job)
    assert r0[0] == r1[0] == (1, 3)
    assert torch.equal(r0[1], x) and r1[1] is None
    assert r0[2] is None and torch.equal(r1[2], x)
    assert r0[3] == r1[3] == 3


def test_bad_inputs_give_clear_errors():
    def job(party):
        errors = []
        for fn in (
            lambda: party.share(None, owner=0, shape=(2,)) if party.rank == 0 else None,
            lambda: party.share(torch.ones(2), owner=1, shape=(2,)) if party.rank == 0 else None,
            lambda: party.share(torch.tensor([float("nan")]), owner=party.rank, shape=(1,)),
            lambda: party.share(torch.ones(2), owner=party.rank, shape=(3,)),
            lambda: party.share(torch.ones(2), owner=2),
        ):
            try:
                fn()
            except (ValueError, TypeError) as exc:
                errors.append(type(exc).__name__)
        x = party.zeros((2, 3))
        for fn in (lambda: x / 0.0, lambda: x / x, lambda: bool(x), lambda: x @ torch.ones(4),
                   lambda: x.avg_pool2d(2), lambda: x ** 0, lambda: x[x]):
            try:
                fn()
            except (ValueError, TypeError, ZeroDivisionError, RuntimeError) as exc:
                errors.append(type(exc).__name__)
        return errors

    r0, r1 = veil.run(job)
    assert len(r0) == 2 + 3 + 7 and len(r1) == 3 + 7


def test_from_share_and_open_masked():
    x = torch.tensor([1.0, -2.0])

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(2,))
        raw = SecretTensor.from_share(party, a.share.clone())
        mask = party.common_rng.integers((2,))  # a public mask just for the test
        opened = raw.open_masked(mask if party.rank == 0 else torch.zeros_like(mask))
        return raw.reveal(), opened - mask

    r, plain = run_both(job)
    assert torch.equal(r, x) and torch.equal(plain, ring.encode(x))


def test_public_constant_and_zeros():
    def job(party):
        c = party.constant(torch.tensor([1.5, -2.0]))
        z = party.zeros((2,))
        return (c + z).reveal(), party.stats()["rounds"]

    r, rounds = run_both(job)
    assert torch.equal(r, torch.tensor([1.5, -2.0])) and rounds == 1


def test_integer_sharing_refuses_fractional_public_values():
    def job(party):
        a = party.share(torch.tensor([3, 4]) if party.rank == 0 else None, owner=0, shape=(2,),
                        frac_bits=0)
        errors = 0
        for fn in (lambda: a * 0.5, lambda: a + 0.25, lambda: a.mean(), lambda: a / 3):
            try:
                fn()
            except ValueError:
                errors += 1
        return errors, (a * 2.0 + 1).reveal(), (a / 1).reveal()

    errors, b, c = run_both(job)
    assert errors == 4
    assert torch.equal(b, torch.tensor([7, 9])) and torch.equal(c, torch.tensor([3, 4]))


def test_public_torch_tensor_on_the_left():
    x = torch.tensor([1.5, -2.0])
    t = torch.tensor([2.0, 3.0])

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=(2,))
        return [(t + a).reveal(), (t * a).reveal(), (t - a).reveal(),
                (torch.eye(2) @ a).reveal(), (0.5 * t * a).reveal()]

    for g, w in zip(run_both(job), [t + x, t * x, t - x, x, 0.5 * t * x], strict=True):
        assert_close(g, w, 2 * ULP)


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(3, 7),
       st.integers(3, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 1))
@settings(max_examples=10)
def test_conv2d_random_geometry(n, c, o, h, w, kh, kw, stride, padding):
    g = torch.Generator().manual_seed(n + 10 * c + 100 * o + 1000 * h + 10000 * w)
    x = torch.randn(n, c, h, w, generator=g)  # not-secret: test data
    k = torch.randn(o, c, kh, kw, generator=g)  # not-secret: test data

    def job(party):
        a, b = _share_pair(party, x, k)
        return a.conv2d(b, stride=stride, padding=padding).reveal()

    want = F.conv2d(x, k, stride=stride, padding=padding)
    assert_close(run_both(job), want, 1e-3 * c * kh * kw)


def test_every_documented_comparison_operator_is_a_gate_never_identity():
    """``==``/``!=`` and the order comparisons (docs/mpc.md, docs/fss.md) against plaintext."""
    x = torch.tensor([-1.5, 0.0, 2.25, 7.0, -3.0])
    y = torch.tensor([1.0, 0.0, 2.25, -7.0, -3.0])

    def job(party):
        a, b = _share_pair(party, x, y)
        a2 = party.share(x if party.rank == 1 else None, owner=1, shape=x.shape)  # equal values
        outs = {
            "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
            "eq": a.eq(b), "ne": a.ne(b), "torch.eq": torch.eq(a, b), "torch.ne": torch.ne(a, b),
            "same values": a == a2, "itself": a != a, "public": a == 2.25,
            "public left": 0.0 == a, "tensor left": y == a, "numpy left": y.numpy() != a,
            "abs": abs(a),
        }
        errors = []
        for bad in (None, "x"):
            try:
                a == bad  # noqa: B015
            except TypeError as exc:
                errors.append(str(exc))
        table = {a: 1}  # still hashable by identity
        return {k: v.reveal() for k, v in outs.items()}, errors, table[a]

    got, errors, looked_up = run_both(job)
    f = torch.float32
    want = {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y,
            "eq": x == y, "ne": x != y, "torch.eq": x == y, "torch.ne": x != y,
            "same values": torch.ones(5, dtype=torch.bool), "itself": torch.zeros(5, dtype=bool),
            "public": x == 2.25, "public left": x == 0.0, "tensor left": x == y,
            "numpy left": torch.from_numpy(y.numpy() != x.numpy()), "abs": x.abs()}
    for k, w in want.items():
        assert torch.equal(got[k], w.to(f)), (k, got[k], w)
    assert len(errors) == 2 and "NoneType" in errors[0] and looked_up == 1


def test_public_constants_keep_their_precision():
    """Means over many elements, large divisors, tiny factors, wide pools: within one ulp."""
    big = torch.ones(200_000)
    thousands = torch.full((1, 2, 7, 7), 1000.0)
    x = torch.tensor([1.0, -3.0, 1000.0, 12345.678])

    def job(party):
        ones = party.share(big if party.rank == 0 else None, owner=0, shape=big.shape)
        t = party.share(thousands if party.rank == 0 else None, owner=0, shape=thousands.shape)
        a = party.share(x if party.rank == 0 else None, owner=0, shape=x.shape)
        outs = {
            "mean 200000": ones.mean(), "mean 50000": ones[:50_000].mean(),
            "mean dim": ones.reshape(400, 500).mean(dim=1),
            "times 1/200000": ones.sum() * (1 / 200_000), "over 200000": ones.sum() / 200_000,
            "over 200000.0": ones.sum() / 200_000.0, "over -7": a / -7,
            "over int tensor": a / torch.tensor([3, 7, -9, 11]),
            "avg pool 7x7": t.avg_pool2d(7), "avg pool 3x3": t.avg_pool2d(3, stride=2),
            "times 1e-6": a * 1e-6, "times 2^-20": a * 2**-20, "times 0.3": a * 0.3,
            "times tiny tensor": a * torch.tensor([1e-3, 2e-4, 3e-5, 4e-6]),
            "matmul tiny": a.reshape(1, 4) @ torch.full((4, 2), 1e-4),
        }
        return {k: v.reveal(dtype=torch.float64) for k, v in outs.items()}

    got = run_both(job)
    xd = x.double()
    want = {
        "mean 200000": torch.tensor(1.0), "mean 50000": torch.tensor(1.0),
        "mean dim": torch.ones(400), "times 1/200000": torch.tensor(1.0),
        "over 200000": torch.tensor(1.0), "over 200000.0": torch.tensor(1.0),
        "over -7": xd / -7, "over int tensor": xd / torch.tensor([3.0, 7, -9, 11]),
        "avg pool 7x7": torch.full((1, 2, 1, 1), 1000.0),
        "avg pool 3x3": torch.full((1, 2, 3, 3), 1000.0),
        "times 1e-6": xd * 1e-6, "times 2^-20": xd * 2**-20, "times 0.3": xd * 0.3,
        "times tiny tensor": xd * torch.tensor([1e-3, 2e-4, 3e-5, 4e-6], dtype=torch.float64),
        "matmul tiny": (xd.reshape(1, 4) @ torch.full((4, 2), 1e-4, dtype=torch.float64)),
    }
    # Divisions: one ulp off the exact quotient, plus half an ulp for encoding x.
    # Factors: one ulp plus |x| * 2^-(s+1) with s >= 17 fractional bits for the factor.
    for k, w in want.items():
        tol = 1.5 * ULP if not k.startswith(("times", "matmul")) else 2 * ULP
        assert_close(got[k], w, tol)


def test_reveal_is_float64_by_default_and_exact_above_256():
    x = torch.tensor([1000.123, 123456.789, -70000.5], dtype=torch.float64)

    def job(party):
        a = party.share(x if party.rank == 0 else None, owner=0, shape=x.shape)
        return a.reveal(), a.reveal(dtype=torch.float32), (a * 2).reveal(to=1)

    (full, single, doubled), (_, _, doubled1) = veil.run(job)
    assert full.dtype == torch.float64 and single.dtype == torch.float32
    assert_close(full, x, ULP / 2)  # float32 would be off by up to 2^-7 at 123456
    assert doubled is None and doubled1.dtype == torch.float64


def test_opt_in_overflow_check_catches_what_the_ring_silently_wraps(monkeypatch):
    """``VEIL_DEBUG_OVERFLOW=1``: the test oracle (both shares, in-process) names the overflow."""
    big = torch.tensor([2.0**20])
    huge = torch.tensor([2.0**45])

    def job(party, case):
        x = party.share(big if party.rank == 0 else None, owner=0, shape=(1,))
        y = party.share(huge if party.rank == 1 else None, owner=1, shape=(1,))
        if case == "product":
            return (x * x).reveal()
        if case == "scaled":
            return (y * 4).reveal()
        if case == "sum":
            return (y + y + y + y).reveal()
        return (x * 3.0 + (x * 2.0**-10).square()).reveal()  # fine: 3·2^20 + 2^20

    silent = run_both(job, args=("scaled",))
    assert silent.item() < 0  # without the check: four times 2^45 wraps to a negative number
    monkeypatch.setenv("VEIL_DEBUG_OVERFLOW", "1")
    for case, needle in (("product", "product"), ("scaled", "public value"), ("sum", "sum")):
        with pytest.raises(Exception, match="overflow") as info:
            veil.run(job, args=(case,), timeout=20)
        assert needle in str(info.value) or needle in repr(info.value.__cause__), case
    assert run_both(job, args=("ok",)).item() == 2.0**22
