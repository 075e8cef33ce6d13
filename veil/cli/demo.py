"""``veil demo``: Veil's main job end to end on an embedded default."""

from __future__ import annotations


def demo() -> None:
    """Run Veil's main job end to end (being built)."""
    raise SystemExit("the demo is being built")
