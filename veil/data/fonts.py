"""Synthetic digits in two real typefaces (the collateral-learning dataset).

Main task: the digit (10 classes). Collateral task: the typeface (2 classes).
Both typefaces are TrueType files that matplotlib ships in its ``mpl-data``
folder (DejaVu Sans and STIX General by default), opened by path with Pillow,
so nothing can silently substitute a default font: a missing file is an error,
and :func:`check_fonts_differ` verifies that the two faces render each digit
differently.

Each image is a glyph template (rendered once per digit and face at high
resolution, its ink box fitted in 20x20 and centred by centre of mass in 28x28
like MNIST) put through a random affine map (rotation, size jitter,
translation) and an elastic distortion (a smooth random displacement field),
all batched through ``torch.nn.functional.grid_sample``, then stored as uint8
``0..255``. Splits are sized like MNIST (60,000 / 10,000), balanced over
digits and faces, deterministic for a given seed, and cached under
``~/.cache/veil/data/fonts``.

Example
-------
>>> from veil.data.fonts import font_digits
>>> x, digit, font = font_digits("test", limit=256)   # doctest: +SKIP
>>> x.shape, x.dtype                                   # doctest: +SKIP
(torch.Size([256, 28, 28]), torch.uint8)
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from veil.data.registry import data_dir

DEFAULT_FONTS = ("DejaVuSans.ttf", "STIXGeneral.ttf")
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
_SEEDS = {"train": 1, "test": 2}
_FORMAT = 1
_HI = 112        # template resolution (4x the final 28x28)


def font_path(name: str) -> Path:
    """The path of a TrueType file shipped by matplotlib (``FileNotFoundError`` if absent)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.ttf"))
        raise FileNotFoundError(f"font {name!r} is not shipped by matplotlib here; "
                                f"available: {', '.join(available)}")
    return path


