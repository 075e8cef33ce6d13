"""The dealer's reusable masks: issued once, derived from a secret key, shape-checked."""

import json

import pytest
import torch

from tests.mpc.mpc_helpers import bit_frequencies
from veil.sharing import MaterialError, MaterialReusedError, preprocess
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import get_kind
from veil.sharing.store import generate_items, open_store
from veil.sharing.triples import apply_bilinear


def test_mask_is_issued_once_and_then_reused_for_triples():
    ring = MaskKeyring()
    b = ring.issue("s/w", (4, 3))
    assert torch.equal(ring.mask("s/w", (4, 3)), b)
    assert ring.issued == {"s/w": (4, 3)}
    with pytest.raises(MaterialReusedError, match="already issued"):
        ring.issue("s/w", (4, 3))
    with pytest.raises(MaterialReusedError):
        ring.issue("s/w", (5, 3))  # another shape under the same id is refused as well


@pytest.mark.parametrize("mask_id,shape,needle", [
    ("never-issued", (4, 3), "no reusable mask"),
    ("s/w", (3, 4), "issued with shape"),
    ("", (4, 3), "non-empty"),
])
def test_triples_only_for_issued_masks_of_the_right_shape(mask_id, shape, needle):
    ring = MaskKeyring()
    ring.issue("s/w", (4, 3))
    with pytest.raises(MaterialError, match=needle):
        ring.mask(mask_id, shape)


def test_masks_depend_on_the_secret_key_and_look_uniform():
    a, b = MaskKeyring(), MaskKeyring()
    ma, mb = a.issue("x", (8192,)), b.issue("x", (8192,))
    assert not torch.equal(ma, mb)
    assert not torch.equal(a.issue("y", (8192,)), ma)  # and on the id
    assert (bit_frequencies(ma) - 0.5).abs().max().item() < 0.028
    with pytest.raises(ValueError):
        MaskKeyring(b"short")


def test_an_explicit_key_never_reissues_a_mask_of_another_keyring():
    """Two preprocessing runs with one explicit key: the weight masks differ (no W1 - W2)."""
    key = b"k" * 32
    first, second = MaskKeyring(key), MaskKeyring(key)
    assert not torch.equal(first.issue("x", (64,)), second.issue("x", (64,)))
    plan = [("fixed_mask", {"mask_id": "s/w", "shape": [16]})]
    masks = []
    for _ in range(2):
        i0, i1, _ = generate_items(plan, keyring=MaskKeyring(key))
        e0, e1 = _expand(i0, 0), _expand(i1, 1)
        masks.append(e0[0]["b"] + e1[0]["b"])
    assert not torch.equal(masks[0], masks[1])


def test_a_saved_keyring_resumes_with_its_register():
    ring = MaskKeyring(b"s" * 32)
    b = ring.issue("w", (3, 2))
    state = json.loads(json.dumps(ring.state()))  # survives a round trip through a file
    again = MaskKeyring.restore(state)
    assert torch.equal(again.mask("w", (3, 2)), b)
    with pytest.raises(MaterialReusedError):
        again.issue("w", (3, 2))
    fresh = again.issue("v", (3,))  # new ids still work, and differ from a key-only keyring's
    assert not torch.equal(fresh, MaskKeyring(b"s" * 32).issue("v", (3,)))
    for bad in ({}, {**state, "nonce": "00"}, {**state, "format": "x"}, {**state, "key": 5}):
        with pytest.raises(MaterialError):
            MaskKeyring.restore(bad)


def _expand(items, rank):
    return [get_kind(k).expand(rank, m, **p) for k, p, m in items]


@pytest.mark.parametrize("op,shape_x,shape_y,extra", [
    ("matmul", (5, 7), (7, 2), {}),
    ("conv2d", (2, 3, 6, 5), (4, 3, 3, 3), {"stride": [2, 2], "padding": [1, 1]}),
    ("beaver", (2, 4, 3, 3), (1, 4, 1, 1), {}),
])
def test_fixed_triples_share_one_mask_across_queries(op, shape_x, shape_y, extra):
    plan = [("fixed_mask", {"mask_id": "m", "shape": list(shape_y)})]
    plan += [(f"{op}_fixed", {"shape_x": list(shape_x), "shape_y": list(shape_y),
                              "mask_id": "m", **extra})] * 3
    i0, i1, _ = generate_items(plan)
    e0, e1 = _expand(i0, 0), _expand(i1, 1)
    b = e0[0]["b"] + e1[0]["b"]
    assert set(i1[1][2]) == {"seed", "c"} and set(i0[1][2]) == {"seed"}  # seed-compressed
    a_seen = []
    for q0, q1 in zip(e0[1:], e1[1:], strict=True):
        a = q0["a"] + q1["a"]
        assert torch.equal(q0["c"] + q1["c"], apply_bilinear(op, a, b, **extra))
        assert all(not torch.equal(a, s) for s in a_seen)  # a is fresh every query
        a_seen.append(a)


def test_dealer_refuses_a_second_issue_and_unissued_triples():
    with pytest.raises(MaterialReusedError):
        generate_items([("fixed_mask", {"mask_id": "m", "shape": [2]})] * 2)
    with pytest.raises(MaterialError, match="no reusable mask"):
        generate_items([("beaver_fixed", {"shape_x": [2], "shape_y": [2], "mask_id": "m"})])


def test_preprocessed_store_keeps_the_mask_of_its_run(tmp_path):
    plan = [("fixed_mask", {"mask_id": "m", "shape": [3, 2]})]
    plan += [("matmul_fixed", {"shape_x": [4, 3], "shape_y": [3, 2], "mask_id": "m"})] * 2
    preprocess(plan, tmp_path / "store")
    halves = []
    for rank in (0, 1):
        with open_store(tmp_path / "store", rank) as store:
            halves.append([get_kind(k).expand(rank, store.take(k, p), **p) for k, p in plan])
    b = halves[0][0]["b"] + halves[1][0]["b"]
    for i in (1, 2):
        a = halves[0][i]["a"] + halves[1][i]["a"]
        assert torch.equal(halves[0][i]["c"] + halves[1][i]["c"], apply_bilinear("matmul", a, b))
