"""Veil's ServerApp and ClientApps through Flower's own round loops, in process (no Ray)."""

import dataclasses

import numpy as np
import pytest

from veil.fl.config import FLConfig
from veil.fl.inprocess import run_in_process
from veil.fl.task import Task

TASK = Task(model="mlp", dataset="digits", num_clients=5, lr=0.1, local_epochs=3, train_limit=600)


def test_secure_aggregations_give_plain_fedavg():
    logs = {agg: run_in_process(FLConfig(task=TASK, rounds=2, aggregation=agg))
            for agg in ("plain", "two-server", "secagg+")}
    plain = np.concatenate([a.ravel() for a in logs["plain"].final_arrays])
    for agg in ("two-server", "secagg+"):
        other = np.concatenate([a.ravel() for a in logs[agg].final_arrays])
        # two-server: 2^-16 steps; SecAgg+: 2^22 levels over [-8, 8] (4e-6), two rounds
        assert np.abs(other - plain).max() < 1e-3, agg
        assert logs[agg].rounds[-1]["accuracy"] == pytest.approx(
            logs["plain"].rounds[-1]["accuracy"], abs=0.02)
    assert logs["plain"].rounds[-1]["accuracy"] > logs["plain"].initial["accuracy"] + 0.3
    # measured uploads: two-server about one update; SecAgg+ several messages per round
    up = {k: v.rounds[0]["bytes_up_per_client"] for k, v in logs.items()}
    assert up["two-server"] <= 1.05 * up["plain"] < up["secagg+"]
    assert logs["secagg+"].rounds[0]["secagg_clipped"] == 0


def test_secaggplus_silent_clipping_is_detected(caplog):
    cfg = FLConfig(task=TASK, rounds=1, aggregation="secagg+", clipping_range=0.05)
    log = run_in_process(cfg)
    assert log.rounds[0]["secagg_clipped"] > 0
    assert "silently" in caplog.text


def test_client_killed_mid_round_is_left_out():
    cfg = FLConfig(task=TASK, rounds=1, aggregation="two-server")
    full = run_in_process(cfg)
    killed = run_in_process(cfg, fail={103: ConnectionResetError("killed")})
    assert full.rounds[0]["included"] == 5 and killed.rounds[0]["included"] == 4
    # the others' average, not a corrupted one: as good as the full round, and different
    a = np.concatenate([x.ravel() for x in full.final_arrays])
    b = np.concatenate([x.ravel() for x in killed.final_arrays])
    assert 0 < np.abs(a - b).max() < 1.0
    assert killed.rounds[0]["accuracy"] > killed.initial["accuracy"] + 0.2


def test_fedprox_sends_mu_and_changes_the_update():
    base = run_in_process(FLConfig(task=TASK, rounds=1))
    prox_task = dataclasses.replace(TASK, proximal_mu=5.0)
    prox = run_in_process(FLConfig(task=prox_task, rounds=1))
    init = TASK.build()
    w0 = np.concatenate([p.detach().numpy().ravel() for p in init.state_dict().values()])
    move = {k: np.linalg.norm(np.concatenate([a.ravel() for a in v.final_arrays]) - w0)
            for k, v in (("avg", base), ("prox", prox))}
    assert move["prox"] < 0.9 * move["avg"]  # the proximal term holds clients near the global model


def test_federated_evaluation_rebuilds_the_task():
    from veil.fl.strategy import VeilFedAvg

    cfg = FLConfig(task=TASK, rounds=1)
    strategy = VeilFedAvg(task_config=TASK.to_config(), fraction_evaluate=1.0,
                          min_evaluate_nodes=5)
    from flwr.app import Array, ArrayRecord, ConfigRecord

    from veil.fl.apps import client_app
    from veil.fl.inprocess import InProcessGrid
    from veil.fl.task import get_params
    model = TASK.build()
    arrays = ArrayRecord({k: Array(a) for k, a in
                          zip(model.state_dict().keys(), get_params(model), strict=True)})
    grid = InProcessGrid(client_app, cfg.task.num_clients)
    replies = grid.send_and_receive(strategy.configure_evaluate(1, arrays, ConfigRecord(), grid))
    metrics = strategy.aggregate_evaluate(1, replies)
    assert not any(r.has_error() for r in replies)
    assert 0 <= metrics["accuracy"] <= 1
