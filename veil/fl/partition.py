"""Splitting a labelled dataset among federated clients: IID and Dirichlet(α) non-IID.

The Dirichlet split (Hsu, Qi, Brown 2019) draws, for every class, the
proportions of that class held by each client from Dir(α): small α gives each
client few classes (strongly non-IID), large α approaches the IID split.
Partitions depend only on the labels and the seed, so every client (a separate
process in a deployment) recomputes its own part without any coordination.

Example
-------
>>> import numpy as np
>>> labels = np.repeat(np.arange(10), 50)
>>> parts = partition(labels, num_clients=5, scheme="dirichlet:0.5", seed=0)
>>> sorted(np.concatenate(parts).tolist()) == list(range(500))
True
"""

from __future__ import annotations

import numpy as np


def parse_scheme(scheme: str) -> tuple[str, float | None]:
    """``"iid"`` -> ``("iid", None)``; ``"dirichlet:0.5"`` -> ``("dirichlet", 0.5)``."""
    if scheme == "iid":
        return "iid", None
    name, _, arg = scheme.partition(":")
    if name == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise ValueError(f"dirichlet needs a concentration, e.g. 'dirichlet:0.5', "
                             f"got {scheme!r}") from None
        if not alpha > 0:
            raise ValueError(f"the Dirichlet concentration must be > 0, got {alpha}")
        return "dirichlet", alpha
    raise ValueError(f"unknown partition {scheme!r}: use 'iid' or 'dirichlet:<alpha>'")


def partition(labels: np.ndarray, num_clients: int, scheme: str = "iid", seed: int = 0,
              min_size: int = 1) -> list[np.ndarray]:
    """Indices of the examples held by each of ``num_clients`` clients.

    Every example is given to exactly one client. The Dirichlet split is redrawn
    (with the next seed) until every client holds at least ``min_size`` examples,
    and refuses when that is impossible.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if n < num_clients * min_size:
        raise ValueError(
            f"{n} examples cannot give {num_clients} clients {min_size} example(s) each")
    kind, alpha = parse_scheme(scheme)
    rng = np.random.default_rng(seed)  # not-secret: which client holds which example
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), num_clients)]
    classes = np.unique(labels)
    for _ in range(100):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(
        f"could not draw a Dirichlet({alpha}) split giving each of {num_clients} clients "
        f"{min_size} example(s) in 100 tries: raise alpha or lower the number of clients")
