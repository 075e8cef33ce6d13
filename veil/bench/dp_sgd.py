"""DP-SGD cost: per-epoch time of Veil's DP-SGD and of Opacus 1.6, relative to non-private
training of the same model on the same data, in the same run, for four models:

- ``mnist-cnn``: the Opacus/TF-Privacy MNIST CNN (26k parameters);
- ``resnet20-gn``: ResNet-20 with GroupNorm on CIFAR-10 (0.27M parameters);
- ``lstm``: an ``nn.LSTM`` (64 units) classifying MNIST read row by row (28 steps);
- ``transformer``: a 2-block pre-norm encoder (``nn.MultiheadAttention``, d=32, 4 heads)
  over MNIST rows as 28 tokens.

Veil trains the models as they are; Opacus gets ``ModuleValidator.fix`` (its DPLSTM and
DPMultiheadAttention). The private runs share σ, C and the Poisson rate, so their
accountants report the same ε (both RDP; printed). Epochs of the three methods are
interleaved step by step (round-robin) so that machine load hits them alike; the
per-epoch time is the median over epochs of the summed step times. Torch runs on one
thread. Test accuracy after the last epoch. Sizes are small so that the whole benchmark
runs in a few minutes; accuracies are therefore those of short runs.

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
SIGMA, CLIP, DELTA = 1.0, 1.0, 1e-5


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


def _tasks(quick: bool) -> list[dict[str, Any]]:
    from veil.data import cifar10_tensors, mnist_tensors
    from veil.dp.models import LSTMClassifier, TransformerClassifier, mnist_cnn, resnet20_gn

    def mnist(n, n_test, rows=False):
        x, y = mnist_tensors("train", limit=n)
        xt, yt = mnist_tensors("test", limit=n_test)
        if rows:  # (B, 28 steps, 28 pixels)
            x, xt = x.view(-1, 28, 28), xt.view(-1, 28, 28)
        return x, y, xt, yt

    def cifar(n, n_test):
        return (*cifar10_tensors("train", limit=n), *cifar10_tensors("test", limit=n_test))

    q = quick
    return [
        dict(name="mnist-cnn", make=mnist_cnn, data=lambda: mnist(2000 if q else 8000, 10000),
             batch=256, epochs=2, lr_private=1.0, lr_plain=0.1, momentum=0.0),
        dict(name="resnet20-gn", make=resnet20_gn, data=lambda: cifar(128 if q else 512, 1000),
             batch=64, epochs=2, lr_private=0.5, lr_plain=0.05, momentum=0.9),
        dict(name="lstm", make=LSTMClassifier,
             data=lambda: mnist(512 if q else 2048, 2000, rows=True),
             batch=128, epochs=2, lr_private=1.0, lr_plain=0.1, momentum=0.9),
        dict(name="transformer", make=TransformerClassifier,
             data=lambda: mnist(512 if q else 2048, 2000, rows=True),
             batch=128, epochs=2, lr_private=0.5, lr_plain=0.05, momentum=0.9),
    ]


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    from veil.dp import PrivacyEngine

    x, y, xt, yt = task["data"]()
    train = TensorDataset(x, y)
    batch = task["batch"]

    def fresh():
        torch.manual_seed(0)
        return task["make"]()

    def sgd(m, lr):
        return torch.optim.SGD(m.parameters(), lr=lr, momentum=task["momentum"])

    runs: dict[str, dict[str, Any]] = {}
    m = fresh()
    runs["non-private"] = dict(
        model=m, opt=sgd(m, task["lr_plain"]),
        loader=DataLoader(train, batch_size=batch, shuffle=True,
                          generator=torch.Generator().manual_seed(0)))
    m = fresh()
    veil_engine = PrivacyEngine(accountant="rdp")
    vm, vo, vl = veil_engine.make_private(
        module=m, optimizer=sgd(m, task["lr_private"]),
        data_loader=DataLoader(train, batch_size=batch), noise_multiplier=SIGMA,
        max_grad_norm=CLIP)
    runs["veil DP-SGD"] = dict(model=vm, opt=vo, loader=vl, engine=veil_engine, eval_model=m)
    opacus_version = None
    try:
        import opacus
        from opacus.validators import ModuleValidator

        opacus_version = opacus.__version__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = ModuleValidator.fix(fresh())
            op_engine = opacus.PrivacyEngine(accountant="rdp")
            om, oo, ol = op_engine.make_private(
                module=m, optimizer=sgd(m, task["lr_private"]),
                data_loader=DataLoader(train, batch_size=batch), noise_multiplier=SIGMA,
                max_grad_norm=CLIP, poisson_sampling=True)
        runs[f"Opacus {opacus_version}"] = dict(model=om, opt=oo, loader=ol, engine=op_engine,
                                                eval_model=om)
    except ImportError:
        pass
    for name in runs:
        runs[name]["times"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(task["epochs"]):
            for name, t in _interleaved_epoch(runs).items():
                runs[name]["times"].append(t)
    base = statistics.median(runs["non-private"]["times"])
    rows = []
    for name, r in runs.items():
        t = statistics.median(r["times"])
        eps = r["engine"].get_epsilon(DELTA) if "engine" in r else None
        rows.append(dict(task=task["name"], method=name, epoch_s=t, epoch_times_s=r["times"],
                         ratio=t / base, epsilon=eps,
                         test_accuracy=_accuracy(r.get("eval_model", r["model"]), xt, yt)))
    return dict(task=task["name"], n_train=len(train), n_test=len(yt), batch_size=batch,
                epochs=task["epochs"], lr_private=task["lr_private"],
                lr_plain=task["lr_plain"], momentum=task["momentum"],
                params=sum(p.numel() for p in fresh().parameters()), opacus=opacus_version,
                rows=rows)


def run_benchmark(quick: bool = False, tasks: str | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    wanted = set(tasks.split(",")) if tasks else None
    results = [_run_task(t) for t in _tasks(quick) if wanted is None or t["name"] in wanted]
    opacus_version = next((r["opacus"] for r in results if r["opacus"]), None)
    return dict(
        benchmark="dp_sgd", quick=quick, noise_multiplier=SIGMA, max_grad_norm=CLIP,
        delta=DELTA, threads=1, opacus=opacus_version, torch=torch.__version__,
        machine=platform.processor() or platform.machine(), tasks=results,
        rows=[row for r in results for row in r["rows"]],
        note=("Opacus not installed: pip install --no-deps opacus==1.6.* opt_einsum"
              if opacus_version is None else None),
    )


def _print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"DP-SGD per-epoch cost, σ={results['noise_multiplier']}, "
                    f"C={results['max_grad_norm']}, 1 thread")
    for col in ("task", "n × epochs, batch", "method", "epoch (s)", "× non-private",
                "ε (δ=1e-5)", "test acc"):
        t.add_column(col)
    for task in results["tasks"]:
        for r in task["rows"]:
            t.add_row(task["task"], f"{task['n_train']} × {task['epochs']}, {task['batch_size']}",
                      r["method"], f"{r['epoch_s']:.2f}", f"{r['ratio']:.2f}",
                      "-" if r["epsilon"] is None else f"{r['epsilon']:.3f}",
                      f"{r['test_accuracy']:.4f}")
    Console().print(t)
    if results.get("note"):
        Console().print(results["note"])


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False,
         tasks: str | None = None) -> dict:
    """Entry point of ``veil bench dp-sgd`` and ``bench/dp_sgd.py`` (``tasks``: a comma
    list of mnist-cnn, resnet20-gn, lstm, transformer; default all)."""
    results = run_benchmark(quick=quick, tasks=tasks)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    return publish(results, path, json_stdout, _print_table)
