"""Veil's Flower apps: a ClientApp that trains any model of a :class:`Task`, and ServerApps.

- :data:`client_app` (message API, ``@app.train()``): loads the global model,
  trains on the client's partition (``context.node_config["partition-id"]``),
  then uploads according to the round's config: the new model (plain), the
  clipped model (client-level DP), or two-server shares.
- :func:`secaggplus_client_app`: the same training as a legacy ``NumPyClient``
  behind Flower's ``secaggplus_mod`` (SecAgg+ runs on Flower's legacy API), with
  :func:`clipping_guard_mod` that detects the values SecAgg+ would clip silently.
- :func:`make_server_app`: a ServerApp running :class:`veil.fl.strategy.VeilFedAvg`
  or Flower's ``SecAggPlusWorkflow`` for a :class:`veil.fl.config.FLConfig`, with
  centralised evaluation and per-round measurements.

A deployment reads the same apps by reference: ``veil.fl.apps:client_app`` and
``veil.fl.apps:server_app`` (the latter builds its config from the run config).
"""

from __future__ import annotations

import functools
import time
from logging import INFO, WARNING

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from veil.fl.config import KEY_DP_CLIP, KEY_PK_B, FLConfig
from veil.fl.task import Task, get_params, set_params
from veil.fl.twoserver import TwoServerConfig, client_share


@functools.lru_cache(maxsize=4)
def _task(items: tuple) -> Task:
    return Task.from_config(dict(items))


def task_of(config: dict) -> Task:
    """The task described by a round's config (cached per client process)."""
    keys = Task.__dataclass_fields__
    return _task(tuple(sorted((k, v) for k, v in config.items() if k in keys)))


def local_update(task: Task, partition: int, arrays: list[np.ndarray], config: dict
                 ) -> tuple[list[np.ndarray], dict[str, float]]:
    """Train the global model on one client's partition; the new arrays and metrics."""
    if "proximal-mu" in config and config["proximal-mu"] != task.proximal_mu:
        task = Task.from_config(dict(task.to_config(), proximal_mu=float(config["proximal-mu"])))
    model = task.build()
    set_params(model, arrays)
    x, y = task.client_data(partition)
    stats = task.train(model, x, y, seed=int(config.get("server-round", 0)) * 100003 + partition)
    return get_params(model), stats


def _partition(context: Context) -> int:
    pid = context.node_config.get("partition-id")
    if pid is None:
        raise ValueError("the SuperNode has no 'partition-id' in its node config "
                         "(start it with --node-config \"partition-id=K num-partitions=N\")")
    return int(pid)


client_app = ClientApp()


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    config = dict(msg.content["config"])
    task = task_of(config)
    arrays = msg.content["arrays"]
    start = time.perf_counter()
    new, stats = local_update(task, _partition(context), arrays.to_numpy_ndarrays(), config)
    metrics = {"loss": stats["loss"], "num-examples": stats["num-examples"],
               "train-s": time.perf_counter() - start}
    if "local-epsilon" in stats:
        metrics["local-epsilon"] = stats["local-epsilon"]
    old = arrays.to_numpy_ndarrays()
    delta = flatten(new) - flatten(old)
    weight = stats["num-examples"]
    if KEY_DP_CLIP in config:
        clip = float(config[KEY_DP_CLIP])
        norm = float(np.linalg.norm(delta))
        metrics["veil.dp.fitted"] = float(norm <= clip)
        if norm > clip:
            delta *= clip / norm
        weight = 1.0
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if KEY_PK_B in config:
        start = time.perf_counter()
        cfg = TwoServerConfig(int(config["veil.twoserver.ring-bits"]),
                              int(config["veil.twoserver.frac-bits"]),
                              float(config["veil.twoserver.max-weight"]),
                              int(config["veil.twoserver.max-clients"]))
        share, sealed = client_share(delta, weight, cfg, config[KEY_PK_B])
        content["veil.share"] = ArrayRecord({"share-a": Array(share)})
        content["veil.seed"] = ConfigRecord({"sealed-seed": sealed})
        content["metrics"]["share-s"] = time.perf_counter() - start
    else:
        flat = flatten(old) + delta
        out, i = {}, 0
        for key, a in zip(arrays.keys(), old, strict=True):
            out[key] = Array(flat[i:i + a.size].reshape(a.shape).astype(a.dtype))
            i += a.size
        content["arrays"] = ArrayRecord(out)
    return Message(content, reply_to=msg)


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    task = task_of(dict(msg.content["config"]))
    model = task.build()
    set_params(model, msg.content["arrays"].to_numpy_ndarrays())
    res = task.evaluate(model, *task.test_data())
    return Message(RecordDict({"metrics": MetricRecord(res)}), reply_to=msg)


