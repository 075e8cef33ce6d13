"""``veil models``: the AriaNN model zoo: list, train, inspect, run privately.

Examples
--------
``veil models list``, ``veil models train lenet``, ``veil models show alexnet``,
``veil models infer lenet --images 64 --transport tcp``.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="The AriaNN model zoo: list, train, inspect and run private inference.",
                  no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """List the zoo networks, their inputs, AriaNN batch sizes and cached weights."""
    from rich.console import Console
    from rich.table import Table

    from veil.models import ZOO, build, has_weights, load_weights, model_dir

    table = Table(title=f"Veil model zoo (weights in {model_dir()})")
    for col in ("model", "input", "dataset", "AriaNN batch", "parameters", "trained accuracy"):
        table.add_column(col)
    for name, e in ZOO.items():
        params = sum(p.numel() for p in build(name).parameters())
        acc = "-"
        if has_weights(name):
            meta = load_weights(name)[1]
            if meta.get("test_accuracy") is not None:
                acc = f"{100 * meta['test_accuracy']:.2f}%"
        table.add_row(name, "x".join(map(str, e.input_shape)), e.dataset or "(random)",
                      str(e.batch_size), f"{params:,}", acc)
    Console().print(table)


@app.command("train")
def train_model(
    name: str = typer.Argument(..., help="network1, network2, lenet, alexnet or vgg16."),
    epochs: int = typer.Option(None, help="Epochs (default: the recipe's)."),
    limit: int = typer.Option(None, help="Train on the first N images only."),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)."),
) -> None:
    """Train a zoo network on its real dataset and cache the weights."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from veil.models import train_zoo_model, weights_path

    if threads:
        torch.set_num_threads(threads)
    console = Console()
    with Progress(TextColumn(f"training {name}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} steps"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=None)
        _, meta = train_zoo_model(
            name, epochs=epochs, limit=limit,
            progress=lambda step, total: bar.update(task, completed=step, total=total))
    console.print(f"[bold]{name}[/]: test accuracy {100 * meta['test_accuracy']:.2f}% after "
                  f"{meta['epochs']} epochs ({meta['train_seconds']} s); saved to "
                  f"{weights_path(name)}")


@app.command("show")
def show(name: str = typer.Argument(..., help="A zoo network.")) -> None:
    """Print the secure graph of a zoo network (after BatchNorm folding)."""
    from rich.console import Console
    from rich.table import Table

    from veil.models import build, entry
    from veil.nn import convert

    graph = convert(build(name), entry(name).input_shape)
    table = Table(title=f"{name}: secure graph, input {graph.input_shape}")
    for col in ("layer", "op", "inputs", "output", "parameters"):
        table.add_column(col)
    for layer in graph.layers:
        n = sum(t.numel() for t in (layer.weight, layer.bias) if t is not None)
        extra = ", ".join(f"{k}={v}" for k, v in layer.params.items())
        table.add_row(layer.name, layer.op + (f" ({extra})" if extra else ""),
                      ", ".join(layer.inputs), "x".join(map(str, layer.out_shape)),
                      f"{n:,}" if n else "")
    Console().print(table)


@app.command("infer")
def infer(
    name: str = typer.Argument("lenet", help="A zoo network with a dataset (trained if missing)."),
    images: int = typer.Option(64, help="Number of test images."),
    transport: str = typer.Option("local", help="local (threads) or tcp (three processes)."),
    train_missing: bool = typer.Option(True, help="Train the model when no weights are cached."),
) -> None:
    """Private inference of a zoo network on real test images; compares with plaintext."""
    import torch
    from rich.console import Console

    from veil.models import dataset, load_weights, pretrained
    from veil.nn.inference import secure_inference

    console = Console()
    model, _ = pretrained(name) if train_missing else load_weights(name)
    x, y = dataset(name, "test", limit=images)
    with torch.no_grad():
        plain = model(x).argmax(1)
    logits, report = secure_inference(model, x, transport=transport)
    private = logits.argmax(1)
    console.print(f"{name} on {len(x)} test images over {transport}: plaintext accuracy "
                  f"{(plain == y).float().mean():.2%}, private accuracy "
                  f"{(private == y).float().mean():.2%}, agreement "
                  f"{(plain == private).float().mean():.2%}")
    console.print(report.summary())
