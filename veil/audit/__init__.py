"""Audit and comparison: the experiment drivers above :mod:`veil.attacks`, :mod:`veil.dp`,
:mod:`veil.nn`, :mod:`veil.fe` and :mod:`veil.he`.

* :mod:`veil.audit.targets` — reference datasets, models and training recipes (plain or DP-SGD).
* :mod:`veil.audit.dp_training` — DP-SGD training of targets through :mod:`veil.dp`.
* :mod:`veil.audit.experiments` — the reference experiments behind ``veil attack`` and the bench.
* :mod:`veil.audit.plots` — ROC curves and image grids; :mod:`veil.audit.render` — tables.
"""
