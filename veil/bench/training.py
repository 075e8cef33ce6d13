"""Private training cost: Network1 on MNIST with AriaNN's recipe (MSE on one-hot targets,
SGD lr 0.01, momentum 0.9, batch 128), against plaintext PyTorch in the same run.

Three measurements:

1. **Private steps** through :func:`veil.secure_train` (local transport: two parties and
   the dealer as threads of one process, as AriaNN's figures are), on the first
   ``batches`` batches of MNIST: per-batch offline (dealer material, generated on the
   fly as AriaNN does) and online time, bytes and rounds. The time per epoch is
   *extrapolated* from these batches (469 per epoch) unless ``batches`` covers the
   epoch; the table says which. The private weights are checked to equal the
   fixed-point twin's after the same steps.
2. **The fixed-point twin** trained for ``twin_epochs`` on all 60k images: the test
   accuracy the private run reaches (the parties compute the twin's weights bit for
   bit), and its time.
3. **Plaintext PyTorch** (float32, one thread), same recipe: time per epoch (the
   overhead factor's denominator) and test accuracy.

AriaNN (PoPETs 2022) reports Network1 at 98.0% and 0.8 h per epoch. CrypTen's training
is not measured here.

Run: ``veil bench training [--json] [--output F] [--quick]`` or ``python bench/training.py``;
``VEIL_BENCH_TRAIN_BATCHES`` (default 8) and ``VEIL_BENCH_TWIN_EPOCHS`` (default 15) set
the sizes.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.bench.output import publish

DEFAULT_OUTPUT = Path("bench/results/training.json")
BATCH, LR, MOMENTUM, EPOCHS = 128, 0.01, 0.9, 15
ARIANN = {"accuracy": 0.980, "hours_per_epoch": 0.8}


def _plain(model: nn.Module, x, y, xt, yt, epochs: int) -> dict[str, float]:
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
            t0 = time.perf_counter()
            for i in range(0, len(x), BATCH):
                idx = order[i:i + BATCH]
                opt.zero_grad()
                target = nn.functional.one_hot(y[idx], 10).float()
                nn.functional.mse_loss(m(x[idx]), target).backward()
                opt.step()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        acc = float((m(xt).argmax(1) == yt).float().mean())
    return {"epoch_s": min(times), "epochs": epochs, "test_accuracy": acc}


def run_benchmark(quick: bool = False, batches: int | None = None,
                  twin_epochs: int | None = None) -> dict[str, Any]:
    from veil.data.mnist import mnist_tensors
    from veil.models import build
    from veil.nn.training import secure_train, twin_accuracy, twin_train

    batches = batches or (2 if quick else int(os.environ.get("VEIL_BENCH_TRAIN_BATCHES", "8")))
    twin_epochs = twin_epochs or (1 if quick else int(os.environ.get("VEIL_BENCH_TWIN_EPOCHS",
                                                                     str(EPOCHS))))
    x, y = mnist_tensors("train", limit=6000 if quick else None)
    xt, yt = mnist_tensors("test", limit=2000 if quick else None)
    torch.manual_seed(0)  # not secret: the model owner's initial weights
    model = build("network1")
    per_epoch = -(-60_000 // BATCH)  # a full MNIST epoch, also when --quick trains on less
    batches = min(batches, -(-len(x) // BATCH))
    kw = dict(epochs=1, batch_size=BATCH, lr=LR, momentum=MOMENTUM, loss="mse")

    n = batches * BATCH
    t0 = time.perf_counter()
    trained, report = secure_train(model, x[:n], y[:n], shuffle=False, **kw)
    private_wall = time.perf_counter() - t0
    twin_steps = twin_train(model, x[:n], y[:n], **kw)
    matches = all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                    twin_steps.state_dict().values(),
                                                    strict=True))
    offline_b = report.offline_s / batches
    online_b = report.online_s / batches
    private = {
        "batches_run": batches, "batches_per_epoch": per_epoch,
        "extrapolated": batches < per_epoch,
        "offline_s_per_batch": offline_b, "online_s_per_batch": online_b,
        "epoch_offline_s": offline_b * per_epoch, "epoch_online_s": online_b * per_epoch,
        "epoch_s": (offline_b + online_b) * per_epoch,
        "wall_s": private_wall,
        "online_bytes_per_batch": report.bytes_per_batch,
        "offline_bytes_per_batch": report.offline_bytes / batches,
        "rounds_per_batch": report.rounds_per_batch,
        "weights_equal_twin": matches,
        "opened": report.opened,
    }

    t0 = time.perf_counter()
    twin = twin_train(model, x, y, **{**kw, "epochs": twin_epochs}, seed=0)
    twin_s = time.perf_counter() - t0
    twin_res = {"epochs": twin_epochs, "test_accuracy": twin_accuracy(twin, xt, yt),
                "wall_s": twin_s}
    plain = _plain(model, x, y, xt, yt, twin_epochs)
    return {
        "benchmark": "training", "model": "network1", "dataset": "mnist",
        "recipe": {"loss": "mse", "lr": LR, "momentum": MOMENTUM, "batch": BATCH,
                   "epochs": EPOCHS},
        "quick": quick, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "private": private, "twin": twin_res, "plaintext": plain,
        "overhead_vs_plaintext": private["epoch_s"] / plain["epoch_s"],
        "ariann": ARIANN,
        "speedup_vs_ariann": ARIANN["hours_per_epoch"] * 3600 / private["epoch_s"],
    }


def _print_table(r: dict[str, Any]) -> None:
    p, t, pl = r["private"], r["twin"], r["plaintext"]
    how = (f"extrapolated from {p['batches_run']} of {p['batches_per_epoch']} batches"
           if p["extrapolated"] else "measured over the full epoch")
    print(f"Network1 / MNIST, AriaNN's recipe (MSE, lr {LR}, momentum {MOMENTUM}, batch "
          f"{BATCH}); local transport; shared machine, timings are noisy")
    print(f"{'':34} {'Veil private':>14} {'plaintext':>10} {'AriaNN':>8}")
    print(f"{'time per epoch (h)':34} {p['epoch_s'] / 3600:>14.3f} {pl['epoch_s'] / 3600:>10.5f}"
          f" {ARIANN['hours_per_epoch']:>8.1f}")
    print(f"{'  of which offline (h)':34} {p['epoch_offline_s'] / 3600:>14.3f}")
    print(f"{'  of which online (h)':34} {p['epoch_online_s'] / 3600:>14.3f}")
    print(f"{'online MB / rounds per batch':34} {p['online_bytes_per_batch'] / 1e6:>9.2f} / "
          f"{p['rounds_per_batch']:<3}")
    print(f"{'dealer MB per batch':34} {p['offline_bytes_per_batch'] / 1e6:>14.1f}")
    print(f"{'test accuracy after ' + str(t['epochs']) + ' epoch(s)':34} "
          f"{t['test_accuracy']:>14.4f} {pl['test_accuracy']:>10.4f} "
          f"{ARIANN['accuracy']:>8.3f}")
    print(f"private time per epoch: {how}; private weights == fixed-point twin's: "
          f"{p['weights_equal_twin']}; the private accuracy is the twin's (bit-exact).")
    print(f"overhead vs plaintext PyTorch: {r['overhead_vs_plaintext']:.0f}x; "
          f"vs AriaNN's 0.8 h/epoch: {r['speedup_vs_ariann']:.2f}x")


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False,
         **extra: Any) -> dict:
    """Entry point of ``veil bench training`` and ``bench/training.py``."""
    results = run_benchmark(quick=quick, **extra)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    return publish(results, path, json_stdout, _print_table)
