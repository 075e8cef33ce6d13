"""A DP-SGD training loop with a progress bar (loss, accuracy, ε) and per-epoch reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from veil.dp.engine import PrivacyEngine, virtual_batches


@dataclass
class EpochReport:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None
    epsilon: float
    seconds: float


@dataclass
class TrainResult:
    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: list[EpochReport] = field(default_factory=list)

    @property
    def epsilon(self) -> float:
        return self.epochs[-1].epsilon if self.epochs else 0.0


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(total, 1)


def train_dp_sgd(
    model: nn.Module, train_set: Dataset, test_set: Dataset | None = None, *, epochs: int,
    batch_size: int, delta: float, max_grad_norm: float, lr: float,
    noise_multiplier: float | None = None, target_epsilon: float | None = None,
    accountant: str = "rdp", max_physical_batch_size: int | None = None,
    momentum: float = 0.0, progress: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train ``model`` with DP-SGD; give either ``noise_multiplier`` or ``target_epsilon``.

    Shows a rich progress bar with the running loss, accuracy and ε; returns the
    per-epoch reports (ε after each epoch at ``delta``).

    Example
    -------
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))  # not-secret
    >>> res = train_dp_sgd(nn.Linear(4, 2), ds, epochs=1, batch_size=16, delta=1e-5,
    ...                    max_grad_norm=1.0, lr=0.1, noise_multiplier=1.0, progress=False)
    >>> len(res.epochs)
    1
    """
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    engine = PrivacyEngine(accountant=accountant)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loader = DataLoader(train_set, batch_size=batch_size)
    if target_epsilon is not None:
        dp_model, dp_opt, dp_loader = engine.make_private_with_epsilon(
            module=model, optimizer=opt, data_loader=loader, target_epsilon=target_epsilon,
            target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm)
    else:
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model, optimizer=opt, data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm)
    assert engine.sample_rate is not None
    result = TrainResult(dp_opt.noise_multiplier, engine.sample_rate, 0)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}  "
                          "ε {task.fields[eps]:.3f}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        eps = 0.0
        for epoch in range(1, epochs + 1):
            task = bar.add_task("train", total=len(dp_loader), epoch=epoch, loss=0.0, acc=0.0,
                                eps=eps)
            t0 = time.perf_counter()
            loss_sum = correct = seen = 0.0
            batches = (virtual_batches(dp_loader, dp_opt, max_physical_batch_size)
                       if max_physical_batch_size else dp_loader)
            for x, y in batches:
                dp_opt.zero_grad()
                out = dp_model(x)
                loss = nn.functional.cross_entropy(out, y) if len(y) else out.sum() * 0
                loss.backward()
                skipping = dp_opt._skip_next
                dp_opt.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((out.argmax(1) == y).sum())
                seen += len(y)
                if not skipping:
                    bar.update(task, advance=1, loss=loss_sum / max(seen, 1),
                               acc=correct / max(seen, 1))
            seconds = time.perf_counter() - t0
            eps = engine.get_epsilon(delta)
            test_acc = accuracy(model, test_set) if test_set is not None else None
            bar.update(task, eps=eps)
            report = EpochReport(epoch, loss_sum / max(seen, 1), correct / max(seen, 1),
                                 test_acc, eps, seconds)
            result.epochs.append(report)
            if on_epoch is not None:
                on_epoch(report)
    result.steps = engine.accountant.steps
    return result
