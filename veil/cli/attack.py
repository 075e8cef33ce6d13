"""``veil attack``: measure what a model or an update leaks (membership, inversion, gradients).

Each command runs a reference experiment on real data (see
:mod:`veil.audit.experiments`), writes a JSON report and PNG figures under
``--output`` and prints a summary table; ``--json`` prints the report on stdout
instead (progress bars go to stderr).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from veil.audit.render import gradient_table, inversion_table, membership_table

app = typer.Typer(help="Privacy attacks: membership inference, model inversion, gradient "
                       "inversion. Each writes a JSON report and PNG figures.",
                  no_args_is_help=True)

_QUICK = typer.Option(False, "--quick", help="A reduced experiment (a few minutes on 2 cores).")
_JSON = typer.Option(False, "--json", help="Print the JSON report on stdout.")
_SEED = typer.Option(0, "--seed", help="Seed of the (non-secret) experiment randomness.")
_THREADS = typer.Option(1, "--threads", help="torch threads. The attacked models are small: "
                        "one thread avoids the oversubscription that makes them many times "
                        "slower on a busy machine.")


def _set_threads(n: int) -> None:
    import torch
    if n < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--threads")
    torch.set_num_threads(n)


@contextmanager
def _tracker(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)

    def make(description: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda n=1: progress.advance(task, n)

    with progress:
        yield make


def _finish(report: dict, out: Path, json_out: bool, table: Callable[[dict], object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable))
    if json_out:
        typer.echo(json.dumps(report, default=_jsonable))
        return
    from rich.console import Console
    console = Console()
    console.print(table(report))
    console.print(f"report: {path}; figures: {out}/*.png")


def _load(load_model: Callable, path: Path):
    """The user's model, or a one-line error saying what to do."""
    from veil.audit.audit import ModelLoadError
    try:
        return load_model(path)
    except ModelLoadError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


def _jsonable(o: object) -> object:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


@app.command("membership")
def membership(
    quick: bool = _QUICK,
    json_out: bool = _JSON,
    output: Path = typer.Option(Path("attack-reports/membership"), "--output", "-o",
                                help="Folder for report.json and the ROC figures."),
    shadows: int = typer.Option(None, "--shadows", help="Shadow models per target "
                                "(default 16, --quick 8); even."),
    targets: str = typer.Option("overfit,generalised,dp", "--targets",
                                help="Comma-separated: overfit, generalised, dp."),
    model: Path = typer.Option(None, "--model", help="Attack this saved classifier instead "
                               "(torch.save(model) / .pt2 / TorchScript); needs --members."),
    members: Path = typer.Option(None, "--members", help="With --model: a .npy boolean mask "
                                 "over the first N training examples of --dataset (the pool)."),
    dataset: str = typer.Option("cifar10", "--dataset", help="With --model: mnist or cifar10."),
    recipe: str = typer.Option("overfit", "--recipe", help="With --model: the reference recipe "
                               "the shadow models use (overfit, generalised, dp)."),
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """Threshold, shadow-model (Shokri) and LiRA attacks on reference targets or your model."""
    from veil.audit.experiments import load_model, membership_experiment, membership_of_model
    _set_threads(threads)
    if (model is None) != (members is None):
        raise typer.BadParameter("--model and --members go together", param_hint="--members")
    if model is not None:
        import numpy as np
        net, mask = _load(load_model, model), np.load(members)
        with _tracker(True) as tracker:
            report = membership_of_model(net, mask, output, dataset=dataset, recipe=recipe,
                                         num_shadows=shadows or 16, seed=seed, tracker=tracker)
        _finish(report, output, json_out, membership_table)
        return
    names = tuple(s.strip() for s in targets.split(",") if s.strip())
    known = {"overfit", "generalised", "dp"}
    if not names or set(names) - known:
        raise typer.BadParameter(f"targets must be among {sorted(known)}", param_hint="--targets")
    if shadows is not None and (shadows < 2 or shadows % 2):
        raise typer.BadParameter("need an even number >= 2", param_hint="--shadows")
    with _tracker(True) as tracker:
        report = membership_experiment(output, quick=quick, num_shadows=shadows, targets=names,
                                       seed=seed, tracker=tracker)
    _finish(report, output, json_out, membership_table)


@app.command("inversion")
def inversion(
    quick: bool = _QUICK,
    json_out: bool = _JSON,
    output: Path = typer.Option(Path("attack-reports/inversion"), "--output", "-o"),
    dataset: str = typer.Option("mnist", "--dataset", help="mnist, cifar10 or digits."),
    model: Path = typer.Option(None, "--model", help="A saved classifier (TorchScript or "
                               "torch.save(model)) for the dataset; default: train an MLP."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated classes to invert "
                                "(default: all)."),
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """Fredrikson model inversion of every class: white box, black box, rounded scores."""
    from veil.audit.experiments import inversion_experiment, load_model
    _set_threads(threads)
    try:
        picked = tuple(int(c) for c in classes.split(",")) if classes else None
    except ValueError:
        raise typer.BadParameter("comma-separated integers", param_hint="--classes") from None
    net = _load(load_model, model) if model is not None else None
    with _tracker(True) as tracker:
        report = inversion_experiment(output, quick=quick, dataset=dataset, model=net,
                                      classes=picked, seed=seed, tracker=tracker)
    _finish(report, output, json_out, inversion_table)


@app.command("gradient")
def gradient(
    quick: bool = _QUICK,
    json_out: bool = _JSON,
    output: Path = typer.Option(Path("attack-reports/gradient"), "--output", "-o"),
    dataset: str = typer.Option("mnist", "--dataset", help="mnist, cifar10 or digits."),
    model: Path = typer.Option(None, "--model", help="Attack updates of this saved classifier "
                               "(torch.save(model) / .pt2 / TorchScript); default: a small CNN."),
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """DLG and Inverting Gradients on federated updates under each defence."""
    from veil.audit.experiments import gradient_experiment, load_model
    _set_threads(threads)
    net = _load(load_model, model) if model is not None else None
    with _tracker(True) as tracker:
        report = gradient_experiment(output, quick=quick, dataset=dataset, model=net, seed=seed,
                                     tracker=tracker)
    _finish(report, output, json_out, gradient_table)
