import numpy as np
import pytest

from veil.fl.partition import parse_scheme, partition


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.1", "dirichlet:100"])
def test_every_example_once(scheme):
    labels = np.repeat(np.arange(10), 100)
    parts = partition(labels, 7, scheme, seed=3)
    assert len(parts) == 7 and min(len(p) for p in parts) >= 1
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))


def test_dirichlet_is_skewed_iid_is_not():
    labels = np.repeat(np.arange(10), 200)

    def mean_classes(scheme):
        parts = partition(labels, 10, scheme, seed=0)
        # classes that hold at least 10% of a client's examples
        return np.mean([(np.bincount(labels[p], minlength=10) >= 0.1 * len(p)).sum()
                        for p in parts])

    assert mean_classes("dirichlet:0.1") < 4 < mean_classes("iid")


def test_same_seed_same_split_and_errors():
    labels = np.arange(50) % 5
    a, b = partition(labels, 5, "dirichlet:0.5", 1), partition(labels, 5, "dirichlet:0.5", 1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="cannot give"):
        partition(labels, 60)
    with pytest.raises(ValueError, match="unknown partition"):
        parse_scheme("shards")
    with pytest.raises(ValueError, match="> 0"):
        parse_scheme("dirichlet:0")
