"""The registry of correlated-randomness kinds, and single-use material items.

A *kind* of material (Beaver triples, matrix triples, FSS keys, ...) is a
generator run by the dealer::

    generate(rng: CSPRNG, **params) -> (material_for_party0, material_for_party1)

A kind registered with ``keyed=True`` is also given the dealer's
:class:`~veil.sharing.masks.MaskKeyring` (``generate(rng, keyring, **params)``):
the one piece of dealer state, for masks reused across requests.

where material is a dict of tensors, numpy arrays, bytes and JSON scalars (it
travels with :mod:`veil.comm.wire`, never pickle). A kind may also register an
``expand(rank, material, **params) -> dict`` run by the receiving party: this is
how seed compression works (the dealer sends a 16-byte seed instead of
tensors, and the party expands it with :class:`~veil.csprng.CSPRNG`).

Any module can add kinds without touching this one::

    from veil.sharing.dealer import register_material

    @register_material("my_masks", expand=my_expand)
    def my_masks(rng, *, shape):
        ...
        return m0, m1

Parameters are canonicalised to JSON (tuples become lists) and the pair
``(kind, params)`` is checked online against what the dealer produced.

A kind describes itself: its ``family`` (:data:`FAMILIES`: ``"triple"``,
``"mask"``, ``"fss_key"``, ``"other"``) and, through ``size(**params)``, the
bytes of one party's material for given parameters. Code elsewhere asks the
kind (:meth:`MaterialKind.nbytes`, :func:`plan_bytes`) instead of recognising
it by its name or its module and hard-coding sizes.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from veil.sharing.errors import MaterialReusedError, UnknownMaterialError

if TYPE_CHECKING:
    from veil.csprng import CSPRNG
    from veil.sharing.masks import MaskKeyring

Generator = Callable[..., tuple[dict, dict]]
Expander = Callable[..., dict]
Sizer = Callable[..., int]

#: What a kind of material is for: Beaver-style product triples, reusable masks, FSS gate
#: keys, anything else.
FAMILIES = ("triple", "mask", "fss_key", "other")


@dataclass(frozen=True)
class MaterialKind:
    """A registered kind of dealer material."""

    name: str
    generate: Generator
    expand: Expander | None
    module: str
    keyed: bool = False
    family: str = "other"
    size: Sizer | None = None

    def nbytes(self, params: Mapping[str, Any]) -> int:
        """Bytes of one party's (expanded) material of this kind with ``params``."""
        if self.size is None:
            raise UnknownMaterialError(f"material kind {self.name!r} does not describe its "
                                       "size (register it with size=...)")
        return int(self.size(**params))

    def run(self, rng: CSPRNG, keyring: MaskKeyring, params: Mapping[str, Any]
            ) -> tuple[dict, dict]:
        """Generate one item (the dealer's side): both parties' halves."""
        if self.keyed:
            return self.generate(rng, keyring, **params)
        return self.generate(rng, **params)


_REGISTRY: dict[str, MaterialKind] = {}
_LOCK = threading.Lock()


def register_material(
    name: str, *, expand: Expander | None = None, replace: bool = False, keyed: bool = False,
    family: str = "other", size: Sizer | None = None,
) -> Callable[[Generator], Generator]:
    """Decorator registering ``generate(rng, **params) -> (m0, m1)`` under ``name``.

    Parameters
    ----------
    name:
        The kind's name, used in requests and plans.
    expand:
        Optional ``expand(rank, material, **params) -> dict`` run by the receiving
        party (e.g. to expand a seed into tensors).
    replace:
        Allow re-registering an existing name (otherwise a clear error).
    keyed:
        The generator takes the dealer's mask keyring as second argument.
    family:
        One of :data:`FAMILIES`.
    size:
        ``size(**params) -> int``: bytes of one party's material for ``params``.

    Example
    -------
    >>> from veil.csprng import CSPRNG
    >>> @register_material("doc_zero_pair", replace=True)
    ... def _zero_pair(rng, *, n):
    ...     r = rng.integers((n,))
    ...     return {"r": r}, {"r": -r}
    """
    if not isinstance(name, str) or not name:
        raise ValueError("material kind name must be a non-empty string")
    if family not in FAMILIES:
        raise ValueError(f"material family must be one of {FAMILIES}, got {family!r}")

    def deco(fn: Generator) -> Generator:
        with _LOCK:
            old = _REGISTRY.get(name)
            if old is not None and not replace and old.generate is not fn:
                if (old.module, old.generate.__qualname__) != (fn.__module__, fn.__qualname__):
                    raise ValueError(f"material kind {name!r} is already registered by "
                                     f"{old.module}")
            _REGISTRY[name] = MaterialKind(name, fn, expand, fn.__module__, keyed, family, size)
        return fn

    return deco


