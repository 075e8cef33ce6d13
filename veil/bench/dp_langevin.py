"""DP-SGLD with hidden-state accounting against DP-SGD (RDP and PLD) and non-private
training, on real MNIST, as in Ryffel, Bach & Pointcheval (2022).

Setting: a CNN is trained (non-privately) on the first half of the MNIST training set
and frozen; its 32-dimensional penultimate features, scaled to unit L2 norm, feed an
L2-regularised multinomial logistic regression trained *privately* on the other half
(n = 30,000). Test accuracy on the 10k test set at ε = 1 and 3 (δ = 1e-5) for

- DP-SGLD (``veil.dp.sgld.DPLogisticRegression``): σ calibrated with the hidden-state
  bound, K counted in updates;
- DP-SGD (``veil.dp.PrivacyEngine``) on the same linear model, σ calibrated with RDP and
  with PLD for the same number of epochs;
- non-private training of the same model (upper reference).

It also plots ε against the number of updates for both accountings at the ε = 1
settings (DP-SGD's composition keeps growing; the hidden-state bound saturates), plus
the hidden-state curve with K counted in epochs (what the published experiments appear
to do). Hyper-parameters are fixed in advance (not tuned on the test set).

Run: ``veil bench dp-langevin [--json] [--output F] [--quick]`` or
``python bench/dp_langevin.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veil.bench.output import publish

DEFAULT_OUTPUT = Path("bench/results/dp_langevin.json")
DELTA = 1e-5
EPSILONS = (1.0, 3.0)
BATCH = 256
EPOCHS = 10
L2 = 0.003  # λ for DP-SGLD and the non-private reference
SGD_LR, SGD_CLIP = 2.0, 1.0


def _model_dir() -> Path:
    env = os.environ.get("VEIL_MODEL_DIR")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "veil" / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _feature_net(x_pub: torch.Tensor, y_pub: torch.Tensor, quick: bool) -> nn.Module:
    """The mnist_cnn trained on the public half (cached), cut before its last layer."""
    from veil.dp.models import mnist_cnn

    torch.manual_seed(0)
    net = mnist_cnn()
    path = _model_dir() / f"dp_langevin_features{'_quick' if quick else ''}.pt"
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        for _ in range(1 if quick else 3):
            for xb, yb in DataLoader(TensorDataset(x_pub, y_pub), batch_size=128,
                                     shuffle=True, generator=gen):
                opt.zero_grad()
                nn.functional.cross_entropy(net(xb), yb).backward()
                opt.step()
        tmp = path.with_suffix(".tmp")
        torch.save(net.state_dict(), tmp)
        tmp.replace(path)
    net.eval()
    return net[:-1]  # up to the 32-unit ReLU


@torch.no_grad()
def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = torch.cat([net(x[i:i + 2000]) for i in range(0, len(x), 2000)])
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ w.t()).argmax(1) == y).float().mean())


def _non_private(x, y, xt, yt) -> dict[str, Any]:
    w = torch.zeros(10, x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(x @ w.t(), y) + L2 / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return dict(method="non-private", accountant="-", target_epsilon=None, epsilon=None,
                test_accuracy=_accuracy(w.detach(), xt, yt), noise=0.0, steps=None)


def _dp_sgld(x, y, xt, yt, eps: float, steps: int) -> dict[str, Any]:
    from veil.dp.sgld import DPLogisticRegression

    clf = DPLogisticRegression(10, l2=L2, epsilon=eps, delta=DELTA)
    clf.fit(x.numpy(), y.numpy(), steps=steps, batch_size=BATCH)
    return dict(method="DP-SGLD", accountant="hidden state", target_epsilon=eps,
                epsilon=clf.epsilon_spent(DELTA), test_accuracy=clf.score(xt.numpy(),
                                                                          yt.numpy()),
                noise=clf.sigma, steps=steps, lr=clf.lr, lipschitz=clf.lipschitz,
                smoothness=clf.smoothness)


def _dp_sgd(x, y, xt, yt, eps: float, accountant: str, epochs: int) -> dict[str, Any]:
    from veil.dp import PrivacyEngine
    from veil.dp.models import linear_probe

    torch.manual_seed(0)
    model = linear_probe(x.shape[1])
    nn.init.zeros_(model[1].weight)
    engine = PrivacyEngine(accountant=accountant)
    dp_model, opt, loader = engine.make_private_with_epsilon(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=SGD_LR),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=BATCH), target_epsilon=eps,
        target_delta=DELTA, epochs=epochs, max_grad_norm=SGD_CLIP)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            out = dp_model(xb)
            (nn.functional.cross_entropy(out, yb) if len(yb) else out.sum() * 0).backward()
            opt.step()
    return dict(method="DP-SGD", accountant=accountant.upper(), target_epsilon=eps,
                epsilon=engine.get_epsilon(DELTA),
                test_accuracy=_accuracy(model[1].weight.detach(), xt, yt),
                noise=opt.noise_multiplier, steps=engine.accountant.steps)


def _curves(n: int, sgd_sigma: float, sgld_row: dict, max_updates: int) -> dict[str, Any]:
    from veil.dp import epsilon_for
    from veil.dp.sgld import sgld_epsilon

    q = BATCH / n
    ks = np.unique(np.geomspace(1, max_updates, 40).astype(int))
    ks_pld = ks[:: max(1, len(ks) // 12)]
    per_epoch = max(1, round(n / BATCH))
    hs = dict(lipschitz=sgld_row["lipschitz"], strong_convexity=L2, n=n,
              sigma=sgld_row["noise"], lr=sgld_row["lr"])
    return dict(
        updates=ks.tolist(),
        dp_sgd_rdp=[epsilon_for(sgd_sigma, q, int(k), DELTA, "rdp") for k in ks],
        updates_pld=ks_pld.tolist(),
        dp_sgd_pld=[epsilon_for(sgd_sigma, q, int(k), DELTA, "pld") for k in ks_pld],
        sgld_updates=[sgld_epsilon(DELTA, steps=int(k), **hs)[0] for k in ks],
        sgld_epochs_as_k=[sgld_epsilon(DELTA, steps=max(1, int(k) // per_epoch), **hs)[0]
                          if k >= per_epoch else None for k in ks],
        updates_per_epoch=per_epoch,
    )


def _plot(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curves["updates"], curves["dp_sgd_rdp"], label="DP-SGD, RDP (composition)")
    ax.plot(curves["updates_pld"], curves["dp_sgd_pld"], "o--", ms=3,
            label="DP-SGD, PLD (composition)")
    ax.plot(curves["updates"], curves["sgld_updates"], label="DP-SGLD, hidden state, K = updates")
    ks = [k for k, e in zip(curves["updates"], curves["sgld_epochs_as_k"], strict=True)
          if e is not None]
    es = [e for e in curves["sgld_epochs_as_k"] if e is not None]
    ax.plot(ks, es, ":", label="DP-SGLD bound with K = epochs (understated)")
    ax.set_xscale("log")
    ax.set_xlabel("number of updates")
    ax.set_ylabel("ε (δ = 1e-5)")
    ax.set_title("ε vs updates (settings of the ε = 1 runs)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_benchmark(quick: bool = False) -> dict[str, Any]:
    from veil.data import mnist_tensors

    torch.set_num_threads(1)
    x_all, y_all = mnist_tensors("train")
    half = len(x_all) // 2
    xt_img, yt = mnist_tensors("test")
    pub = slice(0, 5000 if quick else half)
    t0 = time.perf_counter()
    net = _feature_net(x_all[pub], y_all[pub], quick)
    priv_end = half + (5000 if quick else half)
    x, y = _features(net, x_all[half:priv_end]), y_all[half:priv_end]
    xt = _features(net, xt_img)
    n = len(y)
    epochs = 3 if quick else EPOCHS
    steps = epochs * max(1, round(n / BATCH))
    rows = [_non_private(x, y, xt, yt)]
    for eps in EPSILONS:
        rows.append(_dp_sgld(x, y, xt, yt, eps, steps))
        for acc in ("rdp", "pld"):
            rows.append(_dp_sgd(x, y, xt, yt, eps, acc, epochs))
    sgld1 = next(r for r in rows if r["method"] == "DP-SGLD" and r["target_epsilon"] == 1.0)
    sgd1 = next(r for r in rows if r["method"] == "DP-SGD" and r["target_epsilon"] == 1.0
                and r["accountant"] == "RDP")
    curves = _curves(n, sgd1["noise"], sgld1, max_updates=10 * steps)
    per_epoch = curves["updates_per_epoch"]
    from veil.dp.sgld import sgld_epsilon

    hs = dict(lipschitz=sgld1["lipschitz"], strong_convexity=L2, n=n, sigma=sgld1["noise"],
              lr=sgld1["lr"])
    discrepancy = dict(
        epochs=epochs, updates=steps,
        epsilon_k_updates=sgld_epsilon(DELTA, steps=steps, **hs)[0],
        epsilon_k_epochs=sgld_epsilon(DELTA, steps=epochs, **hs)[0],
        epsilon_limit=sgld_epsilon(DELTA, steps=10**9, **hs)[0],
        note=f"same run (σ, λ, η, n) accounted with K={steps} updates vs K={epochs} epochs",
    )
    return dict(benchmark="dp_langevin", quick=quick, n_private=n, n_public=pub.stop,
                n_test=len(yt), feature_dim=int(x.shape[1]), batch_size=BATCH, epochs=epochs,
                updates=steps, updates_per_epoch=per_epoch, l2=L2, delta=DELTA, rows=rows,
                curves=curves, k_discrepancy=discrepancy,
                seconds=time.perf_counter() - t0)


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title=f"Private logistic regression on frozen MNIST features "
                    f"(n={results['n_private']}, {results['epochs']} epochs = "
                    f"{results['updates']} updates, δ=1e-5)")
    for col in ("method", "accountant", "target ε", "ε", "σ", "test acc"):
        t.add_column(col)
    for r in results["rows"]:
        t.add_row(r["method"], r["accountant"],
                  "-" if r["target_epsilon"] is None else f"{r['target_epsilon']:g}",
                  "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}",
                  f"{r['noise']:.4g}", f"{r['test_accuracy']:.4f}")
    c.print(t)
    d = results["k_discrepancy"]
    c.print(f"DP-SGLD ε=1 run accounted with K = {d['updates']} updates: ε = "
            f"{d['epsilon_k_updates']:.3f}; with K = {d['epochs']} epochs: ε = "
            f"{d['epsilon_k_epochs']:.3f}; limit K→∞: {d['epsilon_limit']:.3f}")


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False) -> dict:
    """Entry point of ``veil bench dp-langevin`` and ``bench/dp_langevin.py``."""
    results = run_benchmark(quick=quick)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    png = path.with_name(path.stem + "_epsilon.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    _plot(results["curves"], png)
    results["plot"] = str(png)
    return publish(results, path, json_stdout, _print_table)
