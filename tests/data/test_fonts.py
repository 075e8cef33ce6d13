"""The font-digits dataset: real, distinct typefaces; balanced, deterministic; fonts learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.data import fonts


def test_fonts_are_shipped_files_and_render_differently():
    for name in fonts.DEFAULT_FONTS:
        assert fonts.font_path(name).is_file()
    assert fonts.check_fonts_differ() > 0.2
    with pytest.raises(FileNotFoundError, match="not shipped"):
        fonts.font_path("NoSuchFont.ttf")
    with pytest.raises(ValueError, match="distinct"):
        fonts.glyph_templates(("DejaVuSans.ttf", "DejaVuSans.ttf"))


def test_same_face_under_two_names_is_caught(tmp_path, monkeypatch):
    # Two different file names with identical glyphs (what a silent substitution looks like).
    real = fonts.font_path("DejaVuSans.ttf")
    monkeypatch.setattr(fonts, "font_path", lambda name: real)
    with pytest.raises(ValueError, match="almost identically"):
        fonts.check_fonts_differ(("A.ttf", "B.ttf"))


@pytest.fixture(scope="module")
def sample():
    return fonts.generate("train", size=1600, seed=5), fonts.generate("test", size=400, seed=6)


def test_shapes_balance_and_determinism(sample):
    (x, d, f), _ = sample
    assert x.shape == (1600, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(d, minlength=10).tolist() == [160] * 10
    assert torch.bincount(f, minlength=2).tolist() == [800, 800]
    assert x.float().mean() > 10 and x.max() > 200          # ink, MNIST-like range
    assert (x[:, :2].float().mean() < 5) and (x[:, :, :2].float().mean() < 5)  # empty border
    x2, d2, _ = fonts.generate("train", size=64, seed=5)
    x3, d3, _ = fonts.generate("train", size=64, seed=5)
    assert torch.equal(x2, x3) and torch.equal(d2, d3)
    x4, _, _ = fonts.generate("train", size=64, seed=7)
    assert not torch.equal(x2, x4)


def test_font_is_learnable_directly(sample):
    from sklearn.linear_model import RidgeClassifier

    (x, d, f), (xt, dt, ft) = sample
    X, Xt = x.reshape(len(x), -1).numpy() / 255.0, xt.reshape(len(xt), -1).numpy() / 255.0
    font_acc = RidgeClassifier(alpha=10.0).fit(X, f.numpy()).score(Xt, ft.numpy())
    digit_acc = RidgeClassifier(alpha=10.0).fit(X, d.numpy()).score(Xt, dt.numpy())
    assert font_acc > 0.75, font_acc
    assert digit_acc > 0.75, digit_acc


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(fonts.SPLIT_SIZES, "test", 40)
    x, d, f = fonts.font_digits("test")
    assert list((tmp_path / "fonts").glob("*.npz"))
    x2, d2, f2 = fonts.font_digits("test", limit=10)
    assert torch.equal(x[:10], x2) and np.array_equal(d[:10], d2) and np.array_equal(f[:10], f2)
    with pytest.raises(ValueError):
        fonts.font_digits("valid")
    with pytest.raises(ValueError):
        fonts.font_digits("test", limit=0)
