"""Private training: a model owner and a data owner train a PyTorch model on secret shares.

The model owner (party 0) secret-shares the initial weights; the data owner
(party 1) secret-shares the training data batch by batch; a dealer supplies
the correlated randomness (triples, FSS keys, truncation keys) offline, one step
at a time. Forward, loss gradient, backward and SGD all run on shares with
exact truncation (:mod:`veil.mpc.truncation`), so the parties compute bit for
bit what the plaintext fixed-point twin (:func:`twin_train`) computes: no
probabilistic failure, no retried batch, and nothing opened mid-training — the
loss, logits, predictions, gradients and accuracy stay shared. At the end the
trained weights are revealed only to ``reveal_to``; the report's ``opened``
list names every value that was revealed, and to whom.

- :func:`secure_train`: one call -> ``(trained model, report)``;
- :func:`train_job`: the per-party program, for custom launches;
- :func:`twin_train`: the same training in plaintext fixed point (the reference).

Example
-------
>>> import torch, veil
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
>>> trained, report = veil.secure_train(net, x, y, epochs=1, lr=0.05)   # doctest: +SKIP
>>> report.opened                                                         # doctest: +SKIP
[{'value': 'trained weights and biases', 'to': [0]}]
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.nn.backprop import (
    TrainState,
    check_trainable,
    correct_count,
    correct_count_plan,
    step_plan,
    train_step,
    twin_params,
    twin_predict,
    twin_step,
)
from veil.nn.fixedpoint import decode, encode
from veil.nn.graph import SecureGraph, convert
from veil.nn.losses import check_loss
from veil.nn.ops import get_op
from veil.nn.optim import SGDConfig
from veil.nn.secure import (
    DATA_OWNER,
    MODEL_OWNER,
    SharedWeights,
    private_save,
    save_shares,
    share_weights,
)

Progress = Callable[[int, int], None]

#: Fractional bits of private training: 16 lose MSE's small gradients (Network1 on 20k
#: MNIST images: 40% test accuracy at 16 bits, 77% at 20 bits as float SGD's 76%).
TRAIN_FRAC_BITS = 20


@dataclass
class TrainingReport:
    """What a private training cost and revealed.

    Attributes
    ----------
    epochs, batch_size, samples, batches: the run's shape (batches per epoch).
    transport: ``"local"`` or ``"tcp"``.
    offline_s, online_s: summed over all steps (the slower party's clock per step);
        offline is the dealer generating and delivering material, online the protocol.
    offline_bytes: dealer material received by both parties, all steps.
    online_bytes: bytes sent by both parties during the steps (data sharing included).
    rounds_per_batch: online rounds of one full-size step (the longer party's count).
    bytes_per_batch: online bytes of one full-size step (both parties).
    epoch_s: wall time of each epoch (offline and online).
    test_accuracy: accuracy on ``(x_test, y_test)`` computed on shares (``None`` without).
    curve: training accuracy per epoch, only when asked for (``curve=True``).
    opened: every value revealed during the run: ``{"value": ..., "to": [ranks]}``.
    """

    epochs: int
    batch_size: int
    samples: int
    batches: int
    transport: str = "local"
    loss: str = "cross_entropy"
    offline_s: float = 0.0
    online_s: float = 0.0
    offline_bytes: int = 0
    online_bytes: int = 0
    rounds_per_batch: int = 0
    bytes_per_batch: int = 0
    epoch_s: list[float] = field(default_factory=list)
    test_accuracy: float | None = None
    curve: list[float] = field(default_factory=list)
    opened: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        mb = 1e6
        acc = "" if self.test_accuracy is None else f"; test accuracy {self.test_accuracy:.4f}"
        return (f"{self.epochs} epoch(s) of {self.batches} batches of {self.batch_size} over "
                f"{self.transport}: offline {self.offline_s:.1f} s "
                f"({self.offline_bytes / mb:.0f} MB of dealer material), online "
                f"{self.online_s:.1f} s ({self.online_bytes / mb:.0f} MB); per batch "
                f"{self.rounds_per_batch} rounds, {self.bytes_per_batch / mb:.2f} MB{acc}; "
                f"opened: {', '.join(o['value'] + ' to ' + str(o['to']) for o in self.opened)}")


# --------------------------------------------------------------------------- checks

def _prepare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str
             ) -> tuple[SecureGraph, int]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_loss(loss)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError("x must be a float tensor (samples, *input_shape)")
    graph = convert(model, tuple(x.shape[1:]), fold_batchnorm=False)
    check_trainable(graph)
    classes = graph.output_shape[0]
    check_data(graph, x, y, classes, "x", "y")
    return graph, classes


def check_data(graph: SecureGraph, x: torch.Tensor, y: torch.Tensor, classes: int,
               xname: str = "x", yname: str = "y") -> None:
    """Clear errors for inputs and labels private training cannot use."""
    try:
        graph.check_input(x)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{xname}: {exc}") from None
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() \
            or y.dtype == torch.bool:
        raise ValueError(f"{yname} must be a 1-D integer tensor of class labels")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{xname} has {x.shape[0]} samples but {yname} has {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(f"{yname} has labels outside 0..{classes - 1} (the model outputs "
                         f"{classes} classes): found {int(y.min())}..{int(y.max())}")


def _batch_sizes(n: int, batch_size: int) -> list[int]:
    return [min(batch_size, n - i) for i in range(0, n, batch_size)]


def epoch_order(n: int, seed: int | None, epoch: int) -> np.ndarray:
    """The data owner's sample order in ``epoch`` (identity when ``seed`` is ``None``)."""
    if seed is None:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)  # not-secret: data order


def _onehot(y: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), classes).double()