def get_kind(name: str, module: str | None = None) -> MaterialKind:
    """The registered kind ``name``; imports ``module`` (a ``veil.*`` module) if needed."""
    kind = _REGISTRY.get(name)
    if kind is None and module and module.split(".")[0] == "veil":
        importlib.import_module(module)
        kind = _REGISTRY.get(name)
    if kind is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownMaterialError(
            f"no dealer material of kind {name!r} is registered (known: {known})")
    return kind


def plan_bytes(plan: Iterable) -> int:
    """Bytes of one party's material for a whole plan, as the kinds describe themselves.

    Example
    -------
    >>> plan_bytes([("matmul", {"shape_x": [2, 3], "shape_y": [3, 4]})])   # a, b, c in int64
    208
    """
    return sum(get_kind(kind).nbytes(params) for kind, params in normalize_plan(plan))


def registered_modules() -> list[str]:
    """Modules that registered kinds in this process (a dealer process imports them)."""
    return sorted({k.module for k in _REGISTRY.values()})


def canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters normalised to JSON values: tuples and ``torch.Size`` become lists."""

    def norm(v: Any) -> Any:
        if isinstance(v, torch.Size | tuple | list):
            return [norm(i) for i in v]
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v)
        if isinstance(v, torch.dtype):
            return str(v)
        if isinstance(v, Mapping):
            return {str(k): norm(x) for k, x in v.items()}
        if hasattr(v, "item") and callable(v.item):
            return norm(v.item())
        raise TypeError(f"material parameter of type {type(v).__name__} is not JSON-like")

    return {str(k): norm(v) for k, v in params.items()}


def request_key(kind: str, params: Mapping[str, Any]) -> str:
    """The canonical identity of a request: kind plus canonical parameters."""
    return json.dumps([kind, canonical_params(params)], sort_keys=True, separators=(",", ":"))


def normalize_plan(plan: Iterable) -> list[tuple[str, dict[str, Any]]]:
    """A plan as a list of ``(kind, params)``; accepts pairs or :class:`Plan`."""
    out: list[tuple[str, dict[str, Any]]] = []
    for item in plan:
        if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
            kind, params = item
        else:
            raise TypeError(f"plan items must be (kind, params) pairs, got {item!r:.80}")
        out.append((kind, canonical_params(params or {})))
    return out


class Plan(list):
    """An ordered list of material requests ``(kind, params)``, built fluently.

    Example
    -------
    >>> plan = Plan().add("matmul", shape_x=(4, 8), shape_y=(8, 3)).add("beaver", shape_x=(4,),
    ...                                                                  shape_y=(4,))
    >>> len(plan)
    2
    """

    def add(self, kind: str, repeat: int = 1, **params: Any) -> Plan:
        for _ in range(repeat):
            self.append((kind, canonical_params(params)))
        return self


class Material:
    """One item of correlated randomness that can be taken exactly once.

    Example
    -------
    >>> m = Material("beaver", {"a": 1})
    >>> m.take()["a"]
    1
    >>> m.take()
    Traceback (most recent call last):
    ...
    veil.sharing.errors.MaterialReusedError: beaver material was already used ...
    """

    __slots__ = ("kind", "_data", "_lock")

    def __init__(self, kind: str, data: dict) -> None:
        self.kind = kind
        self._data: dict | None = data
        self._lock = threading.Lock()

    @property
    def spent(self) -> bool:
        return self._data is None

    def take(self) -> dict:
        """Return the material and forget it; a second call raises MaterialReusedError."""
        with self._lock:
            data, self._data = self._data, None
        if data is None:
            raise MaterialReusedError(
                f"{self.kind} material was already used (correlated randomness is single-use; "
                "reusing it would leak secrets)")
        return data


def to_device(material: dict, device: torch.device | str | None) -> dict:
    """Move the tensors of a material dict to ``device`` (no-op on CPU)."""
    if device is None or torch.device(device).type == "cpu":
        return material
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in material.items()}
