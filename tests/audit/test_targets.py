import numpy as np
import pytest
import torch

from veil.audit.targets import (
    Recipe,
    accuracy,
    build_model,
    load_dataset,
    pixel_range,
    to_unit,
    train,
    train_fn,
)


def test_digits_dataset_and_pixel_range():
    x, y = load_dataset("digits", "train")
    xt, _ = load_dataset("digits", "test", limit=10)
    assert x.shape[1:] == (1, 8, 8) and len(x) + 540 == 1797 and len(xt) == 10
    lo, hi = pixel_range("digits")
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
    u = to_unit("digits", x)
    assert u.min() >= 0 and u.max() <= 1 and torch.allclose(u, x * 0.4 + 0.3)
    with pytest.raises(ValueError):
        load_dataset("imagenet")


def test_train_fn_trains_fresh_models_on_the_given_indices():
    x, y = load_dataset("digits", "train", limit=300)
    fit = train_fn(Recipe(arch="linear", epochs=20, lr=1e-2), x, y, num_classes=10, seed=0)
    a, b = fit(np.arange(150)), fit(np.arange(150))
    assert not torch.equal(a.net[-1].weight, b.net[-1].weight)       # a fresh seed per call
    assert accuracy(a, x[:150], y[:150]) > 0.9
    again = train_fn(Recipe(arch="linear", epochs=20, lr=1e-2), x, y, 10, seed=0)(np.arange(150))
    assert torch.equal(a.net[-1].weight, again.net[-1].weight)       # reproducible


@pytest.mark.parametrize("arch", ["mlp", "linear", "cnn"])
def test_architectures(arch):
    m = build_model(arch, (3, 9, 7), 5, hidden=4)
    assert m(torch.zeros(2, 3, 9, 7)).shape == (2, 5)


def test_bad_recipes():
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="optimizer"):
        train(Recipe(optimizer="lion", epochs=1), x, y, 2)
    with pytest.raises(ValueError, match="architecture"):
        build_model("transformer", (1, 2, 2), 2)
    with pytest.raises(ValueError, match="non-empty"):
        train(Recipe(epochs=1), x[:0], y[:0], 2)


def test_dp_recipe_trains_through_veil_dp():
    from veil.audit.dp_training import calibrate, epsilon_for
    x, y = load_dataset("digits", "train", limit=200)
    r = calibrate(Recipe(arch="linear", epochs=2, batch_size=20, lr=0.5, optimizer="sgd",
                         dp_noise=1.0), 200, epsilon=4.0)
    assert epsilon_for(r, 200)["epsilon"] == pytest.approx(4.0, rel=0.05)
    model = train(r, x, y, 10, seed=0)
    assert not hasattr(model, "_module") and model(x[:3]).shape == (3, 10)