# --------------------------------------------------------------------------- per-party job

@dataclass(frozen=True)
class TrainConfig:
    """The public settings both parties run with (no data, no weights)."""

    epochs: int
    batch_size: int
    samples: int
    test_samples: int
    loss: str
    sgd: SGDConfig
    reveal_to: int | None
    curve: bool = False
    frac_bits: int = TRAIN_FRAC_BITS
    share_files: tuple[str, str] | None = None
    checkpoint_dir: str | None = None
    resume: bool = False


def train_job(party, private: Any, public: SecureGraph, cfg: TrainConfig,
              progress: Progress | None = None) -> dict:
    """The SPMD program of both computing parties.

    ``private`` is the model owner's state dict (party 0) or the data owner's
    ``{"x", "y", "x_test", "y_test", "seed"}`` (party 1). Returns this party's
    measurements, and the revealed weights for ``cfg.reveal_to``.
    """
    from veil.nn.inference import _warm_up

    rank, f = party.rank, cfg.frac_bits
    graph = public.with_weights(private) if rank == MODEL_OWNER else public
    data = private if rank == DATA_OWNER else None
    classes = graph.output_shape[0]
    _warm_up()
    ckpt = _checkpoint_path(cfg, rank)
    state, start = None, 0
    if cfg.resume:
        state, start = _load_checkpoint(party, ckpt, public, cfg)
    if state is None:
        state = TrainState.start(party, share_weights(party, graph, owner=MODEL_OWNER))
    sizes = _batch_sizes(cfg.samples, cfg.batch_size)
    plans = {b: step_plan(graph, b, cfg.loss, f) + (correct_count_tail(classes, b, f)
                                                     if cfg.curve else [])
             for b in set(sizes)}
    steps, epoch_s, curve = [], [], []
    for epoch in range(start, cfg.epochs):
        t_epoch = time.perf_counter()
        order = epoch_order(cfg.samples, data["seed"], epoch) if data is not None else None
        hits = None
        for b, size in enumerate(sizes):
            party.barrier()
            s0 = party.stats()
            party.prefetch(plans[size])
            party.barrier()
            s1 = party.stats()
            xb = tb = None
            if data is not None:
                idx = torch.from_numpy(order[b * cfg.batch_size:b * cfg.batch_size + size])
                xb, tb = data["x"][idx], _onehot(data["y"][idx], classes)
            x = party.share(xb, owner=DATA_OWNER, shape=(size, *graph.input_shape))
            t = party.share(tb, owner=DATA_OWNER, shape=(size, classes))
            logits = train_step(party, state, x, t, cfg.loss, cfg.sgd)
            if cfg.curve:
                h = _hits(logits, t)
                hits = h if hits is None else hits + h
            s2 = party.stats()
            steps.append({"size": size, "offline_s": s1["offline_s"] - s0["offline_s"],
                          "offline_bytes": s1["offline_bytes_received"]
                          - s0["offline_bytes_received"],
                          "online_s": s2["online_s"] - s1["online_s"],
                          "online_bytes": s2["bytes_sent"] - s1["bytes_sent"],
                          "rounds": s2["rounds"] - s1["rounds"]})
            if progress is not None and rank == DATA_OWNER:
                progress(epoch * len(sizes) + b + 1, cfg.epochs * len(sizes))
        if cfg.curve:  # one scalar per epoch, opened on request only
            curve.append(hits.reveal(to=cfg.reveal_to, dtype=torch.float64))
        epoch_s.append(time.perf_counter() - t_epoch)
        if ckpt is not None:
            _save_checkpoint(ckpt, state, epoch + 1, public, cfg)
    out: dict[str, Any] = {"steps": steps, "epoch_s": epoch_s, "curve": curve}
    if cfg.test_samples:
        out["test_correct"] = _test_correct(party, state, data, cfg, graph)
    if cfg.reveal_to is None:  # nobody learns the weights: each party keeps its shares
        save_shares(state.model, cfg.share_files[rank])
        out["weights"] = None
    else:
        out["weights"] = {
            f"{name}.{kind}": _unview(graph, name, kind,
                                      p.reveal(to=cfg.reveal_to, dtype=torch.float64))
            for (name, kind), p in state.model.params.items()}
    return out


