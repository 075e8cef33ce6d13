"""Opacus 1.6 drop-in: tutorial-style scripts run with only the import changed, and the
Opacus API pieces (accountants, checkpoints, per-layer/adaptive clipping, grad_sample)."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veil.dp import DPDataLoader, PrivacyEngine, get_noise_multiplier
from veil.dp.accountants import make_accountant

SCRIPTS = Path(__file__).parent / "opacus_scripts"


def _run(script: str, package: str = "veil.dp") -> dict:
    text = (SCRIPTS / script).read_text()
    assert "from opacus" in text
    lines = [ln.replace("from opacus", f"from {package}") if ln.startswith("from opacus")
             else ln for ln in text.splitlines()]
    ns: dict = {"__name__": "opacus_script"}
    exec(compile("\n".join(lines), str(SCRIPTS / script), "exec"), ns)  # noqa: S102
    return ns["main"]()


def test_mnist_tutorial_runs_with_only_the_import_changed():
    out = _run("mnist_make_private.py")
    acc = make_accountant("rdp")
    acc.step(noise_multiplier=1.0, sample_rate=64 / 384, steps=out["steps"])
    assert out["sample_rate"] == pytest.approx(64 / 384)
    assert out["epsilon"] == pytest.approx(acc.get_epsilon(1e-5))
    assert out["mechanism"] == "rdp" and out["grad_sample_seen"]
    assert out["accuracy"] > 0.6  # learnt something (chance 0.5) despite the noise


def test_cifar10_tutorial_runs_with_only_the_import_changed():
    out = _run("cifar10_fix_bmm_epsilon.py")
    assert out["errors"] == 1 and out["fixed_errors"] == 0  # the BatchNorms, then none
    assert out["sample_rate"] == pytest.approx(0.25)
    assert 45.0 <= out["epsilon"] <= 50.0  # calibrated to the target, never above it


def _setup(n=64, **engine_kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    data = TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))
    return model, data, PrivacyEngine(**engine_kwargs)


@pytest.mark.parametrize("name", ["rdp", "gdp", "prv", "pld"])
def test_accountants_by_opacus_name(name):
    model, data, engine = _setup(accountant=name)
    m, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0, max_grad_norm=1.0)
    assert isinstance(loader, DPDataLoader) and loader.sample_rate == 0.25
    for x, y in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert engine.accountant.mechanism() == name
    eps, _ = engine.accountant.get_privacy_spent(delta=1e-5)
    assert eps == engine.get_epsilon(1e-5) and 0 < eps < math.inf


def test_gdp_matches_opacus_formula():
    acc = make_accountant("gdp")
    acc.step(noise_multiplier=1.1, sample_rate=256 / 60000, steps=2340)
    mu = math.sqrt(math.exp(1.1**-2) - 1) * math.sqrt(2340) * 256 / 60000
    from scipy.stats import norm
    eps = acc.get_epsilon(1e-5)
    assert norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) == \
        pytest.approx(1e-5, rel=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model, data, engine = _setup()
    m, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0, max_grad_norm=1.0)
    for x, y in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    engine.save_checkpoint(path=tmp_path / "ck.pt", module=m, optimizer=opt,
                           checkpoint_dict={"epoch": 3})
    model2, _, engine2 = _setup()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    rest = engine2.load_checkpoint(path=tmp_path / "ck.pt", module=model2, optimizer=opt2)
    assert rest == {"epoch": 3}
    assert engine2.get_epsilon(1e-5) == engine.get_epsilon(1e-5)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_per_layer_clipping_bounds_each_parameter():
    model, data, engine = _setup()
    bounds = [0.1, 0.2, 0.3, 0.4]
    m, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=DataLoader(data, batch_size=16), noise_multiplier=0.0,
        max_grad_norm=bounds, clipping="per_layer")
    assert opt.max_grad_norm == pytest.approx(math.sqrt(sum(c * c for c in bounds)))
    x, y = data[:16]
    opt.zero_grad()
    nn.functional.cross_entropy(m(x), y).backward()
    per = {p: p.grad_sample.clone() for p in model.parameters()}
    want = {}
    for p, c in zip(model.parameters(), bounds, strict=True):
        g = per[p]
        f = (c / (g.flatten(1).norm(dim=1) + 1e-6)).clamp(max=1)
        want[p] = torch.einsum("b,b...->...", f, g) / 16
    before = {p: p.detach().clone() for p in model.parameters()}
    opt.step()
    for p in model.parameters():
        torch.testing.assert_close(before[p] - p.detach(), want[p], atol=1e-6, rtol=1e-5)


def test_adaptive_clipping_moves_the_bound_and_accounts_sigma():
    model, data, engine = _setup(n=256)
    m, opt, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=64), noise_multiplier=1.0,
        max_grad_norm=100.0, clipping="adaptive", target_unclipped_quantile=0.5,
        clipbound_learning_rate=0.5, unclipped_num_std=4.0)
    for x, y in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert opt.max_grad_norm < 100.0  # every example unclipped: the bound shrinks
    assert engine.accountant.history[0][0] == 1.0
    with pytest.raises(ValueError, match="unclipped_num_std"):
        engine.make_private(module=nn.Linear(4, 2),
                            optimizer=torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1),
                            data_loader=DataLoader(data, batch_size=64), noise_multiplier=9.0,
                            max_grad_norm=1.0, clipping="adaptive", unclipped_num_std=4.0)


def test_ghost_mode_returns_the_criterion_and_other_options():
    model, data, engine = _setup(secure_mode=True)
    crit = nn.CrossEntropyLoss()
    out = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0, max_grad_norm=1.0,
        criterion=crit, grad_sample_mode="ghost", batch_first=True)
    assert len(out) == 4 and out[2] is crit
    with pytest.raises(ValueError, match="secure_mode"):
        engine.make_private(module=nn.Linear(4, 2),
                            optimizer=torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1),
                            data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0,
                            max_grad_norm=1.0, noise_generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="grad_sample_mode"):
        engine.make_private(module=nn.Linear(4, 2),
                            optimizer=torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1),
                            data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0,
                            max_grad_norm=1.0, grad_sample_mode="magic")


def test_seeded_noise_generator_reproduces_runs():
    results = []
    for _ in range(2):
        model, data, engine = _setup()
        m, opt, _ = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0,
            max_grad_norm=1.0, noise_generator=torch.Generator().manual_seed(7))
        x, y = data[:16]
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_is_compatible_and_get_noise_multiplier():
    engine = PrivacyEngine()
    assert engine.is_compatible(module=nn.Linear(2, 2))
    assert not engine.is_compatible(module=nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    s = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.01, epochs=5)
    acc = make_accountant("rdp")
    acc.step(noise_multiplier=s, sample_rate=0.01, steps=500)
    assert 1.98 <= acc.get_epsilon(1e-5) <= 2.0


@pytest.mark.parametrize("script", ["mnist_make_private.py", "cifar10_fix_bmm_epsilon.py"])
def test_the_same_scripts_run_on_opacus_when_installed(script):
    pytest.importorskip("opacus")
    out = _run(script, package="opacus")
    assert math.isfinite(out["epsilon"])
