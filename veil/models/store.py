"""Save and load trained zoo weights in a cache folder (never in the repository).

The folder is ``$VEIL_MODEL_DIR`` when set, else ``~/.cache/veil/models``.
Each model is stored as ``<name>.pt`` (a ``state_dict``) next to ``<name>.json``
(how it was trained, its measured test accuracy and a fingerprint of the
architecture it was trained for). Weights whose fingerprint differs from the
current definition (the zoo changed, e.g. a padding) count as missing rather
than being loaded into a different network. Writes are atomic, so an
interrupted save never leaves a truncated file behind.

Example
-------
>>> from veil.models import build, save_weights, load_weights
>>> path = save_weights(build("network1"), "network1", {"test_accuracy": None})  # doctest: +SKIP
>>> model, meta = load_weights("network1")                                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.models.zoo import build


def model_dir() -> Path:
    """The weights cache folder (created on demand)."""
    env = os.environ.get("VEIL_MODEL_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "veil" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_path(name: str) -> Path:
    """Where the weights of ``name`` live (the file may not exist)."""
    return model_dir() / f"{name.lower()}.pt"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def architecture(name: str) -> str:
    """A fingerprint of the zoo's current definition of ``name`` (layers and their
    hyper-parameters, from the module's ``repr``)."""
    return hashlib.sha256(repr(build(name)).encode()).hexdigest()[:16]


def save_weights(model: nn.Module, name: str, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model.state_dict()`` (and ``meta`` as JSON) under the cache folder."""
    path = weights_path(name)
    _atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))
    info = dict(meta or {}, model=name.lower(), architecture=architecture(name))
    _atomic_write(path.with_suffix(".json"),
                  lambda fh: fh.write(json.dumps(info, indent=2).encode()))
    return path


def _meta(name: str) -> dict[str, Any]:
    meta_path = weights_path(name).with_suffix(".json")
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def has_weights(name: str) -> bool:
    """Whether trained weights for the current definition of ``name`` are cached."""
    return weights_path(name).is_file() and _meta(name).get("architecture") == architecture(name)


def load_weights(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """A zoo network with its cached trained weights, in eval mode, and its metadata.

    Raises
    ------
    FileNotFoundError
        With the command that trains the model, when nothing is cached or the cached
        weights belong to an older definition of the network.
    """
    path = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights for {name!r} in {path.parent}; "
            f"train them with `veil models train {name.lower()}`")
    if not has_weights(name):
        raise FileNotFoundError(
            f"the weights cached in {path} were trained for another definition of {name!r} "
            f"(the zoo changed since); train them again with "
            f"`veil models train {name.lower()}`")
    model = build(name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), _meta(name)
