"""``veil train``: private training of a zoo network on its real dataset (two-party
computation: the model owner shares the weights, the data owner the images)."""

from __future__ import annotations

import json

import typer

#: AriaNN's recipes (its USAGE.md): MSE on one-hot targets, momentum 0.9, batch 128.
RECIPES = {"network1": {"lr": 0.01, "epochs": 15}, "network2": {"lr": 0.01, "epochs": 15},
           "lenet": {"lr": 0.02, "epochs": 10}}


def _reveal(value: str) -> int | None:
    if value.lower() == "none":
        return None
    if value in ("0", "1"):
        return int(value)
    raise typer.BadParameter("--reveal-to must be 0, 1 or none")


def train(
    name: str = typer.Argument(..., help="A zoo network: network1, network2 or lenet."),
    dataset: str = typer.Option("mnist", help="The dataset (the network's own: mnist)."),
    epochs: int = typer.Option(None, help="Epochs (default: AriaNN's recipe)."),
    limit: int = typer.Option(None, help="Train on the first N images only."),
    test_images: int = typer.Option(10_000, help="Test images (accuracy computed on shares)."),
    batch_size: int = typer.Option(128, help="Batch size."),
    lr: float = typer.Option(None, help="Learning rate (default: AriaNN's recipe)."),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    weight_decay: float = typer.Option(0.0, help="L2 weight decay."),
    loss: str = typer.Option("mse", help="mse (on one-hot targets) or cross_entropy."),
    transport: str = typer.Option("local", help="local (threads) or tcp (three processes)."),
    reveal_to: str = typer.Option("0", help="Who learns the trained weights: 0, 1 or none."),
    save: str = typer.Option(None, help="Write the trained weights (state dict) here."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train a zoo network privately: nothing but the final weights (to --reveal-to) and the
    test accuracy count is ever opened."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from veil.models import build, entry
    from veil.models.training import dataset as zoo_dataset
    from veil.nn.training import secure_train

    if name not in RECIPES:
        raise typer.BadParameter(f"no private-training recipe for {name!r}; "
                                 f"choose from {', '.join(RECIPES)}")
    if entry(name).dataset != dataset:
        raise typer.BadParameter(f"{name} is trained on {entry(name).dataset}, not {dataset}")
    recipe = RECIPES[name]
    who = _reveal(reveal_to)
    x, y = zoo_dataset(name, "train", limit=limit)
    xt, yt = zoo_dataset(name, "test", limit=test_images) if test_images else (None, None)
    console = Console(stderr=json_out)
    with Progress(TextColumn(f"private training of {name}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"), TimeRemainingColumn(),
                  console=console, disable=transport != "local") as bar:
        task = bar.add_task("train", total=None)
        model, report = secure_train(
            build(name), x, y, epochs=epochs or recipe["epochs"], batch_size=batch_size,
            lr=lr or recipe["lr"], momentum=momentum, weight_decay=weight_decay, loss=loss,
            transport=transport, reveal_to=who, x_test=xt, y_test=yt,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    kept = not isinstance(model, torch.nn.Module)
    if save and not kept:
        torch.save(model.state_dict(), save)
    if json_out:
        out = report.as_dict()
        if kept:
            out["share_files"] = list(model.files)
        print(json.dumps(out, indent=2))
    else:
        console.print(report.summary())
        if kept:
            console.print("nobody learnt the weights; each party's shares are in its own file: "
                          + ", ".join(model.files) + " (serve them with veil.nn.inference.serve)")
