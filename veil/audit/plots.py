"""Figures of the attack reports: log-log ROC curves and image grids (matplotlib, Agg).

Example
-------
>>> import numpy as np, torch, tempfile, pathlib
>>> from veil.attacks.metrics import evaluate_scores
>>> from veil.audit.plots import roc_plot, image_grid
>>> r = evaluate_scores(np.r_[np.ones(50), np.zeros(50)] + np.arange(100) / 1e3,
...                     np.r_[np.ones(50), np.zeros(50)])
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> roc_plot({"toy": r}, d / "roc.png").exists()
True
>>> image_grid([("x", torch.rand(3, 1, 8, 8))], d / "grid.png").exists()
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from veil.attacks.metrics import MembershipResult  # noqa: E402


def roc_plot(results: Mapping[str, MembershipResult], path: str | Path, title: str = "") -> Path:
    """ROC curves on log-log axes (the low-FPR regime is what matters), with the chance line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    floor = 1.0
    for name, r in results.items():
        n_neg = max(r.n_nonmembers, 1)
        floor = min(floor, 1 / n_neg)
        fpr = np.maximum(r.fpr, 1 / (2 * n_neg))    # log axes cannot show FPR = 0
        tpr = np.maximum(r.tpr, 1 / (2 * max(r.n_members, 1)))
        ax.plot(fpr, tpr, label=f"{name} (AUC {r.auc:.3f})", lw=1.3)
    grid = np.logspace(np.log10(floor / 2), 0, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_ylim(floor / 2, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _as_hwc(img: torch.Tensor) -> np.ndarray:
    a = torch.as_tensor(img, dtype=torch.float32).clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], path: str | Path,
               col_titles: Sequence[str] | None = None, scale: float = 0.9) -> Path:
    """One row of images per ``(label, images (N, C, H, W) in [0, 1])``; saved as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError("nothing to plot")
    ncols = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(scale * ncols + 1.2, scale * len(rows)),
                             dpi=80, squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < len(imgs):
                ax.imshow(_as_hwc(imgs[c]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path)
    plt.close(fig)
    return path
