"""What one federated client does with a model: local training and evaluation.

A :class:`Task` names the model, the dataset and the local recipe. It is a small
frozen dataclass so that Flower can ship it to every client (a Ray actor in
simulation, a SuperNode process in a deployment); the data are loaded lazily
inside the client, from Veil's pinned datasets (``mnist``, ``cifar10``) or
scikit-learn's bundled ``digits`` (8x8, for fast tests).

Local training is plain SGD with momentum on the client's partition, optionally
with the FedProx proximal term ``mu/2 ||w - w_global||^2`` (Li et al. 2020) and
optionally as DP-SGD through :class:`veil.dp.PrivacyEngine` (local, per-example
DP at each client).

Example
-------
>>> task = Task(model="mlp", dataset="digits", num_clients=4)
>>> model = task.build()
>>> x, y = task.client_data(0)
>>> stats = task.train(model, x, y)
>>> sorted(stats)
['loss', 'num-examples']
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from veil.fl.partition import parse_scheme, partition

DATASETS = ("mnist", "cifar10", "digits")


@functools.lru_cache(maxsize=8)
def load_dataset(name: str, split: str, limit: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``(x, y)`` tensors of a dataset split (cached per process)."""
    if name == "mnist":
        from veil.data import mnist_tensors
        return mnist_tensors(split, limit=limit)
    if name == "cifar10":
        from veil.data import cifar10_tensors
        return cifar10_tensors(split, limit=limit)
    if name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        # a fixed split: the last 297 images are the test set
        x, y = (x[:1500], y[:1500]) if split == "train" else (x[1500:], y[1500:])
        return (x[:limit], y[:limit]) if limit else (x, y)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