# --- SecAgg+ (Flower's legacy API) ------------------------------------------------------

def clipping_guard_mod(msg: Message, context: Context, call_next):
    """Detect what Flower's SecAgg+ would clip silently (use inside ``secaggplus_mod``).

    SecAgg+ multiplies each returned parameter by ``num_examples / max_weight`` and
    clips it to ``[-clipping_range, clipping_range]`` before quantising, without a
    word. This mod, placed after ``secaggplus_mod`` in the mods list, reads the
    round's SecAgg+ parameters from the client state, counts the values beyond
    the range, logs a warning and reports the count in the fit metrics
    (``veil.secagg.clipped``) so the server can warn too.
    """
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
    from flwr.compat.common import recorddict_compat as compat

    reply = call_next(msg, context)
    state = context.state.config_records.get(RECORD_KEY_STATE)
    # secaggplus_mod calls the app only in its collect-masked-vectors stage: a fit reply
    if state is None or not reply.has_content() or msg.metadata.message_type != MessageType.TRAIN:
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    from flwr.common import parameters_to_ndarrays
    ratio = fitres.num_examples / float(state["max_weight"])
    limit = float(state["clipping_range"])
    clipped = sum(int((np.abs(a) * ratio > limit).sum())
                  for a in parameters_to_ndarrays(fitres.parameters))
    if clipped:
        log(WARNING, "SecAgg+ will silently clip %d value(s) of this update to +-%g "
            "(weight ratio %.3g): raise clipping_range", clipped, limit, ratio)
    fitres.metrics["veil.secagg.clipped"] = clipped
    content = compat.fitres_to_recorddict(fitres, keep_input=True)
    for key, rec in content.items():
        reply.content[key] = rec
    return reply


def _secaggplus_client_fn(context: Context):
    from flwr.client import NumPyClient

    partition = _partition(context)

    class VeilNumPyClient(NumPyClient):
        def fit(self, parameters, config):
            new, stats = local_update(task_of(dict(config)), partition, parameters, dict(config))
            return new, int(stats["num-examples"]), {"loss": float(stats["loss"])}

    return VeilNumPyClient().to_client()


def secaggplus_client_app() -> ClientApp:
    """The ClientApp for SecAgg+ rounds: Veil's training behind Flower's ``secaggplus_mod``."""
    from flwr.client.mod import secaggplus_mod
    return ClientApp(client_fn=_secaggplus_client_fn, mods=[secaggplus_mod, clipping_guard_mod])


# --- ServerApps ------------------------------------------------------------------------

class RoundLog:
    """Per-round measurements, filled as the ServerApp runs (the same process as the caller
    in simulation)."""

    def __init__(self, progress=None) -> None:
        self.rounds: list[dict] = []
        self.initial: dict = {}
        self.progress = progress
        self.final_arrays: list[np.ndarray] | None = None


