"""Every environment variable Veil reads, in one place.

Each setting is a function read at call time (not at import), so a test or a
long-running process can change the environment and see the effect. Nothing
here imports anything heavier than the standard library.

==============================  ==============================================
Variable                        Meaning (default)
==============================  ==============================================
``VEIL_CACHE``                  root of Veil's caches (``~/.cache/veil``)
``VEIL_DATA_DIR``               dataset cache (``$VEIL_CACHE/data``)
``VEIL_MODEL_DIR``              trained weights cache (``$VEIL_CACHE/models``)
``VEIL_STATE_DIR``              durable state that must outlive any one store,
                                e.g. the register of consumed preprocessing
                                stores (``$XDG_STATE_HOME/veil`` or
                                ``~/.local/state/veil``)
``VEIL_PREFETCH_LIMIT_MB``      dealer material a party prefetches ahead of the
                                online phase, in MiB (1024)
``VEIL_FSS_NATIVE_AES``         ``0`` disables the numba AES kernels (``1``)
``VEIL_FE_TABLE_BITS``          size (log2) of the FE discrete-log table (20)
``VEIL_CRYPTEN_PATH``           folder holding CrypTen 0.4.1 for benchmarks
``VEIL_DEBUG_OVERFLOW``         ``1``: check fixed-point overflow in the test
                                oracle of secure products (off; see
                                :func:`debug_overflow`)
==============================  ==============================================

Example
-------
>>> import os
>>> os.environ["VEIL_FE_TABLE_BITS"] = "18"
>>> fe_table_bits()
18
>>> del os.environ["VEIL_FE_TABLE_BITS"]
>>> fe_table_bits()
20
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_dir",
    "crypten_path",
    "data_dir",
    "debug_overflow",
    "fe_table_bits",
    "fss_native_aes",
    "model_dir",
    "prefetch_limit_bytes",
    "state_dir",
]


def _path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def _flag(var: str, default: bool) -> bool:
    value = os.environ.get(var)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"${var} must be 0 or 1, not {value!r}")


def _number(var: str, default: float, kind: type = float) -> float:
    value = os.environ.get(var)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"${var} must be a number, not {value!r}") from None


def cache_dir() -> Path:
    """``$VEIL_CACHE`` or ``~/.cache/veil`` (not created)."""
    return _path("VEIL_CACHE") or Path.home() / ".cache" / "veil"


def data_dir() -> Path:
    """``$VEIL_DATA_DIR`` or ``~/.cache/veil/data`` (not created)."""
    return _path("VEIL_DATA_DIR") or Path.home() / ".cache" / "veil" / "data"


def model_dir() -> Path:
    """``$VEIL_MODEL_DIR`` or ``~/.cache/veil/models`` (not created)."""
    return _path("VEIL_MODEL_DIR") or Path.home() / ".cache" / "veil" / "models"


def state_dir() -> Path:
    """``$VEIL_STATE_DIR``, else ``$XDG_STATE_HOME/veil``, else ``~/.local/state/veil``.

    Durable state, unlike a cache: deleting it lets a copied preprocessing
    store be replayed.
    """
    explicit = _path("VEIL_STATE_DIR")
    if explicit is not None:
        return explicit
    xdg = _path("XDG_STATE_HOME")
    return (xdg or Path.home() / ".local" / "state") / "veil"


def prefetch_limit_bytes() -> int:
    """``$VEIL_PREFETCH_LIMIT_MB`` (default 1024) in bytes."""
    return int(_number("VEIL_PREFETCH_LIMIT_MB", 1024.0) * 2**20)


def fss_native_aes() -> bool:
    """Whether the numba AES kernels may be used (``$VEIL_FSS_NATIVE_AES``, default on)."""
    return _flag("VEIL_FSS_NATIVE_AES", True)


def fe_table_bits() -> int:
    """``$VEIL_FE_TABLE_BITS`` (default 20): log2 of the baby-step table size."""
    return int(_number("VEIL_FE_TABLE_BITS", 20, int))


def crypten_path() -> str | None:
    """``$VEIL_CRYPTEN_PATH``: a folder holding CrypTen 0.4.1, or None."""
    return os.environ.get("VEIL_CRYPTEN_PATH") or None


def debug_overflow() -> bool:
    """``$VEIL_DEBUG_OVERFLOW`` (default off): check products for fixed-point overflow.

    Only the test oracle, which holds both shares anyway, looks at plaintext
    values; a party in a real deployment never reveals anything extra because of
    this flag (see :mod:`veil.mpc.overflow`).
    """
    return _flag("VEIL_DEBUG_OVERFLOW", False)