def _checkpoint_path(cfg: TrainConfig, rank: int) -> str | None:
    import os

    if cfg.checkpoint_dir is None:
        return None
    return os.path.join(cfg.checkpoint_dir, f"party{rank}-checkpoint.pt")


def _fingerprint(public: SecureGraph, cfg: TrainConfig) -> str:
    """What a checkpoint must have been made with: architecture and public settings."""
    return repr((public.signature(), cfg.batch_size, cfg.samples, cfg.loss, cfg.sgd,
                 cfg.frac_bits))


def _save_checkpoint(path: str, state: TrainState, epochs_done: int, public: SecureGraph,
                     cfg: TrainConfig) -> None:
    """This party's shares after ``epochs_done`` epochs, written atomically (owner-only)."""
    blob = {"epochs_done": epochs_done, "fingerprint": _fingerprint(public, cfg),
            "params": {f"{n}.{k}": p.share.cpu() for (n, k), p in state.model.params.items()},
            "velocity": {f"{n}.{k}": v.share.cpu() for (n, k), v in state.velocity.items()}}
    private_save(blob, path)


def _load_checkpoint(party, path: str | None, public: SecureGraph, cfg: TrainConfig
                     ) -> tuple[TrainState | None, int]:
    """This party's state from its checkpoint (both parties must be at the same epoch)."""
    import os

    from veil.nn.secure import SharedModel, parameter_shapes

    blob = None
    if path is not None and os.path.exists(path):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("fingerprint") != _fingerprint(public, cfg):
            raise ValueError(f"{path} was made by a different model or training settings")
    mine = -1 if blob is None else int(blob["epochs_done"])
    theirs = party.exchange(mine)  # one round: both resume from the same epoch, or neither
    if theirs != mine:
        raise ValueError(f"the parties' checkpoints differ (party {party.rank} is at epoch "
                         f"{mine}, its peer at {theirs}; -1: none): resume needs both")
    if blob is None:
        return None, 0
    params, velocity = {}, {}
    for name, kind, _ in parameter_shapes(public):
        key = f"{name}.{kind}"
        params[(name, kind)] = party.from_share(blob["params"][key], cfg.frac_bits)
        velocity[(name, kind)] = party.from_share(blob["velocity"][key], cfg.frac_bits)
    return TrainState(SharedModel(public, params), velocity), mine


