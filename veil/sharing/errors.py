"""Errors about dealer material (correlated randomness)."""

from __future__ import annotations


class MaterialError(RuntimeError):
    """Base class: dealer material is missing, mismatched, exhausted or reused."""


class UnknownMaterialError(MaterialError, KeyError):
    """No generator is registered for this kind of material."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MaterialMismatchError(MaterialError):
    """The material requested is not the one that was generated next (kind or parameters)."""


class MaterialExhaustedError(MaterialError):
    """The preprocessing store has no material left."""


class MaterialReusedError(MaterialError):
    """An item of correlated randomness was used twice (this would break security)."""


class StoreError(MaterialError):
    """A preprocessing store on disk is missing, incomplete, corrupt or locked."""


class StoreReplayError(StoreError):
    """A preprocessing store was consumed before (restored from a copy): refused."""
