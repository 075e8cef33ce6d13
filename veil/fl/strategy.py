"""Veil's Flower strategy: FedAvg/FedProx with two-server secure aggregation and client-level DP.

:class:`VeilFedAvg` is a Flower message-API strategy (a subclass of
``flwr.serverapp.strategy.FedAvg``, run by Flower's ``Strategy.start`` loop):

- ``aggregation="plain"``: Flower's own weighted FedAvg of the returned models;
- ``aggregation="two-server"``: clients upload shares (:mod:`veil.fl.twoserver`);
  aggregator A is this ServerApp, aggregator B holds the sealing key; only the
  sum of the included clients' updates is revealed;
- ``dp=ClientDP(...)``: Poisson client sampling, client-side clipping, Gaussian
  noise on the sum from the CSPRNG (added by both aggregators under two-server
  aggregation), fixed denominator ``qN``, ε from Veil's accountant.

FedProx is FedAvg with ``proximal_mu > 0`` sent to the clients (key
``"proximal-mu"``, as Flower's ``FedProx`` does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from veil.csprng import CSPRNG
from veil.fl.apps import flatten
from veil.fl.config import KEY_DP_CLIP, KEY_PK_B
from veil.fl.dp import ClientDP
from veil.fl.twoserver import Aggregator, TwoServerConfig, reveal


def unflatten(flat: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    out, i = {}, 0
    for key, arr in zip(like.keys(), like.to_numpy_ndarrays(), strict=True):
        n = arr.size
        out[key] = Array(flat[i:i + n].reshape(arr.shape).astype(arr.dtype))
        i += n
    return ArrayRecord(out)


class VeilFedAvg(FedAvg):
    """FedAvg / FedProx with optional two-server secure aggregation and client-level DP.

    Parameters
    ----------
    aggregation:
        ``"plain"`` or ``"two-server"``.
    twoserver:
        Ring parameters for two-server aggregation (noise is set from ``dp``).
    dp:
        Client-level DP; ``None`` for none.
    proximal_mu:
        FedProx's μ, sent to the clients.
    task_config:
        Flat config values (the :class:`veil.fl.task.Task`) sent with every round.
    fraction_train, min_train_nodes, min_available_nodes:
        Flower's sampling (ignored under DP, which samples by Poisson).
    """

    def __init__(self, *, aggregation: str = "plain", twoserver: TwoServerConfig | None = None,
                 dp: ClientDP | None = None, proximal_mu: float = 0.0,
                 task_config: dict | None = None, **fedavg) -> None:
        fedavg.setdefault("fraction_evaluate", 0.0)
        super().__init__(**fedavg)
        if aggregation not in ("plain", "two-server"):
            raise ValueError(f"VeilFedAvg aggregates 'plain' or 'two-server', not {aggregation!r}")
        if dp is not None and dp.adaptive and aggregation != "plain":
            raise ValueError("adaptive clipping needs each client's clipped bit; under secure "
                             "aggregation the server cannot see it: use fixed clipping")
        self.aggregation, self.dp, self.proximal_mu = aggregation, dp, proximal_mu
        ts = twoserver or TwoServerConfig()
        if dp is not None:
            # uniform weights (the DP sum), noise by each aggregator (the clip is fixed:
            # adaptive clipping is refused above)
            ts = dataclasses.replace(ts, max_weight=1.0, noise_std=dp.noise_std)
        self.twoserver = ts
        self.task_config = dict(task_config or {})
        self.rng = CSPRNG()
        self.rounds: dict[int, dict] = {}
        self._current: ArrayRecord | None = None
        self._pair: tuple[Aggregator, Aggregator] | None = None
        self._sampled = 0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = arrays
        cfg = ConfigRecord(dict(config))
        cfg.update(self.task_config)
        cfg["server-round"] = server_round
        cfg["proximal-mu"] = float(self.proximal_mu)
        if self.dp is not None:
            cfg[KEY_DP_CLIP] = float(self.dp.clip)
        if self.aggregation == "two-server":
            self._pair = (Aggregator("A", self.twoserver), Aggregator("B", self.twoserver))
            cfg[KEY_PK_B] = self._pair[1].public_key
            cfg["veil.twoserver.ring-bits"] = self.twoserver.ring_bits
            cfg["veil.twoserver.frac-bits"] = self.twoserver.frac_bits
            cfg["veil.twoserver.max-weight"] = float(self.twoserver.max_weight)
            cfg["veil.twoserver.max-clients"] = self.twoserver.max_clients
        if self.dp is not None:
            nodes = self.dp.sample(sorted(grid.get_node_ids()), self.rng)
            self._sampled = len(nodes)
            log(INFO, "configure_train: Poisson-sampled %d clients (q=%.4g)", len(nodes),
                self.dp.sample_rate)
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
            return self._construct_messages(record, nodes, MessageType.TRAIN)
        messages = list(super().configure_train(server_round, arrays, cfg, grid))
        self._sampled = len(messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        cfg = ConfigRecord(dict(config))
        cfg.update(self.task_config)  # clients rebuild the task from the config
        return super().configure_evaluate(server_round, arrays, cfg, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        for r in replies:
            if r.has_error():
                log(WARNING, "round %d: client %d failed and is left out: %s", server_round,
                    r.metadata.src_node_id, r.error.reason)
        start = time.perf_counter()
        info = {"sampled": self._sampled, "returned": len(valid)}
        assert self._current is not None
        current = flatten(self._current.to_numpy_ndarrays())
        if not valid and self.dp is None:
            self.rounds[server_round] = dict(info, included=0, aggregate_s=0.0)
            return None, None
        if self.dp is None and self.aggregation == "plain":
            arrays, metrics = super().aggregate_train(server_round, valid)
            info["included"] = len(valid)
        else:
            total, included, weight = self._sum(valid, current.size, info)
            if not included and self.dp is None:
                self.rounds[server_round] = dict(info, included=0, aggregate_s=0.0)
                return None, None
            if self.dp is not None:
                if self.aggregation == "plain" or not included:
                    # an empty round is released with the same noise as any other: skipping
                    # it would tell a client's presence from a round without noise; with two
                    # aggregators the released noise has twice the variance
                    std = self.dp.noise_std * (1.0 if self.aggregation == "plain" else 2 ** 0.5)
                    total = total + self.rng.normal((total.size,)).numpy() * std
                if len(valid) < self._sampled:
                    log(WARNING, "round %d: %d of %d sampled clients returned; the guarantee "
                        "holds (fixed denominator qN) but the average shrinks", server_round,
                        len(valid), self._sampled)
                mean = total / self.dp.expected_clients
            else:
                mean = total / weight
            arrays = unflatten(current + mean, self._current)
            metrics = MetricRecord({"loss": float(np.mean(
                [r.content["metrics"]["loss"] for r in valid]))} if valid else {})
            info["included"] = included
            if self.dp is not None:
                self.dp.rounds_done += 1
                if self.dp.adaptive:
                    bits = sum(float(r.content["metrics"]["veil.dp.fitted"]) for r in valid)
                    self.dp.update_clip(bits, self.rng)
                info["epsilon"] = self.dp.epsilon()
                info["clip"] = self.dp.clip
        info["aggregate_s"] = time.perf_counter() - start
        self.rounds[server_round] = info
        return arrays, metrics

    def _sum(self, valid: list[Message], size: int, info: dict) -> tuple[np.ndarray, int, float]:
        """Σ w·Δ over the included clients, their count, Σw (weights 1 under DP)."""
        if self.aggregation == "two-server":
            assert self._pair is not None
            a, b = self._pair
            for r in valid:
                cid = r.metadata.src_node_id
                try:
                    a.receive(cid, r.content["veil.share"]["share-a"].numpy())
                    b.receive(cid, r.content["veil.seed"]["sealed-seed"])
                except (KeyError, ValueError) as exc:
                    log(WARNING, "client %d's upload is malformed and left out: %s", cid, exc)
            self._pair = None
            if not a.received() & b.received():
                return np.zeros(size), 0, 0.0
            mean, weight, included = reveal(a, b, size)
            scale = self.twoserver.max_weight
            return mean * weight * scale, len(included), weight * scale
        current = flatten(self._current.to_numpy_ndarrays())
        total = np.zeros(size)
        weight = 0.0
        for r in valid:
            delta = flatten(r.content["arrays"].to_numpy_ndarrays()) - current
            if self.dp is not None:
                # the server clips too: a client's bound must not depend on its honesty
                delta, _ = self.dp.clip_update(delta)
                w = 1.0
            else:
                w = float(r.content["metrics"][self.weighted_by_key])
            total += w * delta
            weight += w
        return total, len(valid), weight