def correct_count_tail(classes: int, batch: int, frac_bits: int) -> list:
    """The dealer requests of counting a step's correct predictions (``curve=True``)."""
    from veil.mpc import exact
    from veil.nn.ops.common import gate_plan

    return gate_plan("argmax", (batch, classes), dim=-1) + exact.product_plan(
        "beaver", (batch, classes), (batch, classes), frac_bits)


def _hits(logits, targets):
    from veil.mpc import exact

    return exact.product(logits.argmax(dim=-1), targets).sum()


def _unview(graph: SecureGraph, name: str, kind: str, t: torch.Tensor | None):
    if t is None:
        return None
    layer = graph.layer(name)
    return get_op(layer.op).param_unview(layer, kind, t)


def _test_correct(party, state: TrainState, data, cfg: TrainConfig, graph: SecureGraph):
    classes = graph.output_shape[0]
    total = None
    for i, size in enumerate(_batch_sizes(cfg.test_samples, cfg.batch_size)):
        party.prefetch(correct_count_plan(graph, size, cfg.frac_bits))
        xb = tb = None
        if data is not None:
            sl = slice(i * cfg.batch_size, i * cfg.batch_size + size)
            xb, tb = data["x_test"][sl], _onehot(data["y_test"][sl], classes)
        x = party.share(xb, owner=DATA_OWNER, shape=(size, *graph.input_shape))
        t = party.share(tb, owner=DATA_OWNER, shape=(size, classes))
        c = correct_count(party, state.model, x, t)
        total = c if total is None else total + c
    return total.reveal(dtype=torch.float64)  # opened to both parties


# --------------------------------------------------------------------------- public API

