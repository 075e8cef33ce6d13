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
    StoreLedger,
    StoreReplayError,
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


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_store_restored_from_a_copy_is_refused(store_dir, tmp_path):
    """The replay attack: copy the store, run, restore the copy: the ledger refuses it."""
    backup = _copy(store_dir, tmp_path / "backup")
    with open_store(store_dir, 0) as s:
        s.take("beaver", BEAVER)
    import shutil

    shutil.rmtree(store_dir)
    _copy(backup, store_dir)  # restored in place ...
    with pytest.raises(StoreReplayError, match="consumed up to item 1"):
        open_store(store_dir, 0)
    with pytest.raises(StoreReplayError):  # ... or opened from another folder
        open_store(backup, 0)
    with open_store(store_dir, 1) as s:  # the other party's half is still untouched
        assert s.consumed == 0


def test_a_fully_consumed_store_id_is_refused(store_dir, tmp_path):
    backup = _copy(store_dir, tmp_path / "backup")
    with open_store(store_dir, 1) as s:
        for kind, params in (("beaver", BEAVER), ("matmul", MATMUL), ("beaver", BEAVER)):
            s.take(kind, params)
    with pytest.raises(StoreReplayError, match="consumed entirely"):
        open_store(store_dir, 1)
    with pytest.raises(StoreReplayError):
        open_store(backup, 1)


def test_two_copies_cannot_be_consumed_at_once(store_dir, tmp_path):
    backup = _copy(store_dir, tmp_path / "backup")
    with open_store(store_dir, 0):
        with pytest.raises(StoreError, match="in use by another process"):
            open_store(backup, 0)


def test_the_ledger_lives_where_it_is_told(store_dir, tmp_path):
    ledger = StoreLedger(tmp_path / "ledger")
    with open_store(store_dir, 0, ledger) as s:
        s.take("beaver", BEAVER)
    assert ledger.recorded(s.store_id, 0) == 1
    assert StoreLedger(tmp_path / "elsewhere").recorded(s.store_id, 0) == 0
    entry = next(p for p in (tmp_path / "ledger").iterdir() if p.suffix != ".lock")
    entry.write_text("garbage")
    with pytest.raises(StoreError, match="corrupt ledger entry"):
        open_store(store_dir, 0, ledger)


@pytest.mark.parametrize("name", ["../../outside.vm", "/etc/passwd", "000001.vm"])
def test_manifest_file_names_are_never_trusted(store_dir, tmp_path, name):
    import json

    outside = tmp_path / "outside.vm"
    outside.write_bytes(b"x")
    manifest = store_dir / "party0" / "store.json"
    meta = json.loads(manifest.read_text())
    meta["items"][0]["file"] = name
    manifest.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="crafted manifest"):
        open_store(store_dir, 0)
    assert outside.exists()


@pytest.mark.parametrize("change", [
    {"store_id": ["x"]}, {"store_id": ""}, {"party": "0"}, {"party": True}, {"items": {}},
    {"items": [["beaver", {}]]}, {"items": [{"kind": 3, "params": {}}]},
])
def test_malformed_manifests_are_store_errors(store_dir, change):
    import json

    manifest = store_dir / "party0" / "store.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **change}))
    with pytest.raises(StoreError, match="malformed"):
        open_store(store_dir, 0)