def _render_glyph(digit: int, font_file: Path) -> np.ndarray:
    """The digit's glyph at ``_HI x _HI``, float in [0, 1], MNIST-style framing."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_file), size=200)
    canvas = Image.new("L", (320, 320), 0)
    ImageDraw.Draw(canvas).text((60, 20), str(digit), fill=255, font=font)
    ink = np.asarray(canvas, dtype=np.float64) / 255.0
    rows, cols = np.nonzero(ink > 0.05)
    if rows.size == 0:
        raise ValueError(f"{font_file.name} rendered no ink for digit {digit}")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    # Fit the ink box into 80x80 of the 112 canvas (20x20 of 28x28, as MNIST does).
    h, w = ink.shape
    scale = 80.0 / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    glyph = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        new, Image.Resampling.LANCZOS), dtype=np.float64) / 255.0
    out = np.zeros((_HI, _HI))
    gh, gw = glyph.shape
    # Centre of mass at the canvas centre.
    yy, xx = np.mgrid[0:gh, 0:gw]
    total = glyph.sum()
    cy, cx = (yy * glyph).sum() / total, (xx * glyph).sum() / total
    top = int(round(_HI / 2 - cy))
    left = int(round(_HI / 2 - cx))
    top, left = min(max(top, 0), _HI - gh), min(max(left, 0), _HI - gw)
    out[top : top + gh, left : left + gw] = glyph
    return out


def glyph_templates(fonts: tuple[str, str] = DEFAULT_FONTS) -> torch.Tensor:
    """Templates ``(2, 10, 112, 112)`` float32: face x digit."""
    if len(fonts) != 2 or fonts[0] == fonts[1]:
        raise ValueError(f"need two distinct font files, got {fonts!r}")
    files = [font_path(f) for f in fonts]
    t = np.stack([np.stack([_render_glyph(d, f) for d in range(10)]) for f in files])
    return torch.from_numpy(t).float()


def check_fonts_differ(fonts: tuple[str, str] = DEFAULT_FONTS, min_diff: float = 0.05) -> float:
    """Mean absolute pixel difference between the two faces' templates (raises if too similar).

    Guards against two names that resolve to the same face.
    """
    t = glyph_templates(fonts)
    diffs = (t[0] - t[1]).abs().mean(dim=(1, 2)) / t.mean(dim=(0, 2, 3)).clamp_min(1e-9)
    worst = float(diffs.min())
    if worst < min_diff:
        raise ValueError(f"fonts {fonts} render digit {int(diffs.argmin())} almost identically "
                         f"(relative difference {worst:.3f}); pick two distinct faces")
    return float(diffs.mean())


def _elastic_field(n: int, gen: torch.Generator, amplitude: float) -> torch.Tensor:
    """Smooth random displacements ``(n, 28*4, 28*4, 2)`` in normalised coordinates."""
    coarse = torch.randn(n, 2, 5, 5, generator=gen)  # not-secret: data augmentation
    field = F.interpolate(coarse, size=(_HI, _HI), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1) * amplitude


def render(
    digits: torch.Tensor,
    faces: torch.Tensor,
    templates: torch.Tensor,
    gen: torch.Generator,
    rotation_deg: float = 12.0,
    scale_jitter: float = 0.12,
    shift_px: float = 1.5,
    elastic_px: float = 1.2,
) -> torch.Tensor:
    """Distorted 28x28 uint8 images for the given digit and face labels (batched)."""
    n = digits.shape[0]
    src = templates[faces, digits].unsqueeze(1)                       # (n,1,112,112)
    u = torch.rand(n, 4, generator=gen) * 2 - 1  # not-secret: data augmentation
    theta = u[:, 0] * math.radians(rotation_deg)
    scale = 1.0 + u[:, 1] * scale_jitter
    shift = u[:, 2:] * (2.0 * shift_px / 28.0)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    affine = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                          torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(affine, (n, 1, _HI, _HI), align_corners=False)
    grid = grid + _elastic_field(n, gen, elastic_px * 2.0 / 28.0)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    small = F.avg_pool2d(warped, 4).squeeze(1)                        # (n,28,28)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8)


def generate(split: str, size: int | None = None, fonts: tuple[str, str] = DEFAULT_FONTS,
             seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate a split in memory: images uint8 ``(N, 28, 28)``, digit and face labels."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    size = SPLIT_SIZES[split] if size is None else int(size)
    if size < 1:
        raise ValueError("size must be positive")
    gen = torch.Generator().manual_seed(_SEEDS[split] if seed is None else seed)
    templates = glyph_templates(fonts)
    # Balanced labels: every (digit, face) pair equally often, then shuffled.
    idx = torch.arange(size) % 20
    idx = idx[torch.randperm(size, generator=gen)]  # not-secret: data shuffling
    digits, faces = idx % 10, idx // 10
    chunks = [render(digits[i : i + 4096], faces[i : i + 4096], templates, gen)
              for i in range(0, size, 4096)]
    return torch.cat(chunks), digits.long(), faces.long()


def font_digits(split: str = "train", limit: int | None = None,
                fonts: tuple[str, str] = DEFAULT_FONTS, cache: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The font-digits split (generated once, then loaded from the cache).

    Parameters
    ----------
    split: ``"train"`` (60,000) or ``"test"`` (10,000).
    limit: keep the first ``limit`` images (the order is already shuffled).
    fonts: two TrueType file names from matplotlib's ``mpl-data/fonts/ttf``.
    cache: read/write ``~/.cache/veil/data/fonts``.

    Returns
    -------
    images uint8 ``(N, 28, 28)``, digit labels int64 ``(N,)``, face labels int64 ``(N,)``.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError("limit must be positive")
    stem = f"fonts-v{_FORMAT}-{fonts[0]}-{fonts[1]}-{split}".replace(".ttf", "")
    path = data_dir() / "fonts" / f"{stem}.npz"
    if cache and path.exists():
        with np.load(path) as f:
            x, d, s = (torch.from_numpy(f[k]) for k in ("images", "digits", "faces"))
    else:
        check_fonts_differ(fonts)
        x, d, s = generate(split, fonts=fonts)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, images=x.numpy(), digits=d.numpy(), faces=s.numpy())
            os.replace(tmp, path)
    if limit is not None:
        x, d, s = x[:limit], d[:limit], s[:limit]
    return x, d, s
