"""Strict JSON for the command line: JSON has no Infinity or NaN tokens."""

from __future__ import annotations

import json
import math


def strict(obj):
    """Return ``obj`` with every non-finite float replaced by ``None`` (``null``).

    >>> strict({"epsilon": float("inf"), "steps": [1.0, float("nan")]})
    {'epsilon': None, 'steps': [1.0, None]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def dumps(payload, **kwargs) -> str:
    """``json.dumps`` of :func:`strict` ``(payload)``; never prints ``Infinity``/``NaN``."""
    return json.dumps(strict(payload), allow_nan=False, **kwargs)
