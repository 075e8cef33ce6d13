import numpy as np
import pytest
import torch

from veil.attacks.inversion import invert_class, invert_class_blackbox, similarity_to_mean
from veil.audit.targets import Recipe, load_dataset, pixel_range, to_unit, train


class ScoresOnly:
    """A remote API: ``api(x) -> numpy probabilities``; no model, no gradients, nothing else."""

    __slots__ = ("_f", "calls")

    def __init__(self, f):
        self._f = f
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        with torch.no_grad():
            return self._f(torch.as_tensor(x).detach()).numpy()


@pytest.fixture(scope="module")
def model():
    x, y = load_dataset("digits", "train")
    return train(Recipe(arch="linear", epochs=30, lr=1e-2, seed=0), x, y, 10), x, y


def _api(model, decimals=None):
    def f(x):
        p = torch.softmax(model(x.float()), 1).double()
        return torch.round(p, decimals=decimals) if decimals is not None else p
    return ScoresOnly(f)


def test_white_box_inversion_is_recognised(model):
    net, x, y = model
    for c in (0, 4, 7):
        r = invert_class(net, c, (1, 8, 8), bounds=pixel_range("digits"), max_iter=300)
        assert r.predicted == c and r.confidence > 0.9


def test_black_box_inversion_uses_scores_only_and_resembles_the_class(model):
    net, x, y = model
    api = _api(net)
    means = [to_unit("digits", x[y == c].mean(0, keepdim=True))[0] for c in range(10)]
    hits = 0
    for c in (0, 3, 6):
        r = invert_class_blackbox(api, c, (1, 8, 8), bounds=pixel_range("digits"),
                                  max_iter=200, directions=20, seed=c)
        assert r.predicted == c and r.confidence > 0.9
        img = to_unit("digits", r.image[None])[0]
        own = similarity_to_mean(img, means[c])["correlation"]
        others = [similarity_to_mean(img, means[o])["correlation"] for o in range(10) if o != c]
        hits += own > max(others)
    assert hits >= 2
    assert api.calls > 0 and r.queries == r.iterations * 41 + 1


def test_rounding_defeats_the_black_box_attack(model):
    net, _, _ = model
    blank = torch.full((1, 1, 8, 8), pixel_range("digits")[0])
    with torch.no_grad():
        start = torch.softmax(net(blank), 1)[0]
    c = int(start.argmin())              # a class with ~zero confidence at the start
    assert start[c] < 0.05
    r = invert_class_blackbox(_api(net, decimals=1), c, (1, 8, 8), bounds=pixel_range("digits"),
                              max_iter=100, directions=20, patience=30)
    assert r.confidence < 0.5 and r.predicted != c


def test_similarity_to_mean():
    a = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    s = similarity_to_mean(a, a)
    assert s["correlation"] == pytest.approx(1) and s["ssim"] == pytest.approx(1) and s["mse"] == 0
    assert similarity_to_mean(a, 1 - a)["correlation"] == pytest.approx(-1)
    with pytest.raises(ValueError):
        similarity_to_mean(a, torch.rand(1, 4, 4))
    assert np.isfinite(similarity_to_mean(torch.zeros(1, 8, 8), a)["ssim"])
