import dataclasses

import numpy as np
import pytest
import torch

from veil.fl.config import FLConfig
from veil.fl.task import Task, get_params, set_params

TASK = Task(model="mlp", dataset="digits", num_clients=4, lr=0.1)


def test_local_training_improves_and_params_round_trip():
    model = TASK.build()
    x, y = TASK.client_data(1)
    before = TASK.evaluate(model, x, y)["loss"]
    stats = TASK.train(model, x, y)
    assert stats["num-examples"] == len(x) and TASK.evaluate(model, x, y)["loss"] < before
    other = TASK.build()
    set_params(other, get_params(model))
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="tensors"):
        set_params(other, get_params(model)[:1])


def test_local_dp_sgd_reports_the_clients_epsilon():
    task = dataclasses.replace(TASK, local_dp_noise=1.0, local_dp_clip=1.0, batch_size=20)
    model = task.build()
    w0 = np.concatenate([a.ravel() for a in get_params(model)])
    stats = task.train(model, *task.client_data(0))
    assert 0 < stats["local-epsilon"] < 100
    assert not np.allclose(w0, np.concatenate([a.ravel() for a in get_params(model)]))


def test_bad_tasks_refused():
    with pytest.raises(ValueError, match="expects inputs"):
        Task(model="lenet", dataset="digits").build()
    with pytest.raises(ValueError, match="unknown dataset"):
        Task(dataset="imagenet")
    with pytest.raises(ValueError, match="outside"):
        TASK.client_data(4)
    with pytest.raises(ValueError, match="proximal"):
        dataclasses.replace(TASK, local_dp_noise=1.0, proximal_mu=0.1).train(
            TASK.build(), *TASK.client_data(0))
    assert FLConfig.from_flat(FLConfig(task=TASK).to_flat()).task == TASK
