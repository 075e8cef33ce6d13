"""The main job: a trained LeNet, privately, on real MNIST test images."""

from __future__ import annotations

import pytest
import torch

from veil.models import has_weights, load_weights, train_zoo_model
from veil.models.training import dataset
from veil.nn import convert
from veil.nn.inference import secure_inference
from veil.nn.twin import twin_forward


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    """The cached LeNet, or one trained here (one epoch on 12,000 images) when none is cached."""
    if has_weights("lenet"):
        return load_weights("lenet")[0]
    torch.manual_seed(0)  # weight init: not secret
    model, meta = train_zoo_model("lenet", epochs=1, limit=12_000, save=False)
    assert meta["test_accuracy"] > 0.95
    return model


def test_private_lenet_agrees_with_plaintext_on_real_mnist(lenet) -> None:
    # Secure LeNet costs ~0.2 M FSS comparisons per 8 images, so the suite runs a small
    # batch securely (it must equal the fixed-point twin) and checks the twin's agreement
    # with float PyTorch on 1,000 images; the benchmark runs 128 images securely.
    x, y = dataset("lenet", "test", limit=1000)
    with torch.no_grad():
        plain = lenet(x)
    graph = convert(lenet, (1, 28, 28))
    twin = twin_forward(graph, x)
    assert (twin.argmax(1) == plain.argmax(1)).float().mean() >= 0.995
    n = 8
    logits, report = secure_inference(lenet, x[:n], transport="local")
    assert (logits - twin[:n]).abs().max() < 2e-3
    assert (logits.argmax(1) == plain[:n].argmax(1)).float().mean() >= 0.995
    assert (logits.argmax(1) == y[:n]).float().mean() >= 0.9
    assert (logits - plain[:n].double()).abs().max() < 0.05
    assert report.dealer_key_bytes > 0 and report.online_rounds > 0


@pytest.mark.tcp
def test_demo_runs_three_processes_over_tcp(lenet, monkeypatch) -> None:
    from veil.demos import lenet as demo

    monkeypatch.setattr("veil.models.has_weights", lambda name: True)
    monkeypatch.setattr("veil.models.load_weights",
                        lambda name: (lenet, {"test_accuracy": 0.99}))
    result = demo.run_lenet_demo(images=4, transport="tcp", quiet=True)
    assert result["images"] == 4 and result["transport"] == "tcp"
    assert result["agreement"] == 1.0
    assert result["online_rounds"] > 0 and result["offline_bytes"] > 0


def test_demo_rejects_empty_batch() -> None:
    from veil.demos.lenet import run_lenet_demo

    with pytest.raises(ValueError, match="at least 1"):
        run_lenet_demo(images=0, quiet=True)
