"""PrivacyEngine / DPOptimizer / Poisson sampling / virtual batches / validators."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veil.csprng import CSPRNG
from veil.dp import (
    PoissonBatchSampler,
    PrivacyEngine,
    UnsupportedModuleError,
    epsilon_for,
    fix_batchnorm,
    poisson_loader,
    validate,
    virtual_batches,
)
from veil.dp.training import train_dp_sgd


def _data(n=200, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _clipped_mean_step(model, x, y, clip, lr, expected):
    """Reference: per-sample grads by loop, clip, sum, divide by expected batch size."""
    per = []
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        per.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    out = []
    for j, p in enumerate(model.parameters()):
        total = torch.zeros_like(p)
        for g in per:
            norm = math.sqrt(sum(float(t.pow(2).sum()) for t in g))
            total += g[j] * min(1.0, clip / (norm + 1e-6))
        out.append(p.detach() - lr * total / expected)
    return out


def test_noise_free_step_is_clipped_mean_and_accountant_counts_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = _data()[:16]
    expected = _clipped_mean_step(model, x, y, clip=0.3, lr=0.5, expected=10)
    engine = PrivacyEngine()
    dp_model, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        data_loader=DataLoader(_data(), batch_size=10), noise_multiplier=1e-12,
        max_grad_norm=0.3)
    assert opt.expected_batch_size == 10
    opt.zero_grad()
    nn.functional.cross_entropy(dp_model(x), y).backward()
    opt.step()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, atol=1e-5, rtol=1e-4)
    assert engine.accountant.steps == 1 and engine.sample_rate == pytest.approx(10 / 200)


def test_noise_has_the_right_scale():
    model = nn.Linear(100, 50, bias=False)
    nn.init.zeros_(model.weight)
    engine = PrivacyEngine()
    sigma, clip, batch = 1.3, 0.7, 20
    dp_model, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=DataLoader(_data(200, 100), batch_size=batch), noise_multiplier=sigma,
        max_grad_norm=clip)
    opt.zero_grad()
    dp_model(torch.zeros(batch, 100)).sum().backward()  # zero input: zero gradients
    opt.step()
    g = model.weight.grad.flatten()
    assert float(g.mean()) == pytest.approx(0.0, abs=4 * sigma * clip / batch / 70)
    assert float(g.std()) == pytest.approx(sigma * clip / batch, rel=0.05)


def test_virtual_batches_equal_one_big_batch():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    results = []
    for physical in (None, 7):
        model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
        model.load_state_dict(base.state_dict())
        engine = PrivacyEngine()
        ds = _data(60)
        dp_model, opt, _ = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
            data_loader=DataLoader(ds, batch_size=30), noise_multiplier=1e-12,
            max_grad_norm=0.5)
        fixed = [ds[:30]]  # one logical batch of 30, deterministic
        loader = virtual_batches(fixed, opt, physical) if physical else fixed
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(dp_model(xb), yb).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
        assert engine.accountant.steps == 1
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_poisson_sampling_rate_and_empty_batches():
    s = PoissonBatchSampler(num_samples=2000, sample_rate=0.05, steps=200,
                            generator=CSPRNG(b"k" * 16))
    sizes = torch.tensor([len(b) for b in s], dtype=torch.float64)
    assert float(sizes.mean()) == pytest.approx(100, rel=0.03)
    assert float(sizes.var()) == pytest.approx(2000 * 0.05 * 0.95, rel=0.25)
    # an empty batch still yields correctly shaped tensors and a noisy step
    ds = _data(50)
    loader = poisson_loader(ds, batch_size=1)
    empty = loader.collate_fn([])
    assert empty[0].shape == (0, 5) and empty[1].dtype == torch.long
    model = nn.Linear(5, 2)
    engine = PrivacyEngine()
    dp_model, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(ds, batch_size=5), noise_multiplier=1.0, max_grad_norm=1.0)
    before = model.weight.detach().clone()
    opt.zero_grad()
    dp_model(empty[0]).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight) and engine.accountant.steps == 1


def test_batchnorm_is_refused_and_fixed():
    model = nn.Sequential(nn.Conv2d(1, 12, 3), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    with pytest.raises(UnsupportedModuleError, match="GroupNorm"):
        PrivacyEngine().make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(_data(), batch_size=10), noise_multiplier=1.0,
            max_grad_norm=1.0)
    fixed = fix_batchnorm(model)
    validate(fixed)
    assert isinstance(fixed[1], nn.GroupNorm) and fixed[1].num_groups == 4
    assert isinstance(fixed[3][1], nn.GroupNorm)


def test_make_private_with_epsilon_spends_at_most_the_target():
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    res = train_dp_sgd(model, _data(400), _data(200, seed=1), epochs=2, batch_size=40,
                       delta=1e-5, max_grad_norm=1.0, lr=0.5, target_epsilon=2.0,
                       accountant="rdp", progress=False)
    assert res.steps == 20
    assert 1.9 <= res.epsilon <= 2.0
    assert res.epsilon == pytest.approx(
        epsilon_for(res.noise_multiplier, 0.1, 20, 1e-5, "rdp"), rel=1e-9)
    assert res.epochs[0].epsilon < res.epochs[1].epsilon
    assert res.epochs[-1].test_accuracy > 0.8  # learnable task, learnt despite the noise


def test_optimizer_refuses_bad_settings():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError):
        PrivacyEngine().make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(_data(20, 2), batch_size=5), noise_multiplier=1.0,
            max_grad_norm=0.0)
    with pytest.raises(ValueError):
        poisson_loader(_data(20, 2), batch_size=50)


def test_lr_schedulers_accept_the_dp_optimizer():
    model = nn.Linear(5, 2)
    engine = PrivacyEngine()
    dp_model, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.4),
        data_loader=DataLoader(_data(40), batch_size=10), noise_multiplier=1.0,
        max_grad_norm=1.0)
    assert isinstance(opt, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for x, y in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(dp_model(x), y).backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert opt.original_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def _loop_clipped_sum(model, xs, ys, clip):
    """Σ over every example (of all batches) of its own clipped gradient, by a loop."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    for x, y in zip(xs, ys, strict=True):
        for i in range(len(x)):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            g = [p.grad.clone() for p in model.parameters()]
            norm = math.sqrt(sum(float(t.pow(2).sum()) for t in g))
            for t, gi in zip(total, g, strict=True):
                t += gi * min(1.0, clip / (norm + 1e-6))
    model.zero_grad(set_to_none=True)
    return total


