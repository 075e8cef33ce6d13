"""Secret-sharing infrastructure: the dealer, its material registry and preprocessing stores.

- :mod:`veil.sharing.material`: the registry of correlated-randomness kinds
  (:func:`register_material`), plans, single-use :class:`Material`;
- :mod:`veil.sharing.triples`: Beaver, matrix, convolution triples and square pairs, and
  triples for operands opened once under a reusable mask;
- :mod:`veil.sharing.masks`: the dealer's reusable masks (derived from its secret key,
  each issued once);
- :mod:`veil.sharing.dealer`: the dealer service;
- :mod:`veil.sharing.store`: in-memory and on-disk (atomic, single-use) stores,
  :func:`preprocess`;
- :mod:`veil.sharing.ledger`: how far each store was consumed, kept outside the stores
  (a store restored from a copy is refused).
"""

from veil.sharing import triples  # noqa: F401  (registers the built-in kinds)
from veil.sharing.errors import (
    MaterialError,
    MaterialExhaustedError,
    MaterialMismatchError,
    MaterialReusedError,
    StoreError,
    StoreReplayError,
    UnknownMaterialError,
)
from veil.sharing.ledger import StoreLedger
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import Material, Plan, register_material
from veil.sharing.store import DiskStore, MemoryStore, open_store, preprocess

__all__ = [
    "DiskStore",
    "MaskKeyring",
    "Material",
    "MaterialError",
    "MaterialExhaustedError",
    "MaterialMismatchError",
    "MaterialReusedError",
    "MemoryStore",
    "Plan",
    "StoreError",
    "StoreLedger",
    "StoreReplayError",
    "UnknownMaterialError",
    "open_store",
    "preprocess",
    "register_material",
]
