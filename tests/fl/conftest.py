"""An in-process Flower grid: Flower's Strategy.start loop with real ClientApps, no Ray."""

from __future__ import annotations

import copy

import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid:
    """Delivers each message to ``apps[node](message, context)`` in this process.

    ``fail`` maps node ids to an exception raised by that client (a client killed
    mid-round): it answers with an error reply, as Flower's engines do.
    """

    def __init__(self, app, num_nodes: int, fail: dict | None = None) -> None:
        self.app, self.fail = app, dict(fail or {})
        self.nodes = list(range(101, 101 + num_nodes))
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={
            "partition-id": i, "num-partitions": num_nodes}, state=RecordDict(), run_config={})
            for i, n in enumerate(self.nodes)}

    class run:  # noqa: N801 - Flower's legacy client manager reads grid.run.run_id
        run_id = 1

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            node = m.metadata.dst_node_id
            try:
                if node in self.fail:
                    raise self.fail[node]
                # a real transport hands each node its own copy (SecAgg+ mutates its input)
                out.append(copy.deepcopy(self.app(copy.deepcopy(m), self.contexts[node])))
            except Exception as exc:  # noqa: BLE001 - the engine turns any crash into an error reply
                out.append(Message(Error(code=0, reason=repr(exc)), reply_to=m))
        return out


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower stamps messages with the running task's identity; give tests one."""
    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old


@pytest.fixture
def grid_factory():
    return InProcessGrid


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only contend on a shared 2-core machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
