"""The collateral study machinery on a tiny font-digits sample (the full study is a benchmark)."""

from __future__ import annotations

import numpy as np
import pytest

from veil.data import fonts
from veil.fe import collateral as C
from veil.fe.quadnet import quantise_pixels


def test_distinguishers_separate_separable_and_not_noise():
    rng = np.random.default_rng(0)  # not-secret: test data
    y = np.repeat([0, 1], 60)
    separable = rng.normal(size=(120, 3)) + 3.0 * y[:, None]
    noise = rng.normal(size=(120, 3))
    good = C.distinguishers(separable, y, folds=3)
    bad = C.distinguishers(noise, y, folds=3)
    assert set(good) == set(C.DISTINGUISHERS) and len(good) == 10
    assert min(good.values()) > 0.9
    assert max(bad.values()) < 0.75
    with pytest.raises(ValueError):
        C.distinguishers(noise[:, 0], y)


@pytest.fixture(scope="module")
def tiny_data():
    x, d, f = fonts.generate("train", size=800, seed=11)
    xt, dt, ft = fonts.generate("test", size=300, seed=12)
    return C._Data(quantise_pixels(x, 3).float(), d, f, quantise_pixels(xt, 3).float(), dt, ft)


def test_run_study_report(tiny_data, monkeypatch, tmp_path):
    cfg = C.CollateralConfig(train_size=800, test_size=300, outputs=(4, 3), epochs=2,
                             adv_epochs=2, semi_rounds=1, distinguisher_samples=60, cv_folds=3)
    monkeypatch.setattr(C, "load_data", lambda cfg: tiny_data)
    steps = []
    report = C.run_study(cfg, lambda msg, w: steps.append(msg))
    names = [s["setting"] for s in report["settings"]]
    assert names == ["L=4", "L=3", "L=3 + semi-adversarial"]
    for s in report["settings"]:
        assert 0.0 <= s["collateral_accuracy"] <= 1.0 and s["main_accuracy"] > 0.2
        assert len(s["distinguishers"]) == 10 and s["distinguisher_samples"] == 60
    assert 0.0 <= report["direct_font_accuracy"] <= 1.0  # separability: tests/data/test_fonts.py
    assert any("semi-adversarial round" in m for m in steps)
    C.plot_report(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_bad_adversarial_loss(tiny_data):
    import torch

    cfg = C.CollateralConfig(adversarial_loss="bogus")
    with pytest.raises(ValueError, match="adversarial_loss"):
        C.semi_adversarial(tiny_data, 3, cfg, torch.Generator())
