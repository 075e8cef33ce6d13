"""DP-SGD cost: per-epoch time of Veil's DP-SGD and of Opacus 1.6, relative to non-private
training of the same small CNN on the same MNIST data, in the same run.

All three train the Opacus/TF-Privacy MNIST CNN (26k parameters) with SGD at expected
batch size 256; the two private ones use the same σ, C and Poisson sampling rate, so
their accountants must report the same ε (checked and printed). Epochs of the three
are interleaved step by step (round-robin) so that machine load hits them alike; the
per-epoch time is the median over epochs of the summed step times. Torch runs on one
thread for all three. Test accuracy is measured on the 10k MNIST test set after the
last epoch.

Run: ``veil bench dp-sgd [--json] [--output F] [--quick]`` or ``python bench/dp_sgd.py``.
Opacus is a peer, installed on demand: ``pip install --no-deps opacus==1.6.* opt_einsum``.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veil.bench.output import publish

DEFAULT_OUTPUT = Path("bench/results/dp_sgd.json")
SIGMA, CLIP, BATCH, DELTA = 1.0, 1.0, 256, 1e-5
LR_PRIVATE, LR_PLAIN = 1.0, 0.1


def _interleaved_epoch(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """One epoch of every method, one step of each in turn (so that machine load, which
    drifts by 2-3x over minutes on a shared box, hits all of them alike). Each step is
    timed including fetching its batch; an epoch's time is the sum over its steps."""
    iters = {name: iter(r["loader"]) for name, r in runs.items()}
    spent = dict.fromkeys(runs, 0.0)
    while iters:
        for name in list(iters):
            r = runs[name]
            t0 = time.perf_counter()
            try:
                x, y = next(iters[name])
            except StopIteration:
                del iters[name]
                continue
            r["model"].train()
            r["opt"].zero_grad()
            nn.functional.cross_entropy(r["model"](x), y).backward()
            r["opt"].step()
            spent[name] += time.perf_counter() - t0
    return spent


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def run_benchmark(quick: bool = False) -> dict[str, Any]:
    from veil.data import mnist_tensors
    from veil.dp import PrivacyEngine
    from veil.dp.models import mnist_cnn

    torch.set_num_threads(1)
    n, epochs = (6000, 2) if quick else (60000, 3)
    x, y = mnist_tensors("train", limit=n)
    xt, yt = mnist_tensors("test")
    train = TensorDataset(x, y)

    def fresh():
        torch.manual_seed(0)
        return mnist_cnn()

    runs: dict[str, dict[str, Any]] = {}
    m = fresh()
    shuffle_gen = torch.Generator().manual_seed(0)
    runs["non-private"] = dict(
        model=m, opt=torch.optim.SGD(m.parameters(), lr=LR_PLAIN),
        loader=DataLoader(train, batch_size=BATCH, shuffle=True, generator=shuffle_gen))
    m = fresh()
    veil_engine = PrivacyEngine(accountant="rdp")
    vm, vo, vl = veil_engine.make_private(
        module=m, optimizer=torch.optim.SGD(m.parameters(), lr=LR_PRIVATE),
        data_loader=DataLoader(train, batch_size=BATCH), noise_multiplier=SIGMA,
        max_grad_norm=CLIP)
    runs["veil DP-SGD"] = dict(model=vm, opt=vo, loader=vl, engine=veil_engine,
                               eval_model=m)
    opacus_version = None
    try:
        import opacus

        opacus_version = opacus.__version__
        m = fresh()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op_engine = opacus.PrivacyEngine(accountant="rdp")
            om, oo, ol = op_engine.make_private(
                module=m, optimizer=torch.optim.SGD(m.parameters(), lr=LR_PRIVATE),
                data_loader=DataLoader(train, batch_size=BATCH), noise_multiplier=SIGMA,
                max_grad_norm=CLIP, poisson_sampling=True)
        runs[f"Opacus {opacus_version}"] = dict(model=om, opt=oo, loader=ol, engine=op_engine,
                                                eval_model=om)
    except ImportError:
        pass

    for name in runs:
        runs[name]["times"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            for name, t in _interleaved_epoch(runs).items():
                runs[name]["times"].append(t)

    base = statistics.median(runs["non-private"]["times"])
    rows = []
    for name, r in runs.items():
        t = statistics.median(r["times"])
        eps = None
        if "engine" in r:
            eps = r["engine"].get_epsilon(DELTA)
        rows.append(dict(method=name, epoch_s=t, epoch_times_s=r["times"], ratio=t / base,
                         epsilon=eps, test_accuracy=_accuracy(r.get("eval_model", r["model"]),
                                                              xt, yt)))
    return dict(
        benchmark="dp_sgd", quick=quick, n_train=n, epochs=epochs, batch_size=BATCH,
        noise_multiplier=SIGMA, max_grad_norm=CLIP, delta=DELTA, lr_private=LR_PRIVATE,
        lr_plain=LR_PLAIN, model="mnist_cnn (26,010 params)", threads=1,
        opacus=opacus_version, torch=torch.__version__, machine=platform.processor()
        or platform.machine(), rows=rows,
        note=None if opacus_version else "Opacus not installed: pip install --no-deps "
        "opacus==1.6.* opt_einsum",
    )


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"DP-SGD per-epoch cost, MNIST CNN, n={results['n_train']}, batch "
                    f"{results['batch_size']}, σ={results['noise_multiplier']}, "
                    f"C={results['max_grad_norm']}, {results['epochs']} epochs (1 thread)")
    for col in ("method", "epoch (s)", "× non-private", "ε (δ=1e-5)", "test acc"):
        t.add_column(col)
    for r in results["rows"]:
        t.add_row(r["method"], f"{r['epoch_s']:.2f}", f"{r['ratio']:.2f}",
                  "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}",
                  f"{r['test_accuracy']:.4f}")
    Console().print(t)
    if results.get("note"):
        Console().print(results["note"])


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False) -> dict:
    """Entry point of ``veil bench dp-sgd`` and ``bench/dp_sgd.py``."""
    results = run_benchmark(quick=quick)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    return publish(results, path, json_stdout, _print_table)