def _run_server(grid: Grid, context: Context, cfg: FLConfig, log_: RoundLog) -> None:
    from veil.fl.dp import ClientDP
    from veil.fl.meter import Meter, metered
    from veil.fl.strategy import VeilFedAvg

    meter = Meter()
    metered(grid, meter)
    task = cfg.task
    model = task.build()
    keys = list(model.state_dict().keys())
    init = get_params(model)
    xt, yt = task.test_data()
    mark = {"t": time.perf_counter()}
    num_nodes = task.num_clients

    def evaluate(rnd: int, arrays: list[np.ndarray], extra: dict) -> dict:
        t0 = time.perf_counter()
        set_params(model, arrays)
        res = task.evaluate(model, xt, yt)
        eval_s = time.perf_counter() - t0
        m = meter.take()
        if rnd == 0:
            log_.initial = res
        else:
            wall = t0 - mark["t"]
            entry = {"round": rnd, "accuracy": res["accuracy"], "loss": res["loss"],
                     "bytes_up_per_client": m["bytes_up_per_client"],
                     "bytes_down_per_client": m["bytes_down_per_client"],
                     "clients": m["clients_contacted"], "round_s": wall,
                     "server_s": max(wall - m["wait_s"], 0.0), "eval_s": eval_s}
            entry.update(extra)
            log_.rounds.append(entry)
            if log_.progress is not None:
                log_.progress(entry)
        log_.final_arrays = [np.array(a) for a in arrays]
        mark["t"] = time.perf_counter()
        return res

    if cfg.aggregation == "secagg+":
        from flwr.common import ndarrays_to_parameters
        from flwr.server import LegacyContext, ServerConfig
        from flwr.server.strategy import FedAvg as LegacyFedAvg
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        def fit_metrics(results):
            clipped = sum(int(m.get("veil.secagg.clipped", 0)) for _, m in results)
            if clipped:
                log(WARNING, "SecAgg+ clipped %d value(s) silently this round "
                    "(clipping_range=%g)", clipped, cfg.clipping_range)
            return {"veil.secagg.clipped": clipped}

        def legacy_eval(rnd, ndarrays, _config):
            clipped, included = _rounds.pop(rnd, (0, 0))
            if rnd and not included:
                # SecAgg+ halts a round (too few clients for its threshold) without an error
                log(WARNING, "round %d: SecAgg+ halted, the global model did not change", rnd)
            res = evaluate(rnd, ndarrays, {"secagg_clipped": clipped, "included": included})
            return res["loss"], {"accuracy": res["accuracy"]}

        _rounds: dict[int, tuple[int, int]] = {}

        class _Strategy(LegacyFedAvg):
            def aggregate_fit(self, server_round, results, failures):
                out = super().aggregate_fit(server_round, results, failures)
                _rounds[server_round] = (int(out[1].get("veil.secagg.clipped", 0)), len(results))
                return out

        strategy = _Strategy(
            fraction_fit=cfg.fraction, fraction_evaluate=0.0, min_fit_clients=2,
            min_evaluate_clients=0, min_available_clients=num_nodes,
            initial_parameters=ndarrays_to_parameters(init), evaluate_fn=legacy_eval,
            on_fit_config_fn=lambda rnd: dict(task.to_config(), **{"server-round": rnd}),
            fit_metrics_aggregation_fn=fit_metrics)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=cfg.secagg_shares, reconstruction_threshold=cfg.secagg_threshold,
            max_weight=cfg.weight_bound, clipping_range=cfg.clipping_range,
            quantization_range=cfg.quantization_range, modulus_range=cfg.modulus_range,
            timeout=cfg.timeout))
        workflow(grid, legacy)
        return

    dp = None
    if cfg.dp_noise > 0:
        dp = ClientDP(noise_multiplier=cfg.dp_noise, clip=cfg.dp_clip, sample_rate=cfg.fraction,
                      population=num_nodes, adaptive=cfg.dp_adaptive,
                      accountant=cfg.dp_accountant, delta=cfg.delta)
    strategy = VeilFedAvg(
        aggregation=cfg.aggregation, dp=dp, proximal_mu=task.proximal_mu,
        twoserver=TwoServerConfig(cfg.ring_bits, cfg.frac_bits, cfg.weight_bound,
                                  max(num_nodes, 1)),
        task_config=task.to_config(), fraction_train=cfg.fraction,
        min_train_nodes=1 if dp else 2, min_available_nodes=num_nodes)

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        extra = dict(strategy.rounds.get(rnd, {}))
        res = evaluate(rnd, arrays.to_numpy_ndarrays(), extra)
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})

    initial = ArrayRecord({k: Array(a) for k, a in zip(keys, init, strict=True)})
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=cfg.rounds,
                   timeout=cfg.timeout, evaluate_fn=evaluate_fn)


def make_server_app(cfg: FLConfig | None = None, log_: RoundLog | None = None) -> ServerApp:
    """A ServerApp for ``cfg`` (or, when ``None``, for the run config of a deployment)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_cfg = cfg if cfg is not None else FLConfig.from_flat(dict(context.run_config))
        rounds = log_ if log_ is not None else RoundLog(_log_line)
        _run_server(grid, context, run_cfg, rounds)
        report = context.run_config.get("veil.report")
        if report:  # a deployment: hand the history back through a file, written atomically
            import json
            import os
            tmp = f"{report}.tmp"
            with open(tmp, "w") as f:
                json.dump({"config": run_cfg.to_flat(), "initial": rounds.initial,
                           "rounds": rounds.rounds}, f)
            os.replace(tmp, report)

    return app


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def _log_line(entry: dict) -> None:
    log(INFO, "veil round %s: %s", entry["round"],
        {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()})


#: The ServerApp of a deployment (``flwr run``): reads its FLConfig from the run config.
server_app = make_server_app()