def test_gradient_accumulation_clips_every_example_on_its_own():
    # Two forward/backward passes before step(): example i of the first batch must not
    # be added to example i of the second before clipping (one clipped unit = one person).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    data = _data(40)
    xs, ys = [data[:8][0], data[8:16][0]], [data[:8][1], data[8:16][1]]
    ref = _loop_clipped_sum(model, xs, ys, clip=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    engine = PrivacyEngine()
    dp_model, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=DataLoader(data, batch_size=8), noise_multiplier=0.0, max_grad_norm=0.05)
    opt.zero_grad()
    for x, y in zip(xs, ys, strict=True):
        nn.functional.cross_entropy(dp_model(x), y).backward()
    per = dp_model.per_sample_gradients()
    assert per["0.weight"].shape[0] == 16  # concatenated along the batch, as in Opacus
    opt.step()
    for p, b, r in zip(model.parameters(), before, ref, strict=True):
        torch.testing.assert_close(b - p.detach(), r / 8, atol=1e-6, rtol=1e-5)
    assert opt.last_stats["batch"] == 16


def test_eval_mode_training_is_refused_before_any_budget_is_spent():
    model = nn.Sequential(nn.Linear(5, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    engine = PrivacyEngine()
    dp_model, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(_data(), batch_size=20), noise_multiplier=1.0,
        max_grad_norm=1.0)
    dp_model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _data()[:20]
    opt.zero_grad()
    nn.functional.cross_entropy(dp_model(x), y).backward()
    with pytest.raises(RuntimeError, match="eval"):
        opt.step()
    assert engine.accountant.steps == 0
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    dp_model.train()  # and back in train mode it works
    opt.zero_grad()
    nn.functional.cross_entropy(dp_model(x), y).backward()
    opt.step()
    assert engine.accountant.steps == 1


@pytest.mark.parametrize("kwargs", [
    dict(noise_multiplier=float("nan")), dict(noise_multiplier=float("inf")),
    dict(noise_multiplier=-1.0), dict(max_grad_norm=float("inf")),
    dict(max_grad_norm=float("nan")), dict(batch_size=201)])
def test_make_private_validates_up_front(kwargs):
    model = nn.Linear(5, 2)
    args = dict(noise_multiplier=1.0, max_grad_norm=1.0, batch_size=20) | kwargs
    loader = DataLoader(_data(), batch_size=args.pop("batch_size"))
    engine = PrivacyEngine()
    with pytest.raises(ValueError):
        engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                            data_loader=loader, **args)
    assert engine.accountant.steps == 0


def test_a_parameter_used_outside_its_layer_is_refused():
    class Reuse(nn.Module):  # reads the Linear's weight directly: no rule sees that use
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 5)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.lin(x) @ self.lin.weight)

    model = Reuse()
    engine = PrivacyEngine()
    dp_model, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(_data(), batch_size=20), noise_multiplier=1.0,
        max_grad_norm=1.0)
    x, y = _data()[:20]
    opt.zero_grad()
    nn.functional.cross_entropy(dp_model(x), y).backward()
    with pytest.raises(RuntimeError, match="lin.weight"):
        opt.step()
    assert engine.accountant.steps == 0