class MLP(nn.Module):
    """A small two-layer perceptron for any image shape (tests, digits)."""

    def __init__(self, in_features: int, num_classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass(frozen=True)
class Task:
    """A federated learning task: model, data split among clients, local recipe.

    Parameters
    ----------
    model:
        ``"mlp"`` or a Veil zoo name (``lenet``, ``network1``, ``network2``, ``alexnet``...).
    dataset:
        ``"mnist"``, ``"cifar10"`` or ``"digits"``.
    num_clients:
        Number of partitions (one per client).
    partition:
        ``"iid"`` or ``"dirichlet:<alpha>"``.
    local_epochs, batch_size, lr, momentum:
        The local SGD recipe.
    proximal_mu:
        FedProx's μ (0 is FedAvg).
    train_limit, test_limit:
        Use only the first images of each split (small runs).
    local_dp_noise, local_dp_clip:
        When ``local_dp_noise > 0`` each client trains with DP-SGD (Poisson sampling,
        per-example clipping at ``local_dp_clip``) through :class:`veil.dp.PrivacyEngine`.
    seed:
        Seeds the partition and the weight initialisation.
    """

    model: str = "lenet"
    dataset: str = "mnist"
    num_clients: int = 10
    partition: str = "iid"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    proximal_mu: float = 0.0
    train_limit: int | None = None
    test_limit: int | None = None
    local_dp_noise: float = 0.0
    local_dp_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        parse_scheme(self.partition)
        if self.dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.num_clients < 1:
            raise ValueError("num_clients must be >= 1")
        if self.proximal_mu < 0 or self.local_dp_noise < 0:
            raise ValueError("proximal_mu and local_dp_noise must be >= 0")

    def to_config(self) -> dict:
        """The task as a flat dict of Flower config values (None becomes 0)."""
        return {k: (0 if v is None else v) for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, cfg: dict) -> Task:
        fields = cls.__dataclass_fields__
        kw = {k: cfg[k] for k in fields if k in cfg}
        for k in ("train_limit", "test_limit"):
            if kw.get(k) == 0:
                kw[k] = None
        return cls(**kw)

    def build(self) -> nn.Module:
        """A fresh model, initialised from ``seed`` (the same on every client and server)."""
        torch.manual_seed(self.seed)  # not-secret: the public initial global model
        x, _ = load_dataset(self.dataset, "test", 1)
        if self.model == "mlp":
            return MLP(int(np.prod(x.shape[1:])))
        from veil.models import build
        from veil.models.zoo import entry
        want = entry(self.model).input_shape
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"model {self.model!r} expects inputs {want}, "
                             f"dataset {self.dataset!r} has {tuple(x.shape[1:])}")
        return build(self.model).train()

    @functools.cached_property
    def _parts(self) -> list[np.ndarray]:
        _, y = load_dataset(self.dataset, "train", self.train_limit)
        return partition(y.numpy(), self.num_clients, self.partition, seed=self.seed)

    def client_data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training examples of client ``client`` (0-based partition id)."""
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client {client} outside 0..{self.num_clients - 1}")
        x, y = load_dataset(self.dataset, "train", self.train_limit)
        idx = torch.from_numpy(self._parts[client])
        return x[idx], y[idx]

    def partition_sizes(self) -> list[int]:
        return [len(p) for p in self._parts]

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return load_dataset(self.dataset, "test", self.test_limit)

    def train(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              seed: int = 0) -> dict[str, float]:
        """Train ``model`` in place on ``(x, y)``; returns ``{"loss", "num-examples"}``.

        The proximal term of FedProx pulls towards the weights ``model`` has on entry
        (the global model the server sent).
        """
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum)
        anchor = [p.detach().clone() for p in model.parameters()] if self.proximal_mu else None
        if self.local_dp_noise > 0:
            return self._train_dp(model, opt, x, y)
        shuffler = torch.Generator().manual_seed(seed)  # not-secret: data order
        total, count = 0.0, 0
        for _ in range(self.local_epochs):
            order = torch.randperm(len(x), generator=shuffler)
            for i in range(0, len(x), self.batch_size):
                idx = order[i:i + self.batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum()
                               for p, a in zip(model.parameters(), anchor, strict=True))
                    loss = loss + 0.5 * self.proximal_mu * prox
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
        return {"loss": total / max(count, 1), "num-examples": float(len(x))}

    def _train_dp(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor) -> dict[str, float]:
        from torch.utils.data import DataLoader, TensorDataset

        from veil.dp import PrivacyEngine
        if self.proximal_mu:
            raise ValueError("FedProx with local DP-SGD is not supported (the proximal term "
                             "is not per-example)")
        engine = PrivacyEngine()
        loader = DataLoader(TensorDataset(x, y), batch_size=self.batch_size)
        gsm, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader,
            noise_multiplier=self.local_dp_noise, max_grad_norm=self.local_dp_clip)
        total, count = 0.0, 0
        for _ in range(self.local_epochs):
            for xb, yb in dp_loader:
                if len(xb) == 0:
                    dp_opt.zero_grad()
                    continue
                loss = F.cross_entropy(gsm(xb), yb)
                dp_opt.zero_grad()
                loss.backward()
                dp_opt.step()
                total += float(loss.detach()) * len(xb)
                count += len(xb)
        return {"loss": total / max(count, 1), "num-examples": float(len(x)),
                "local-epsilon": engine.get_epsilon(1e-5)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``{"loss", "accuracy", "num-examples"}`` of ``model`` on ``(x, y)``."""
        model.eval()
        loss, correct = 0.0, 0
        for i in range(0, len(x), 1000):
            out = model(x[i:i + 1000])
            loss += float(F.cross_entropy(out, y[i:i + 1000], reduction="sum"))
            correct += int((out.argmax(1) == y[i:i + 1000]).sum())
        n = max(len(x), 1)
        return {"loss": loss / n, "accuracy": correct / n, "num-examples": float(len(x))}


def get_params(model: nn.Module) -> list[np.ndarray]:
    """The model's state (parameters and buffers) as float32 numpy arrays, in order."""
    return [v.detach().cpu().numpy().astype(np.float32, copy=True)
            for v in model.state_dict().values()]


def set_params(model: nn.Module, arrays: list[np.ndarray]) -> None:
    """Load arrays produced by :func:`get_params` (same order) into ``model``."""
    keys = list(model.state_dict().keys())
    if len(keys) != len(arrays):
        raise ValueError(f"model has {len(keys)} tensors, got {len(arrays)} arrays")
    state = OrderedDict(
        (k, torch.from_numpy(np.asarray(a)).to(v.dtype).reshape(v.shape))
        for (k, v), a in zip(model.state_dict().items(), arrays, strict=True))
    model.load_state_dict(state)
