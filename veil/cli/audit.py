"""``veil audit``: membership inference (threshold, LiRA) and model inversion on your own model,
optionally against a DP-SGD retrain of it; one self-contained HTML page and/or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@contextmanager
def _tracker(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    if not enabled:
        yield lambda description, total: (lambda n=1: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
        def track(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)
        yield track


def audit(
    model: Path = typer.Option(..., "--model", "-m", help="state_dict (with --arch), "
                               "TorchScript, torch.export .pt2, or a pickled module."),
    arch: str = typer.Option(None, help="module:Class of a state_dict's architecture."),
    train_data: str = typer.Option(..., help="The model's training data (members): mnist[:N], "
                                   "cifar10[:N], digits[:N], or a .pt/.npz file with x and y."),
    test_data: str = typer.Option(..., help="Held-out data (non-members), same formats."),
    defenses: str = typer.Option("", help="Comma-separated protections to retrain with: dp."),
    epsilon: float = typer.Option(8.0, help="Epsilon of the DP-SGD defense (delta 1e-5)."),
    shadows: int = typer.Option(8, help="Shadow models for LiRA (even)."),
    epochs: int = typer.Option(5, help="Epochs for shadow and defended models."),
    html_out: Path = typer.Option(None, "--html", help="Write the self-contained HTML page."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    seed: int = typer.Option(0),
) -> None:
    """Audit a trained classifier: what does it leak about its training data?

    The data are fed to the model unchanged: give it inputs normalised the way it was
    trained (dataset names use Veil's normalisation, e.g. MNIST (x/255-0.1307)/0.3081).
    """
    from veil.audit.audit import ModelLoadError, load_data, load_user_model, render_html, to_json
    from veil.audit.audit import audit as run_audit

    try:
        net = load_user_model(model, arch)
        x, y = load_data(train_data, "train")
        xt, yt = load_data(test_data, "test")
    except (ModelLoadError, ValueError) as exc:
        _fail(str(exc))
    wanted = tuple(d.strip() for d in defenses.split(",") if d.strip())
    try:
        with _tracker(not json_out) as tracker:
            report = run_audit(net, x, y, xt, yt, defenses=wanted, shadows=shadows,
                               epochs=epochs, dp_epsilon=epsilon, seed=seed, tracker=tracker)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if html_out is not None:
        html_out.write_text(render_html(report, f"Veil audit of {model.name}"))
    if json_out:
        typer.echo(json.dumps(to_json(report), indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Leakage of {model.name}")
    for col in ("model", "train acc", "test acc", "attack", "AUC", "TPR@0.1%FPR", "TPR@1%FPR"):
        table.add_column(col)
    for name, r in report["rows"].items():
        for attack, m in r["membership"].items():
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            table.add_row(name, fmt(r["train_accuracy"]), fmt(r["test_accuracy"]), attack,
                          fmt(m["auc"]), fmt(m.get("tpr_at_0.1%_fpr")),
                          fmt(m.get("tpr_at_1%_fpr")))
    Console().print(table)
    if html_out is not None:
        typer.echo(f"HTML report: {html_out}")
