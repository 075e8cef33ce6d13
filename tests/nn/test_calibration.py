"""Per-layer bounds for k-bit comparisons: calibration, secure inference on them, violations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veil.nn import convert
from veil.nn.calibration import BoundViolationError, calibrate, check
from veil.nn.inference import secure_inference
from veil.nn.twin import twin_forward

TWIN_ATOL = 2e-3


def _net() -> nn.Module:
    torch.manual_seed(0)  # not-secret: test weights
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3 * 3 * 3, 4), nn.ReLU())


def _data(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) * scale


def test_calibrated_graph_runs_exactly_on_narrow_lean_gates() -> None:
    graph = calibrate(convert(_net(), (1, 6, 6)), _data(64, 1))
    narrow = [(l.op, l.params["bits"], l.params["lean"]) for l in graph.layers
              if "bits" in l.params]
    # (the converter moves the pool before the first ReLU)
    assert sorted(narrow) == [("maxpool2d", 32, True), ("relu", 32, True), ("relu", 32, True)]
    x = _data(3, 2)
    assert check(graph, x) == {}
    out, report = secure_inference(graph, x)
    assert (out - twin_forward(graph, x)).abs().max() < TWIN_ATOL
    plain, plain_report = secure_inference(convert(_net(), (1, 6, 6)), x)
    assert (out - plain).abs().max() < TWIN_ATOL
    assert report.offline_bytes < plain_report.offline_bytes / 2


def test_bounds_user_override_margin_and_fallback_to_64_bits() -> None:
    graph = convert(_net(), (1, 6, 6))
    names = [l.name for l in graph.layers if l.op == "relu"]
    g = calibrate(graph, _data(16, 3), bounds={names[0]: 2.0**20}, lean=False)
    first = g.layer(names[0]).params
    assert first["bound"] == 2.0**20 and first["bits"] == 64 and not first["lean"]
    assert g.layer(names[1]).params["bits"] == 32
    with pytest.raises(ValueError, match="not comparison layers"):
        calibrate(graph, _data(4, 3), bounds={"nope": 1.0})
    with pytest.raises(ValueError, match="margin"):
        calibrate(graph, _data(4, 3), margin=0.5)


def test_violations_are_detected() -> None:
    graph = calibrate(convert(_net(), (1, 6, 6)), _data(32, 4), margin=1.0)
    big = _data(2, 5, scale=1e5)  # far beyond the calibrated magnitudes and the 32-bit range
    assert check(graph, big)  # the plaintext check names the layers
    guarded = calibrate(convert(_net(), (1, 6, 6)), _data(32, 4), margin=1.0, guard=True)
    with pytest.raises(Exception) as info:
        secure_inference(guarded, big)
    assert "BoundViolationError" in repr(info.value) or isinstance(info.value,
                                                                   BoundViolationError)
    out, _ = secure_inference(guarded, _data(2, 6))  # within the bound: no error
    assert (out - twin_forward(guarded, _data(2, 6))).abs().max() < TWIN_ATOL
