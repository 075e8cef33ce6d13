"""``veil demo``: Veil's main job end to end on an embedded default."""

from __future__ import annotations

import json

import typer


def demo(
    images: int = typer.Option(64, "--images", "-n",
                                help="MNIST test images classified privately."),
    transport: str = typer.Option("tcp",
                                  help="tcp (three processes on loopback) or local (threads)."),
    retrain: bool = typer.Option(False, help="Train LeNet even when cached weights exist."),
    linear: bool = typer.Option(False, "--linear",
                                help="Run the smaller secret-shared linear-model demo instead."),
    json_out: bool = typer.Option(False, "--json", help="Also print the results as JSON."),
) -> None:
    """Private inference of a trained LeNet on real MNIST digits, end to end.

    The model owner, the data owner and the dealer run as three local processes talking TCP over
    loopback.

    Prints plaintext vs private accuracy, agreement, offline/online time, bytes and rounds.

    """
    if transport not in ("tcp", "local"):
        raise typer.BadParameter("transport must be 'tcp' or 'local'")
    if linear:
        from veil.demos.linear import run_linear_demo

        result = run_linear_demo(transport=transport, n_images=images)
    else:
        from veil.demos.lenet import run_lenet_demo

        result = run_lenet_demo(images=images, transport=transport, retrain=retrain)
    if json_out:
        typer.echo(json.dumps(result, default=str, indent=2))
