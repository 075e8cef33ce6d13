"""Dealer material: the registry, triple correctness, seed compression, single use."""

import pytest
import torch
import torch.nn.functional as F

from veil.comm.wire import wire_size
from veil.csprng import CSPRNG
from veil.sharing import Material, MaterialReusedError, Plan, UnknownMaterialError
from veil.sharing.material import canonical_params, get_kind, register_material, request_key
from veil.sharing.triples import apply_bilinear


def _both(kind, **params):
    k = get_kind(kind)
    m0, m1 = k.generate(CSPRNG(), **canonical_params(params))
    return m0, m1, k.expand(0, m0, **canonical_params(params)), k.expand(1, m1,
                                                                         **canonical_params(params))


@pytest.mark.parametrize("kind,params", [
    ("beaver", {"shape_x": (3, 4), "shape_y": (3, 4)}),
    ("beaver", {"shape_x": (3, 1), "shape_y": (4,)}),
    ("matmul", {"shape_x": (5, 7), "shape_y": (7, 2)}),
    ("matmul", {"shape_x": (2, 5, 7), "shape_y": (7,)}),
    ("conv2d", {"shape_x": (2, 3, 6, 5), "shape_y": (4, 3, 3, 3), "stride": [2, 2],
                "padding": [1, 1]}),
])
def test_triples_are_correct(kind, params):
    _, _, e0, e1 = _both(kind, **params)
    a, b, c = e0["a"] + e1["a"], e0["b"] + e1["b"], e0["c"] + e1["c"]
    opp = {k: params[k] for k in ("stride", "padding") if k in params}
    assert torch.equal(c, apply_bilinear(kind, a, b, **opp))
    if kind == "conv2d":
        assert torch.equal(c, F.conv2d(a, b, stride=2, padding=1))


def test_square_pair_is_correct():
    _, _, e0, e1 = _both("square", shape=(10,))
    a = e0["a"] + e1["a"]
    assert torch.equal(e0["c"] + e1["c"], a * a)


def test_seed_compression_halves_dealer_bytes():
    m0, m1, e0, e1 = _both("matmul", shape_x=(64, 64), shape_y=(64, 64))
    sent = wire_size(m0) + wire_size(m1)
    full = wire_size(e0) + wire_size(e1)
    assert isinstance(m0["seed"], bytes) and len(m0["seed"]) == 16
    assert sent < full / 5  # one tensor instead of six
    assert set(m1) == {"seed", "c"}


def test_shares_of_each_party_look_independent_of_the_other():
    # Party 1's a-share is not party 0's (distinct seeds).
    _, _, e0, e1 = _both("beaver", shape_x=(64,), shape_y=(64,))
    assert not torch.equal(e0["a"], e1["a"])


def test_malformed_material_rejected():
    from veil.sharing.errors import MaterialError

    k = get_kind("beaver")
    params = canonical_params({"shape_x": (2,), "shape_y": (2,)})
    with pytest.raises(MaterialError, match="seed"):
        k.expand(0, {"seed": b"short"}, **params)
    with pytest.raises(MaterialError, match="correction"):
        k.expand(1, {"seed": b"0" * 16, "c": torch.zeros(3, dtype=torch.int64)}, **params)


def test_registry_extensible_and_unknown_kind():
    @register_material("test_zero_pair", replace=True)
    def zero_pair(rng, *, n):
        r = rng.integers((n,))
        return {"r": r}, {"r": -r}

    m0, m1 = get_kind("test_zero_pair").generate(CSPRNG(), n=4)
    assert torch.equal(m0["r"] + m1["r"], torch.zeros(4, dtype=torch.int64))
    with pytest.raises(UnknownMaterialError, match="no dealer material of kind 'nope'"):
        get_kind("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_material("beaver")(lambda rng: ({}, {}))


def test_material_single_use():
    m = Material("beaver", {"a": torch.ones(1)})
    assert not m.spent
    m.take()
    assert m.spent
    with pytest.raises(MaterialReusedError, match="single-use"):
        m.take()


def test_request_keys_canonical():
    assert request_key("matmul", {"shape_x": (2, 3), "shape_y": torch.Size([3, 1])}) == \
        request_key("matmul", {"shape_y": [3, 1], "shape_x": [2, 3]})
    assert request_key("beaver", {"shape_x": [2]}) != request_key("beaver", {"shape_x": [3]})
    plan = Plan().add("beaver", repeat=3, shape_x=(2,), shape_y=(2,))
    assert len(plan) == 3 and plan[0] == ("beaver", {"shape_x": [2], "shape_y": [2]})
    with pytest.raises(TypeError):
        canonical_params({"x": object()})


def test_material_kinds_describe_their_family_and_size():
    """No caller recognises a kind by its name or module, or hard-codes its size."""
    import math

    import veil.mpc.nonlinear  # noqa: F401  (registers the FSS kinds)
    from veil.fss.gates import sign_key_bits
    from veil.sharing.material import get_kind, plan_bytes

    assert {k: get_kind(k).family for k in ("beaver", "matmul_fixed", "fixed_mask", "square",
                                            "fss_sign", "fss_eq")} == {
        "beaver": "triple", "matmul_fixed": "triple", "fixed_mask": "mask", "square": "triple",
        "fss_sign": "fss_key", "fss_eq": "fss_key"}
    conv = {"shape_x": [2, 3, 8, 8], "shape_y": [4, 3, 3, 3], "stride": [1, 1],
            "padding": [1, 1]}
    assert get_kind("conv2d").nbytes(conv) == 8 * (2 * 3 * 64 + 4 * 27 + 2 * 4 * 64)
    sign = {"count": 10, "relu": True}
    assert get_kind("fss_sign").nbytes(sign) == 10 * (
        math.ceil(sign_key_bits(relu=True) / 8) + 16)
    # The sizes are what a party really holds after expansion.
    from veil.sharing.store import generate_items

    plan = [("matmul", {"shape_x": [5, 7], "shape_y": [7, 2]}), ("square", {"shape": [6]})]
    items0, _, _ = generate_items(plan)
    held = sum(t.numel() * 8 for (k, p, m) in items0
               for t in get_kind(k).expand(0, m, **p).values())
    assert plan_bytes(plan) == held
    with pytest.raises(ValueError, match="family"):
        register_material("doc_bad_family", family="bogus")
