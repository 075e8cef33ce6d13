"""Baby-step giant-step: range edges, negatives, the on-disk table."""

from __future__ import annotations

import numpy as np
import pytest

from veil.fe.dlog import DiscreteLog, DiscreteLogRangeError
from veil.fe.group import GT_GEN, gt_power


@pytest.mark.parametrize("y", [0, 1, -1, 1023, 1024, 1025, -1024, -1025, 5000, -5000,
                               2**16, -(2**16)])
def test_solve_values(solver, y):
    assert solver.solve(gt_power(GT_GEN, y), bound=2**16) == y


@pytest.mark.parametrize("bound", [0, 1, 1023, 1024, 1025, 3000])
def test_range_edges(solver, bound):
    for y in (bound, -bound):
        assert solver.solve(gt_power(GT_GEN, y), bound=bound) == y
    for y in (bound + 1, -bound - 1):
        with pytest.raises(DiscreteLogRangeError):
            solver.solve(gt_power(GT_GEN, y), bound=bound)


def test_negative_bound_rejected(solver):
    with pytest.raises(ValueError):
        solver.solve(GT_GEN, bound=-1)


def test_table_bits_validated():
    for bits in (0, 40):
        with pytest.raises(ValueError):
            DiscreteLog(table_bits=bits, cache_dir=None)


def test_table_cached_on_disk_and_reused(tmp_path):
    first = DiscreteLog(table_bits=8, cache_dir=tmp_path)
    assert first.path is not None and first.path.exists()
    second = DiscreteLog(table_bits=8, cache_dir=tmp_path)
    assert np.array_equal(first._keys, second._keys)
    assert second.solve(gt_power(GT_GEN, -777), bound=1000) == -777
    # A corrupt file is rebuilt, not trusted.
    first.path.write_bytes(b"garbage")
    third = DiscreteLog(table_bits=8, cache_dir=tmp_path)
    assert third.solve(gt_power(GT_GEN, 300), bound=1000) == 300


def test_digest_collision_cannot_give_wrong_answer(tmp_path):
    dl = DiscreteLog(table_bits=6, cache_dir=None)
    # Poison the table: every entry claims the same digest as g^5's but points elsewhere.
    dl._values = (dl._values + 1) % dl.m
    with pytest.raises(DiscreteLogRangeError):
        dl.solve(gt_power(GT_GEN, 5), bound=63)
