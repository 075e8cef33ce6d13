"""Federated learning on Flower: what secure aggregation costs, and how the engines scale.

1. **Aggregation cost, side by side in one run** (MNIST LeNet, 10 and 100 clients, all
   sampled, one round each): plain FedAvg (Flower's), Flower's SecAgg+ and Veil's
   two-server aggregation. Bytes are the serialised sizes of every message the
   ServerApp exchanges (protobuf, before transport framing), per client per round,
   measured by :mod:`veil.fl.meter`; server time is the round's wall time minus the time
   spent in the clients; client protocol time is the time a client spends in the
   secure-aggregation protocol (SecAgg+: its mod minus the training inside it;
   two-server: quantising, sharing and sealing the seed). These runs use Flower's own
   round loops, workflows and ClientApps on :class:`veil.fl.inprocess.InProcessGrid`
   (one process, no Ray), so the numbers are protocol costs, not engine overheads.
   Clients hold 50 (quick: 20) MNIST images each: bytes depend on the model only.
2. **Simulation engine** (Ray): wall time per round of :func:`veil.fl.simulate` at 100
   and 1,000 clients (quick: 100), fraction 0.1, an MLP on MNIST; round 1 includes Ray's
   start-up and is reported apart.
3. **Gradient inversion as the measure** (Inverting Gradients, Geiping et al. 2020, from
   :mod:`veil.attacks`) on what the server holds after round 1: PSNR/SSIM of client 0's
   image recovered from its own update, from the secure sum, from the noisy secure sum,
   and from a locally noised update.
4. **Membership inference** (loss threshold) on the final global model with and without
   client-level DP, and **accuracy at ε = 1, 3, 8** (δ = 1e-5) for client-level DP.
5. **Rounds to accuracy** (not in quick mode): MNIST LeNet, 10 clients IID, until 99%
   test accuracy or ``max_rounds``.

Run: ``veil bench fl [--json] [--output F] [--quick]`` or ``python bench/fl.py``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.bench.output import publish

DEFAULT_OUTPUT = Path("bench/results/fl.json")
METHODS = ("plain", "secagg+", "two-server")
SECAGG_NEIGHBOURS = 7
_TIMES: dict[str, float] = {"outer": 0.0, "inner": 0.0}


def _timer(key: str):
    def mod(msg, context, call_next):
        t0 = time.perf_counter()
        try:
            return call_next(msg, context)
        finally:
            _TIMES[key] += time.perf_counter() - t0
    return mod


def _secaggplus_timed_app():
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    from veil.fl.apps import _secaggplus_client_fn, clipping_guard_mod
    return ClientApp(client_fn=_secaggplus_client_fn,
                     mods=[_timer("outer"), secaggplus_mod, clipping_guard_mod, _timer("inner")])


def aggregation_costs(clients: int, per_client: int) -> dict[str, dict[str, float]]:
    from flwr.app import Context, RecordDict

    from veil.fl import FLConfig, Task
    from veil.fl.apps import RoundLog, _run_server, client_app
    from veil.fl.inprocess import InProcessGrid, task_identity
    from veil.fl.twoserver import Aggregator, TwoServerConfig, client_share

    task = Task(model="lenet", dataset="mnist", num_clients=clients,
                train_limit=clients * per_client, test_limit=500, batch_size=50, lr=0.05)
    out: dict[str, dict[str, float]] = {}
    with task_identity():
        for method in METHODS:
            # SecAgg+ with every other client as a neighbour up to 10 clients (SecAgg), then
            # k = 7 neighbours (SecAgg+'s log-degree graph): all-pairs masks at 100 clients
            # cost each client 99 mask expansions of the whole model
            shares = 1.0 if clients <= 10 else SECAGG_NEIGHBOURS
            cfg = FLConfig(task=task, rounds=1, aggregation=method, secagg_shares=shares)
            _TIMES.update(outer=0.0, inner=0.0)
            app = _secaggplus_timed_app() if method == "secagg+" else client_app
            grid = InProcessGrid(app, clients)
            log = RoundLog()
            ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
            _run_server(grid, ctx, cfg, log)
            r = log.rounds[0]
            out[method] = {"secagg_shares": shares if method == "secagg+" else None,
                           "bytes_up_per_client": r["bytes_up_per_client"],
                           "bytes_down_per_client": r["bytes_down_per_client"],
                           "server_s": r["server_s"], "accuracy": r["accuracy"]}
            if method == "secagg+":
                out[method]["client_protocol_s"] = (_TIMES["outer"] - _TIMES["inner"]) / clients
    # two-server client work, timed alone on a LeNet-sized update (the ClientApp does this)
    size = sum(p.numel() for p in task.build().state_dict().values())
    ts = TwoServerConfig(max_weight=per_client, max_clients=clients)
    b = Aggregator("B", ts)
    update = np.random.default_rng(0).normal(0, 0.01, size)  # not-secret: benchmark data
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        client_share(update, per_client, ts, b.public_key)
    out["two-server"]["client_protocol_s"] = (time.perf_counter() - t0) / reps
    out["plain"]["client_protocol_s"] = 0.0
    out["parameters"] = {"count": size}
    return out


def simulation_times(clients: int, rounds: int = 3) -> dict[str, Any]:
    from veil.fl import FLConfig, Task, simulate

    cfg = FLConfig(task=Task(model="mlp", dataset="mnist", num_clients=clients, batch_size=32),
                   rounds=rounds, fraction=0.1)
    h = simulate(cfg)
    later = [r["round_s"] for r in h["rounds"][1:]]
    return {"clients": clients, "fraction": 0.1, "first_round_s": h["rounds"][0]["round_s"],
            "round_s_median": float(np.median(later)) if later else None,
            "accuracy": h["rounds"][-1]["accuracy"], "wall_s": h["wall_s"]}


class _Reached(Exception):
    """Stops the federation once the target accuracy is reached."""


def rounds_to_accuracy(target: float = 0.99, max_rounds: int = 15) -> dict[str, Any]:
    from veil.fl import FLConfig, Task
    from veil.fl.inprocess import run_in_process, task_identity

    cfg = FLConfig(task=Task(model="lenet", dataset="mnist", num_clients=10, batch_size=32,
                             lr=0.05), rounds=max_rounds)
    start = time.perf_counter()
    reached: dict[str, Any] = {"round": None}

    def progress(entry):
        if reached["round"] is None and entry["accuracy"] >= target:
            reached.update(round=entry["round"], wall_s=time.perf_counter() - start)
            raise _Reached

    with task_identity():
        try:
            log = run_in_process(cfg, progress=progress)
            history = log.rounds
        except _Reached:
            history = None
    return {"target": target, "max_rounds": max_rounds, "clients": 10, "partition": "iid",
            "reached_at_round": reached["round"], "wall_s": reached.get("wall_s"),
            "final_accuracy": None if history is None else history[-1]["accuracy"]}


def gradient_inversion_table(clients: int = 10, iterations: int = 600) -> list[dict[str, Any]]:
    """Inverting Gradients on what the server holds after round 1, per setting.

    Every client holds one MNIST image and runs one local SGD step of an MLP (Veil's
    ClientApp recipe with momentum 0, so that the attacker's simulation of the client is
    exact); the server attacks client 0's image from: its own update (plain FedAvg); the
    sum of ``clients`` updates (SecAgg+ / two-server: all the server learns); the same sum
    with two-server distributed noise (z = 1, C = update norm); client 0's update with
    Gaussian noise z = 1 added at the client (local DP).
    """
    from veil.attacks.gradient_inversion import (
        UpdateSpec,
        aggregate,
        dp_noise,
        image_quality,
        inverting_gradients,
    )
    from veil.csprng import CSPRNG
    from veil.data import MNIST_MEAN, MNIST_STD
    from veil.fl.apps import local_update
    from veil.fl.task import Task

    task = Task(model="mlp", dataset="mnist", num_clients=clients, train_limit=clients,
                batch_size=1, lr=0.1, momentum=0.0)
    model = task.build()
    w0 = [p.detach().clone() for p in model.parameters()]
    init = [p.detach().numpy().copy() for p in model.state_dict().values()]
    updates, images, labels = [], [], []
    for k in range(clients):
        new, _ = local_update(task, k, init, {"server-round": 1})
        # the attack's convention is w0 - w_end; the ClientApp sends w_end (plain FedAvg)
        updates.append([w - torch.as_tensor(n) for w, n in zip(w0, new, strict=True)])
        x, y = task.client_data(k)
        images.append(x)
        labels.append(y)
    spec = UpdateSpec(mode="fedavg", local_steps=1, lr=0.1)
    lo, hi = (0 - MNIST_MEAN) / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    norm = float(torch.sqrt(sum((u ** 2).sum() for u in updates[0])))
    gen = CSPRNG()
    secure_sum = aggregate(updates)
    noisy_sum = [u + gen.normal(u.shape, std=norm / clients, dtype=u.dtype) * np.sqrt(2)
                 for u in secure_sum]
    views = {"plain FedAvg (one client's update)": updates[0],
             f"secure aggregation, sum of {clients} (SecAgg+ / two-server)": secure_sum,
             f"two-server sum of {clients} + distributed DP noise z=1": noisy_sum,
             "one client's update + local Gaussian noise z=1": dp_noise(updates[0], norm, 1.0)}
    rows = []
    for name, view in views.items():
        rec = inverting_gradients(model, view, (1, 28, 28), labels[0], spec, tv_weight=1e-4,
                                  iterations=iterations, restarts=1, bounds=(lo, hi))
        q = image_quality(images[0] * MNIST_STD + MNIST_MEAN, rec.images * MNIST_STD + MNIST_MEAN)
        rows.append({"setting": name, "psnr_db": q["psnr"], "ssim": q["ssim"]})
    return rows


def membership_table(rounds: int = 30, noise: float = 1.0) -> list[dict[str, Any]]:
    """Loss-threshold membership inference on the final global model, with and without DP.

    100 clients hold 20 MNIST images each (the members); 2,000 test images are the
    non-members. An MLP is trained for ``rounds`` rounds (fraction 0.2, 5 local epochs),
    once with plain FedAvg and once with client-level DP (z = ``noise``, C = 1, the same
    Poisson rate), in process through Veil's ServerApp logic.
    """
    import torch.nn.functional as F

    from veil.attacks.metrics import evaluate_scores
    from veil.fl import FLConfig, Task
    from veil.fl.inprocess import run_in_process, task_identity
    from veil.fl.task import load_dataset, set_params

    task = Task(model="mlp", dataset="mnist", num_clients=100, train_limit=2000,
                local_epochs=5, batch_size=10, lr=0.05)
    xm, ym = load_dataset("mnist", "train", 2000)
    xn, yn = load_dataset("mnist", "test", 2000)
    rows = []
    for z in (0.0, noise):
        cfg = FLConfig(task=task, rounds=rounds, fraction=0.2, dp_noise=z, dp_clip=1.0)
        with task_identity():
            log = run_in_process(cfg)
        model = task.build()
        set_params(model, log.final_arrays)
        model.eval()
        with torch.no_grad():
            loss = torch.cat([F.cross_entropy(model(x), y, reduction="none")
                              for x, y in ((xm, ym), (xn, yn))]).numpy()
        members = np.r_[np.ones(len(xm), bool), np.zeros(len(xn), bool)]
        res = evaluate_scores(-loss, members, fprs=(0.01, 0.05))
        rows.append({"dp_noise": z, "epsilon": log.rounds[-1].get("epsilon"),
                     "test_accuracy": log.rounds[-1]["accuracy"], "auc": res.auc,
                     "tpr_at_1pct_fpr": res.tpr_at_fpr[0.01],
                     "tpr_at_5pct_fpr": res.tpr_at_fpr[0.05]})
    return rows


def dp_accuracy_table(epsilons=(1.0, 3.0, 8.0), rounds: int = 20, clients: int = 100,
                      fraction: float = 0.2, delta: float = 1e-5) -> list[dict[str, Any]]:
    """Test accuracy of client-level DP-FedAvg at a target ε (δ = 1e-5) after ``rounds``.

    MNIST MLP, ``clients`` clients with 100 images each, Poisson rate ``fraction``,
    C = 1; z is the smallest noise multiplier whose RDP ε after ``rounds`` rounds is at
    most the target (``veil.dp.noise_multiplier_for``). In process (Flower's loop, no Ray).
    """
    from veil.dp import noise_multiplier_for
    from veil.fl import FLConfig, Task
    from veil.fl.inprocess import run_in_process, task_identity

    task = Task(model="mlp", dataset="mnist", num_clients=clients, train_limit=100 * clients,
                batch_size=20, lr=0.1, local_epochs=2)
    rows = []
    for eps in (None, *epsilons):
        z = 0.0 if eps is None else noise_multiplier_for(eps, delta, fraction, rounds)
        cfg = FLConfig(task=task, rounds=rounds, fraction=fraction, dp_noise=z, dp_clip=1.0,
                       delta=delta)
        with task_identity():
            log = run_in_process(cfg)
        rows.append({"target_epsilon": eps, "noise_multiplier": z,
                     "epsilon": log.rounds[-1].get("epsilon"),
                     "test_accuracy": log.rounds[-1]["accuracy"]})
    return rows


def run_benchmark(quick: bool = False) -> dict[str, Any]:
    import logging
    logging.getLogger("flwr").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    per_client = 20 if quick else 50
    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "note": "shared 2-core machine, busy with other jobs during the run",
        "aggregation": {str(k): aggregation_costs(k, per_client) for k in (10, 100)},
        "simulation": [simulation_times(n) for n in ((100,) if quick else (100, 1000))],
    }
    results["gradient_inversion"] = gradient_inversion_table(
        iterations=200 if quick else 600)
    results["membership"] = membership_table(rounds=10 if quick else 30)
    results["dp_accuracy"] = dp_accuracy_table(rounds=5 if quick else 20)
    if not quick:
        results["rounds_to_accuracy"] = rounds_to_accuracy()
    for agg in results["aggregation"].values():
        plain = agg["plain"]
        for m in METHODS:
            agg[m]["upload_vs_plain"] = agg[m]["bytes_up_per_client"] / plain["bytes_up_per_client"]
        agg["secagg_vs_two_server_client_time"] = (
            agg["secagg+"]["client_protocol_s"] / agg["two-server"]["client_protocol_s"])
    return results


def _print_table(res: dict[str, Any]) -> None:
    print(f"{'clients':>7} {'method':>11} {'up B/client':>12} {'x plain':>8} "
          f"{'down B/client':>14} {'server s':>9} {'client proto s':>15} {'acc':>6}")
    for k, agg in res["aggregation"].items():
        for m in METHODS:
            r = agg[m]
            print(f"{k:>7} {m:>11} {r['bytes_up_per_client']:>12,.0f} {r['upload_vs_plain']:>8.3f} "
                  f"{r['bytes_down_per_client']:>14,.0f} {r['server_s']:>9.3f} "
                  f"{r['client_protocol_s']:>15.4f} {r['accuracy']:>6.3f}")
        print(f"{'':>7} SecAgg+ / two-server client time: "
              f"{agg['secagg_vs_two_server_client_time']:.1f}x")
    for s in res["simulation"]:
        med = s["round_s_median"]
        print(f"simulation (Ray) {s['clients']} clients, fraction 0.1: first round "
              f"{s['first_round_s']:.1f} s (Ray start-up), then "
              f"{med:.2f} s/round" if med is not None else "")
    for r in res["gradient_inversion"]:
        print(f"gradient inversion: {r['setting']:<58} PSNR {r['psnr_db']:6.2f} dB  "
              f"SSIM {r['ssim']:.3f}")
    for r in res["membership"]:
        eps = "no DP" if not r["dp_noise"] else f"z={r['dp_noise']}, eps={r['epsilon']:.2f}"
        print(f"membership inference ({eps}): test acc {r['test_accuracy']:.3f}, "
              f"AUC {r['auc']:.3f}, TPR@1%FPR {r['tpr_at_1pct_fpr']}")
    for r in res["dp_accuracy"]:
        tag = "no DP" if r["target_epsilon"] is None else (
            f"eps<={r['target_epsilon']:g} (z={r['noise_multiplier']:.2f}, eps={r['epsilon']:.2f})")
        print(f"client-level DP, {tag}: test accuracy {r['test_accuracy']:.3f}")
    if "rounds_to_accuracy" in res:
        r = res["rounds_to_accuracy"]
        print(f"rounds to {r['target']:.0%} (LeNet, 10 clients IID): {r['reached_at_round']} "
              f"({r['wall_s']} s)")
    print(res["note"])


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False) -> dict:
    """Entry point of ``veil bench fl`` and ``bench/fl.py``."""
    results = run_benchmark(quick=quick)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    return publish(results, path, json_stdout, _print_table)