def secure_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    loss: str = "cross_entropy",
    transport: str = "local",
    reveal_to: int | None = MODEL_OWNER,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    curve: bool = False,
    timeout: float = 600.0,
    threads: int | None = None,
    progress: Progress | None = None,
    shares_dir: str | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    frac_bits: int = TRAIN_FRAC_BITS,
) -> tuple[nn.Module | SharedWeights, TrainingReport]:
    """Train ``model`` on ``(x, y)`` with two-party computation; nothing is opened until the end.

    The model owner (party 0) shares the initial weights of ``model``, the data
    owner (party 1) shares ``x`` and ``y``; both run SGD on shares with the
    dealer's material. Only ``reveal_to`` learns the trained weights.

    Parameters
    ----------
    model: an ``nn.Module`` of Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten and
        residual additions, ending in ``(batch, classes)`` logits.
    x, y: float inputs ``(samples, *input_shape)`` and integer labels ``(samples,)``.
    epochs, batch_size, lr, momentum, weight_decay: SGD as ``torch.optim.SGD`` (the last
        batch of an epoch may be smaller).
    loss: ``"cross_entropy"`` (private softmax) or ``"mse"`` (on one-hot targets).
    transport: ``"local"`` (threads) or ``"tcp"`` (three processes; each computing
        process receives only its own private input).
    reveal_to: who learns the trained weights: 0 (the model owner), 1, or ``None``
        (nobody: each party writes its shares to its own file in ``shares_dir`` and a
        :class:`~veil.nn.secure.SharedWeights` handle is returned instead of a model;
        :func:`veil.nn.inference.serve` runs it as it is, so a model can be trained and
        served without anyone ever seeing it).
    x_test, y_test: a test set held by the data owner: the accuracy is computed on
        shares and only the count of correct predictions is opened (to both).
    shuffle, seed: the data owner shuffles the samples every epoch (its own choice;
        ``seed`` makes the order reproducible).
    curve: also count correct training predictions on shares and open one accuracy per
        epoch to ``reveal_to`` (to both when it is ``None``; listed in ``report.opened``).
    shares_dir: where the parties' share files go with ``reveal_to=None`` (default: a new
        private temporary folder).
    checkpoint_dir: after every epoch, each party writes its shares of the weights and
        velocities there (its own file, atomically, owner-only).
    resume: continue from the checkpoints in ``checkpoint_dir`` (both parties must have
        one, of the same epoch, model and settings) after a crash; the dealer's material
        is fresh for every step, so nothing is reused. Give the same ``seed`` to replay
        the same sample order.
    frac_bits: fixed-point precision of the shares (20: see :data:`TRAIN_FRAC_BITS`).

    Returns
    -------
    model: a trained copy of ``model`` (``reveal_to`` 0 or 1), or the
        :class:`~veil.nn.secure.SharedWeights` handle (``reveal_to=None``).
    report: :class:`TrainingReport`.
    """
    graph, classes = _prepare(model, x, y, loss)
    if transport not in ("local", "tcp"):
        raise ValueError(f"transport must be 'local' or 'tcp', got {transport!r}")
    if reveal_to not in (0, 1, None):
        raise ValueError(f"reveal_to must be 0, 1 or None, got {reveal_to!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    if x_test is not None:
        check_data(graph, x_test, y_test, classes, "x_test", "y_test")
    sgd = SGDConfig(lr, momentum, weight_decay)
    files = None
    if reveal_to is None:
        import os
        import tempfile

        folder = shares_dir or tempfile.mkdtemp(prefix="veil-shared-model-")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        files = tuple(os.path.join(folder, f"party{r}-shares.pt") for r in (0, 1))
    cfg = TrainConfig(epochs, batch_size, int(x.shape[0]),
                      0 if x_test is None else int(x_test.shape[0]), loss, sgd, reveal_to,
                      curve, frac_bits, share_files=files, checkpoint_dir=checkpoint_dir,
                      resume=resume)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir of the interrupted run")
    if checkpoint_dir is not None:
        import os

        os.makedirs(checkpoint_dir, mode=0o700, exist_ok=True)
    _check_range(graph, x, cfg)
    if shuffle and seed is None:
        seed = secrets.randbits(63)
    data = {"x": x.detach().double().cpu(), "y": y.detach().long().cpu(),
            "x_test": None if x_test is None else x_test.detach().double().cpu(),
            "y_test": None if y_test is None else y_test.detach().long().cpu(),
            "seed": seed if shuffle else None}
    public = graph.public()
    from veil.mpc.runtime import run

    if transport == "local":
        results = run(train_job, transport="local", timeout=timeout, frac_bits=frac_bits,
                      inputs=(graph.state(), data), args=(public, cfg, progress))
    else:
        results = run(train_job, transport="tcp", timeout=timeout, threads=threads,
                      frac_bits=frac_bits,
                      start_method="spawn", inputs=(graph.state(), data), args=(public, cfg))
    return _collect(model, graph, results, cfg, transport)


def _check_range(graph: SecureGraph, x: torch.Tensor, cfg: TrainConfig) -> None:
    limit = 2.0 ** (62 - 2 * cfg.frac_bits - 8)
    if float(x.abs().max()) >= limit:
        raise ValueError(f"inputs must stay below {limit:g} in magnitude in fixed point with "
                         f"{cfg.frac_bits} fractional bits; scale them first")


def _collect(model: nn.Module, graph: SecureGraph, results: list, cfg: TrainConfig,
             transport: str) -> tuple[nn.Module | SharedWeights, TrainingReport]:
    r0, r1 = results
    full = [i for i, s in enumerate(r0["steps"]) if s["size"] == cfg.batch_size] or [0]
    pairs = list(zip(r0["steps"], r1["steps"], strict=True))
    report = TrainingReport(
        epochs=cfg.epochs, batch_size=cfg.batch_size, samples=cfg.samples,
        batches=len(_batch_sizes(cfg.samples, cfg.batch_size)), transport=transport,
        loss=cfg.loss,
        offline_s=sum(max(a["offline_s"], b["offline_s"]) for a, b in pairs),
        online_s=sum(max(a["online_s"], b["online_s"]) for a, b in pairs),
        offline_bytes=int(sum(a["offline_bytes"] + b["offline_bytes"] for a, b in pairs)),
        online_bytes=int(sum(a["online_bytes"] + b["online_bytes"] for a, b in pairs)),
        rounds_per_batch=int(max(max(pairs[i][0]["rounds"], pairs[i][1]["rounds"])
                                 for i in full)),
        bytes_per_batch=int(pairs[full[0]][0]["online_bytes"] + pairs[full[0]][1]["online_bytes"]),
        epoch_s=[max(a, b) for a, b in zip(r0["epoch_s"], r1["epoch_s"], strict=True)],
    )
    who = cfg.reveal_to
    told = [0, 1] if who is None else [who]
    if cfg.curve:
        report.curve = [float(c) / cfg.samples for c in (r0, r1)[told[-1]]["curve"]]
        report.opened.append({"value": "training accuracy of each epoch (one count per epoch)",
                              "to": told})
    if cfg.test_samples:
        report.test_accuracy = float(r0["test_correct"]) / cfg.test_samples
        report.opened.append({"value": "test accuracy (the count of correct predictions)",
                              "to": [0, 1]})
    if who is None:
        return SharedWeights(graph.public(), cfg.share_files, cfg.frac_bits), report
    report.opened.append({"value": "trained weights and biases", "to": [who]})
    trained = copy.deepcopy(model)
    load_state(trained, graph, (r0, r1)[who]["weights"])
    return trained, report


def load_state(model: nn.Module, graph: SecureGraph, state: dict[str, torch.Tensor]) -> None:
    """Copy trained parameters (keys ``'<layer>.weight'``/``'.bias'``) into ``model``."""
    with torch.no_grad():
        for layer in graph.layers:
            for kind in ("weight", "bias"):
                key = f"{layer.name}.{kind}"
                if key in state:
                    param = getattr(model.get_submodule(layer.target), kind)
                    param.copy_(state[key].reshape(param.shape).to(param.dtype))


# --------------------------------------------------------------------------- plaintext twin

def twin_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
               batch_size: int = 128, lr: float, momentum: float = 0.9,
               weight_decay: float = 0.0, loss: str = "cross_entropy",
               seed: int | None = None, frac_bits: int = TRAIN_FRAC_BITS
               ) -> nn.Module:
    """:func:`secure_train`'s computation in plaintext fixed point: the parties' reference.

    With the same ``seed`` (and ``shuffle``), :func:`secure_train` ends with exactly
    these weights. Returns a trained copy of ``model``.
    """
    graph, classes = _prepare(model, x, y, loss)
    sgd = SGDConfig(lr, momentum, weight_decay)
    params = twin_params(graph, frac_bits)
    velocity: dict = {}
    n = int(x.shape[0])
    xq, t = encode(x.double(), frac_bits), encode(_onehot(y, classes), frac_bits)
    for epoch in range(epochs):
        order = torch.from_numpy(epoch_order(n, seed, epoch))
        for i, size in enumerate(_batch_sizes(n, batch_size)):
            idx = order[i * batch_size:i * batch_size + size]
            twin_step(graph, params, velocity, xq[idx], t[idx], loss, sgd, frac_bits)
    trained = copy.deepcopy(model)
    load_state(trained, graph, {f"{name}.{kind}": _unview(graph, name, kind, decode(v, frac_bits))
                                for (name, kind), v in params.items()})
    return trained


def twin_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  frac_bits: int = TRAIN_FRAC_BITS) -> float:
    """Accuracy of ``model`` run in the fixed-point twin (what the parties' test count gives)."""
    graph = convert(model, tuple(x.shape[1:]), fold_batchnorm=False)
    pred = twin_predict(graph, twin_params(graph, frac_bits), encode(x.double(), frac_bits),
                        frac_bits)
    return float((pred == y).double().mean())


__all__ = ["TrainConfig", "TrainingReport", "check_data", "epoch_order", "load_state",
           "secure_train", "train_job", "twin_accuracy", "twin_train"]
