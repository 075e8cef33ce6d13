"""Flower's round loops with real ClientApps in one process, without Ray or a SuperLink.

:class:`InProcessGrid` is a Flower ``Grid`` for tests, benchmarks and debugging:
``send_and_receive`` hands every message (a deep copy, as a transport would)
to the ClientApp with that node's ``Context``, and turns a client's exception
into an error reply, as Flower's engines do. The ServerApp code, strategies,
workflows and mods are Flower's own; only the transport is replaced.

Example
-------
>>> from flwr.app import Context, RecordDict
>>> from veil.fl import FLConfig, Task
>>> cfg = FLConfig(task=Task(model="mlp", dataset="digits", num_clients=3), rounds=1)
>>> log = run_in_process(cfg)
>>> log.rounds[0]["included"]
3
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid:
    """Delivers each message to ``app(message, context_of_its_node)`` in this process.

    ``fail`` maps node ids to an exception that node raises (a client killed
    mid-round): it answers with an error reply. ``client_s`` accumulates the
    time spent inside the ClientApps.
    """

    class run:  # noqa: N801 - Flower's legacy client manager reads grid.run.run_id
        run_id = 1

    def __init__(self, app, num_nodes: int, fail: dict | None = None) -> None:
        self.app, self.fail = app, dict(fail or {})
        self.nodes = list(range(101, 101 + num_nodes))
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={
            "partition-id": i, "num-partitions": num_nodes}, state=RecordDict(), run_config={})
            for i, n in enumerate(self.nodes)}
        self.client_s = 0.0

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for m in messages:
            node = m.metadata.dst_node_id
            start = time.perf_counter()
            try:
                if node in self.fail:
                    raise self.fail[node]
                # a real transport hands each node its own copy (SecAgg+ mutates its input)
                out.append(copy.deepcopy(self.app(copy.deepcopy(m), self.contexts[node])))
            except Exception as exc:  # noqa: BLE001 - an engine turns any crash into an error
                out.append(Message(Error(code=0, reason=repr(exc)), reply_to=m))
            self.client_s += time.perf_counter() - start
        return out


@contextlib.contextmanager
def task_identity() -> Iterator[None]:
    """Flower stamps messages with the running task's identity; provide one in-process."""
    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old


def run_in_process(cfg, fail: dict | None = None, progress=None):
    """Run ``cfg`` through Veil's ServerApp logic on an :class:`InProcessGrid`.

    Returns the :class:`veil.fl.apps.RoundLog`; its ``grid`` attribute holds the grid.
    """
    from veil.fl.apps import RoundLog, _run_server, client_app, secaggplus_client_app

    app = secaggplus_client_app() if cfg.aggregation == "secagg+" else client_app
    grid = InProcessGrid(app, cfg.task.num_clients, fail)
    log = RoundLog(progress)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    with task_identity():
        _run_server(grid, ctx, cfg, log)
    log.grid = grid
    return log
