import math

import pytest
import torch

from veil.attacks import gradient_inversion as gi
from veil.audit.targets import build_model, load_dataset, pixel_range, to_unit
from veil.csprng import CSPRNG


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train", limit=16)


def _fc(hidden=32, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10, hidden=hidden)


def test_dlg_recovers_a_single_digit_from_an_untrained_fc_net(digits):
    x, y = digits
    model = _fc()
    update = gi.client_update(model, x[:1], y[:1])
    labels = gi.recover_labels(update, 1)
    assert labels.tolist() == y[:1].tolist()
    rec = gi.dlg(model, update, (1, 8, 8), labels=labels, iterations=150,
                 bounds=pixel_range("digits"))
    q = gi.image_quality(to_unit("digits", x[:1]), to_unit("digits", rec.images))
    assert q["psnr"] > 30 and q["ssim"] > 0.95


def test_inverting_gradients_recovers_a_single_digit(digits):
    x, y = digits
    model = _fc(seed=1)
    update = gi.client_update(model, x[3:4], y[3:4])
    rec = gi.inverting_gradients(model, update, (1, 8, 8), y[3:4], tv_weight=0.0,
                                 iterations=300, restarts=1, bounds=pixel_range("digits"))
    q = gi.image_quality(to_unit("digits", x[3:4]), to_unit("digits", rec.images))
    assert q["psnr"] > 30


def test_inverting_gradients_on_a_fedavg_update_of_a_conv_net(digits):
    x, y = digits
    torch.manual_seed(2)
    model = build_model("cnn", (1, 8, 8), 10, hidden=4)
    spec = gi.UpdateSpec("fedavg", local_steps=2, lr=0.1)
    update = gi.client_update(model, x[:1], y[:1], spec)
    rec = gi.inverting_gradients(model, update, (1, 8, 8), y[:1], spec, tv_weight=1e-4,
                                 iterations=250, restarts=1, bounds=pixel_range("digits"))
    noise = torch.zeros_like(rec.images) + pixel_range("digits")[0]
    q = gi.image_quality(to_unit("digits", x[:1]), to_unit("digits", rec.images))
    blank = gi.image_quality(to_unit("digits", x[:1]), to_unit("digits", noise))
    assert q["psnr"] > blank["psnr"] + 5


def test_fedavg_one_full_batch_step_is_lr_times_the_gradient(digits):
    x, y = digits
    model = _fc()
    g = gi.client_update(model, x[:4], y[:4])
    d = gi.client_update(model, x[:4], y[:4], gi.UpdateSpec("fedavg", local_steps=1, lr=0.3))
    for a, b in zip(g, d, strict=True):
        assert torch.allclose(0.3 * a, b, atol=1e-6)


def test_label_recovery_for_a_batch_of_distinct_labels(digits):
    x, y = digits
    model = _fc()
    pick = [int((y == c).nonzero()[0]) for c in torch.unique(y)[:4]]
    update = gi.client_update(model, x[pick], y[pick])
    assert gi.recover_labels(update, 4).tolist() == sorted(y[pick].tolist())


def test_label_recovery_fills_repeated_labels():
    w = torch.zeros(5, 3)
    w[1] = -3.0
    w[3] = -1.0
    labels = gi.recover_labels([w, torch.zeros(5)], 4)
    assert labels.tolist() == [1, 1, 1, 3]
    with pytest.raises(ValueError):
        gi.recover_labels([w, torch.zeros(5)], 0)
    with pytest.raises(ValueError, match="linear weight"):
        gi.recover_labels([torch.zeros(5)], 1, weight_index=0)


def test_image_quality_identical_and_permuted():
    a = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    q = gi.image_quality(a, a[[2, 0, 1]])
    assert math.isinf(q["psnr"]) and q["ssim"] == pytest.approx(1.0)
    assert q["pairing"] == [1, 2, 0]
    noisy = (a + 0.1).clamp(0, 1)
    assert 10 < gi.image_quality(a, noisy)["psnr"] < 40
    with pytest.raises(ValueError):
        gi.image_quality(a, torch.rand(3, 1, 4, 4))


def test_dp_noise_clips_and_uses_the_csprng():
    update = [torch.full((100,), 1.0), torch.full((50,), 1.0)]
    clipped = gi.dp_noise(update, clip=2.0, noise_multiplier=0.0)
    assert float(torch.sqrt(sum((u ** 2).sum() for u in clipped))) == pytest.approx(2.0)
    a = gi.dp_noise(update, 1.0, 0.5, CSPRNG(seed=b"k" * 16))
    b = gi.dp_noise(update, 1.0, 0.5, CSPRNG(seed=b"k" * 16))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    big = gi.dp_noise([torch.zeros(20000)], 1.0, 0.5)
    assert float(big[0].std()) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError):
        gi.dp_noise(update, clip=0.0, noise_multiplier=1.0)


def test_aggregate_is_the_mean():
    u1, u2 = [torch.ones(3), torch.zeros(2)], [torch.full((3,), 3.0), torch.ones(2)]
    agg = gi.aggregate([u1, u2])
    assert torch.equal(agg[0], torch.full((3,), 2.0)) and torch.equal(agg[1], torch.full((2,), 0.5))
    with pytest.raises(ValueError):
        gi.aggregate([])


def test_bad_updates_are_rejected(digits):
    x, y = digits
    model = _fc()
    update = gi.client_update(model, x[:1], y[:1])
    with pytest.raises(ValueError, match="match"):
        gi.dlg(model, update[:-1], (1, 8, 8), labels=y[:1], iterations=1)
    update[0][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        gi.inverting_gradients(model, update, (1, 8, 8), y[:1], iterations=1)
    with pytest.raises(ValueError):
        gi.client_update(model, x[:2], y[:1])
    with pytest.raises(ValueError):
        gi.UpdateSpec("fedprox")


def test_label_recovery_finds_the_last_weight_without_bias(digits):
    x, y = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10, bias=False))
    update = gi.client_update(model, x[:1], y[:1])
    assert update[-1].dim() == 2
    assert gi.recover_labels(update, 1).tolist() == y[:1].tolist()
