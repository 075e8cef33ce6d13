"""Flower's two engines running Veil's apps: Ray simulation and a SuperLink + SuperNodes."""

import pytest

from veil.fl import FLConfig, Task

TASK = dict(model="mlp", dataset="digits", lr=0.1, local_epochs=2)


@pytest.mark.slow
def test_simulation_engine_ten_clients():
    from veil.fl import simulate
    cfg = FLConfig(task=Task(num_clients=10, partition="dirichlet:1.0", **TASK), rounds=2,
                   aggregation="two-server")
    seen = []
    h = simulate(cfg, progress=seen.append, num_cpus=2)
    assert [r["round"] for r in h["rounds"]] == [1, 2] and seen == h["rounds"]
    assert all(r["included"] == 10 for r in h["rounds"])
    assert h["rounds"][-1]["accuracy"] > h["initial"]["accuracy"] + 0.3


@pytest.mark.slow
@pytest.mark.tcp
def test_deployment_superlink_and_three_supernodes(tmp_path):
    from veil.fl.deploy import deploy
    cfg = FLConfig(task=Task(num_clients=3, **TASK), rounds=2, aggregation="two-server")
    # generous: Flower starts a Python process per message, slow on a loaded machine
    report = deploy(cfg, workdir=tmp_path, timeout=900)
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert all(r["included"] == 3 and r["bytes_up_per_client"] > 0 for r in report["rounds"])
    assert report["rounds"][-1]["accuracy"] > report["initial"]["accuracy"] + 0.3
    assert (tmp_path / "logs" / "superlink.log").exists()
