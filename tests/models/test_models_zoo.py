"""The AriaNN zoo: shapes, the weights cache, and the training helpers on real MNIST."""

from __future__ import annotations

import pytest
import torch

from veil.models import (
    ZOO,
    build,
    entry,
    evaluate,
    has_weights,
    load_weights,
    save_weights,
    train,
    train_zoo_model,
)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_output_shape(name: str) -> None:
    e = entry(name)
    model = build(name)
    with torch.no_grad():
        out = model(torch.zeros(1, *e.input_shape))
    assert out.shape == (1, e.num_classes)
    assert not model.training


def test_exact_parameter_counts() -> None:
    # Pinned so that the documented layer definitions cannot drift silently.
    counts = {n: sum(p.numel() for p in build(n).parameters()) for n in ZOO}
    assert counts == {"network1": 118_282, "network2": 33_542, "lenet": 431_080,
                      "alexnet": 3_882_058, "vgg16": 33_638_218, "resnet18": 11_689_512}


def test_unknown_model() -> None:
    with pytest.raises(KeyError, match="the zoo has"):
        build("lenet5000")


def test_weights_roundtrip(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VEIL_MODEL_DIR", str(tmp_path))
    assert not has_weights("network1")
    with pytest.raises(FileNotFoundError, match="veil models train network1"):
        load_weights("network1")
    model = build("network1")
    save_weights(model, "network1", {"test_accuracy": 0.5})
    loaded, meta = load_weights("network1")
    assert meta["test_accuracy"] == 0.5 and meta["model"] == "network1"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_weights_of_an_older_definition_count_as_missing(tmp_path, monkeypatch) -> None:
    import json

    monkeypatch.setenv("VEIL_MODEL_DIR", str(tmp_path))
    save_weights(build("network1"), "network1", {"test_accuracy": 0.5})
    meta_path = tmp_path / "network1.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"] = "0" * 16  # as if trained before the zoo changed a layer
    meta_path.write_text(json.dumps(meta))
    assert not has_weights("network1")
    with pytest.raises(FileNotFoundError, match="another definition"):
        load_weights("network1")


def test_training_learns_real_mnist(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VEIL_MODEL_DIR", str(tmp_path))
    torch.manual_seed(0)
    model, meta = train_zoo_model("network1", epochs=1, limit=3000, save=True)
    assert meta["train_images"] == 3000
    assert meta["test_accuracy"] > 0.85  # chance is 0.10
    assert has_weights("network1")


def test_train_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        train(build("network1"), torch.zeros(4, 1, 28, 28), torch.zeros(3).long(), epochs=1)


def test_evaluate_counts_correct() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert evaluate(model, x, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
