"""One federated run's settings, as one flat, serialisable dataclass.

The same :class:`FLConfig` drives the simulation engine (:func:`veil.fl.simulate`),
the deployment engine (as Flower's run config) and the CLI.

Example
-------
>>> cfg = FLConfig(task=Task(model="mlp", dataset="digits", num_clients=10), rounds=3,
...                aggregation="two-server")
>>> FLConfig.from_flat(cfg.to_flat()) == cfg
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from veil.fl.task import Task

AGGREGATIONS = ("plain", "secagg+", "two-server")
# round-config keys the ClientApp reads
KEY_PK_B = "veil.twoserver.pk-b"
KEY_DP_CLIP = "veil.dp.clip"


@dataclass(frozen=True)
class FLConfig:
    """Settings of a federated run.

    Parameters
    ----------
    task:
        Model, dataset, partition and local recipe.
    rounds, fraction:
        Number of rounds; fraction of clients sampled per round (the DP sampling rate q
        when ``dp_noise > 0``).
    aggregation:
        ``"plain"`` (Flower's FedAvg), ``"secagg+"`` (Flower's SecAgg+),
        ``"two-server"`` (Veil's two aggregators).
    dp_noise, dp_clip, dp_adaptive, dp_accountant, delta:
        Client-level central DP (``dp_noise`` is the noise multiplier z; 0 = off).
    ring_bits, frac_bits:
        Two-server ring and fixed point.
    secagg_shares, secagg_threshold, clipping_range, quantization_range, modulus_range,
    max_weight:
        SecAgg+ parameters (Flower's ``SecAggPlusWorkflow``); ``max_weight`` also bounds
        the two-server weight.
    """

    task: Task = field(default_factory=Task)
    rounds: int = 3
    fraction: float = 1.0
    aggregation: str = "plain"
    dp_noise: float = 0.0
    dp_clip: float = 1.0
    dp_adaptive: bool = False
    dp_accountant: str = "rdp"
    delta: float = 1e-5
    ring_bits: int = 32
    frac_bits: int = 16
    secagg_shares: float = 1.0
    secagg_threshold: float = 0.5
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    max_weight: float = 0.0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, "
                             f"got {self.aggregation!r}")
        if self.rounds < 1 or not 0 < self.fraction <= 1:
            raise ValueError("rounds must be >= 1 and fraction in (0, 1]")
        if self.dp_noise < 0 or self.dp_clip <= 0:
            raise ValueError("dp_noise must be >= 0 and dp_clip > 0")
        if self.dp_noise > 0 and self.aggregation == "secagg+":
            raise ValueError("client-level DP with SecAgg+ is not wired (Flower's SecAgg+ "
                             "clips parameters, not updates): use --aggregation two-server")

    @property
    def weight_bound(self) -> float:
        """The largest client weight (examples): ``max_weight`` or the largest partition."""
        return self.max_weight or float(max(self.task.partition_sizes()))

    def to_flat(self) -> dict:
        """Flat ``{key: value}`` (Flower run config): task fields prefixed ``task.``."""
        out = {f"task.{k}": v for k, v in self.task.to_config().items()}
        out.update({k: v for k, v in asdict(self).items() if k != "task"})
        return out

    @classmethod
    def from_flat(cls, flat: dict) -> FLConfig:
        task = Task.from_config({k[5:]: v for k, v in flat.items() if k.startswith("task.")})
        names = {f.name for f in fields(cls)} - {"task"}
        kw = {k: v for k, v in flat.items() if k in names}
        for k in ("quantization_range", "modulus_range", "rounds", "ring_bits", "frac_bits"):
            if k in kw:
                kw[k] = int(kw[k])
        return cls(task=task, **kw)
