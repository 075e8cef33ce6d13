"""On-disk preprocessing stores: order, single use, exhaustion, crash safety, locking."""

import os

import pytest
import torch

from veil.sharing import (
    DiskStore,
    MaterialExhaustedError,
    MaterialMismatchError,
    MemoryStore,
    Plan,
    StoreError,
    open_store,
    preprocess,
)
from veil.sharing.material import get_kind

BEAVER = {"shape_x": [3], "shape_y": [3]}
MATMUL = {"shape_x": [2, 3], "shape_y": [3, 2]}


@pytest.fixture
def store_dir(tmp_path):
    plan = Plan().add("beaver", **BEAVER).add("matmul", **MATMUL).add("beaver", **BEAVER)
    stats = preprocess(plan, tmp_path / "pre")
    assert stats["items"] == 3 and stats["bytes_party1"] > stats["bytes_party0"]
    return tmp_path / "pre"


def test_store_items_form_valid_triples(store_dir):
    with open_store(store_dir, 0) as s0, open_store(store_dir, 1) as s1:
        assert s0.store_id == s1.store_id and s0.total == 3
        k = get_kind("beaver")
        e0 = k.expand(0, s0.take("beaver", BEAVER), **BEAVER)
        e1 = k.expand(1, s1.take("beaver", BEAVER), **BEAVER)
        a, b = e0["a"] + e1["a"], e0["b"] + e1["b"]
        assert torch.equal(e0["c"] + e1["c"], a * b)


def test_mismatch_does_not_consume(store_dir):
    with open_store(store_dir, 0) as s:
        with pytest.raises(MaterialMismatchError, match="item 0"):
            s.take("matmul", MATMUL)
        assert s.consumed == 0
        s.take("beaver", BEAVER)
        with pytest.raises(MaterialMismatchError):
            s.take("beaver", {"shape_x": [4], "shape_y": [4]})


def test_exhausted_store_raises(store_dir):
    with open_store(store_dir, 1) as s:
        s.take("beaver", BEAVER)
        s.take("matmul", MATMUL)
        s.take("beaver", BEAVER)
        with pytest.raises(MaterialExhaustedError, match="exhausted"):
            s.take("beaver", BEAVER)


def test_consumption_persists_and_items_are_deleted(store_dir):
    with open_store(store_dir, 0) as s:
        s.take("beaver", BEAVER)
    assert not (store_dir / "party0" / "items" / "000000.vm").exists()
    with open_store(store_dir, 0) as s:  # reopening never replays item 0
        assert s.consumed == 1
        with pytest.raises(MaterialMismatchError):
            s.take("beaver", BEAVER)
        s.take("matmul", MATMUL)


def test_crash_between_counter_and_read_loses_never_replays(store_dir, monkeypatch):
    s = open_store(store_dir, 0)
    import veil.sharing.store as store_mod

    def crash(self):
        raise OSError("simulated crash")

    monkeypatch.setattr(store_mod.Path, "read_bytes", crash)
    with pytest.raises(StoreError):
        s.take("beaver", BEAVER)
    monkeypatch.undo()
    s.close()
    with open_store(store_dir, 0) as s:
        assert s.consumed == 1  # the item is gone, not served again


def test_store_locked_while_in_use(store_dir):
    with open_store(store_dir, 0):
        with pytest.raises(StoreError, match="in use"):
            DiskStore(store_dir / "party0")
    DiskStore(store_dir / "party0").close()


def test_incomplete_and_wrong_stores_refused(store_dir, tmp_path):
    (store_dir / "party0" / "store.json").unlink()
    with pytest.raises(StoreError, match="no store.json"):
        open_store(store_dir, 0)
    with pytest.raises(StoreError, match="belongs to party 1"):
        open_store(store_dir / "party1", 0)
    with pytest.raises(StoreError, match="refusing to overwrite"):
        preprocess(Plan().add("beaver", **BEAVER), store_dir)
    preprocess(Plan().add("beaver", **BEAVER), store_dir, overwrite=True)
    (store_dir / "party0" / "consumed").write_text("banana")
    with pytest.raises(StoreError, match="corrupt"):
        open_store(store_dir, 0)


def test_no_temporary_files_left(store_dir):
    leftovers = [p for p in os.listdir(store_dir) if p.startswith(".")]
    assert leftovers == []


def test_memory_store_order_and_exhaustion():
    s = MemoryStore([("beaver", BEAVER, {"x": 1})])
    with pytest.raises(MaterialMismatchError):
        s.take("matmul", MATMUL)
    assert s.take("beaver", BEAVER) == {"x": 1}
    with pytest.raises(MaterialExhaustedError, match="1 items"):
        s.take("beaver", BEAVER)
