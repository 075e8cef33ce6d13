"""``veil dealer``, ``veil serve``, ``veil query``: private inference across three machines.

See ``docs/deployment.md`` for a three-machine walkthrough. Each command needs
its role's credentials from ``veil keys init`` (``--keys DIR``):

- ``veil dealer --listen HOST:PORT --keys DIR [--store POOL]`` (role ``dealer``);
  ``veil dealer preprocess --model lenet --batch 1 --queries 100 --store POOL``
  fills a pool of material ahead of time;
- ``veil serve --model lenet --weights W.pt --listen HOST:PORT --dealer HOST:PORT
  --keys DIR`` (role ``party0``, the model owner);
- ``veil query --server HOST:PORT --dealer HOST:PORT --model lenet --keys DIR
  --images FILE [--argmax] [--json]`` (role ``party1``, the data owner).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

MODEL_OPT = typer.Option(None, "--model", "-m", help="A zoo network (veil models list).")
ARCH_OPT = typer.Option(None, "--arch",
                        help="The architecture as package.module:Class (built without "
                             "arguments); needs --input-shape.")
SHAPE_OPT = typer.Option(None, "--input-shape",
                         help="Per-sample input shape, e.g. 1,28,28 (default: the zoo's).")
KEYS_OPT = typer.Option(..., "--keys", help="Keys directory with this role's credentials "
                                             "(veil keys init).")
VERBOSE_OPT = typer.Option(False, "--verbose", "-v", help="Debug logging.")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")


def architecture(model: str | None, arch: str | None, input_shape: str | None):
    """``(nn.Module, input shape, zoo entry or None)`` from ``--model`` or ``--arch``."""
    import importlib

    if (model is None) == (arch is None):
        _fail("give exactly one of --model NAME and --arch module:Class")
    shape = tuple(int(s) for s in input_shape.split(",")) if input_shape else None
    if model is not None:
        from veil.models import build, entry

        try:
            e = entry(model)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        return build(model), shape or e.input_shape, e
    mod, sep, name = arch.partition(":")
    if not sep:
        _fail(f"--arch must look like package.module:Class, got {arch!r}")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        _fail(f"cannot load {arch}: {exc}")
    if shape is None:
        _fail("--arch needs --input-shape (e.g. 1,28,28)")
    return cls(), shape, None


def load_images(path: Path, input_shape: tuple[int, ...], normalize: str, entry: Any,
                limit: int | None = None):
    """A float batch ``(n, *input_shape)`` from a ``.npy``, ``.png`` or IDX file.

    Integer pixels are scaled to [0, 1]; ``normalize`` is ``auto`` (the zoo
    dataset's mean/std for integer pixels), ``none``, or ``MEAN,STD``.
    """
    import numpy as np
    import torch

    if not path.exists():
        _fail(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    elif suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        img = Image.open(path)
        img = img.convert("L" if input_shape[0] == 1 else "RGB")
        data = np.asarray(img)
        data = data[None] if data.ndim == 2 else data.transpose(2, 0, 1)[None]
    else:
        from veil.data import read_idx

        try:
            data = read_idx(path)
        except ValueError as exc:
            _fail(f"{path}: not .npy, .png or IDX ({exc})")
    integer = np.issubdtype(data.dtype, np.integer)
    x = torch.from_numpy(np.array(data, dtype=np.float64))  # a writable copy
    if integer:
        x = x / 255.0
    if x.dim() == len(input_shape) - 1:  # one image, channel dimension implied or absent
        x = x.unsqueeze(0)
    if x.dim() == len(input_shape) and tuple(x.shape) == input_shape:
        x = x.unsqueeze(0)
    if x.dim() == len(input_shape) and input_shape[0] == 1:  # (n, H, W) greyscale
        x = x.unsqueeze(1)
    if x.dim() == len(input_shape) + 1 and x.shape[-1] == input_shape[0] and \
            tuple(x.shape[1:3]) == input_shape[1:]:  # (n, H, W, C)
        x = x.permute(0, 3, 1, 2)
    if tuple(x.shape[1:]) != tuple(input_shape):
        _fail(f"{path} holds images of shape {tuple(x.shape[1:])}, the model expects "
              f"{tuple(input_shape)}")
    if limit is not None:
        x = x[:limit]
    mean_std = None
    if normalize == "auto":
        if integer and entry is not None and entry.dataset == "mnist":
            from veil.data import MNIST_MEAN, MNIST_STD

            mean_std = (MNIST_MEAN, MNIST_STD)
        elif integer and entry is not None and entry.dataset == "cifar10":
            from veil.data.cifar import CIFAR10_MEAN, CIFAR10_STD

            mean_std = (torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1),
                        torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
    elif normalize != "none":
        try:
            mean_std = tuple(float(v) for v in normalize.split(","))
            assert len(mean_std) == 2
        except (ValueError, AssertionError):
            _fail(f"--normalize must be auto, none or MEAN,STD, got {normalize!r}")
    if mean_std is not None:
        x = (x - mean_std[0]) / mean_std[1]
    if not torch.isfinite(x).all():
        _fail(f"{path} contains NaN or infinite values")
    return x.double()


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


# --------------------------------------------------------------------------- veil dealer

dealer_app = typer.Typer(help="The dealer service (role dealer): pairs each inference session's "
                              "two parties and serves their correlated randomness.",
                         invoke_without_command=True)


@dealer_app.callback()
def dealer(
    ctx: typer.Context,
    listen: str = typer.Option(None, "--listen", help="HOST:PORT to listen on."),
    keys: Path = typer.Option(None, "--keys", help="Keys directory with the dealer's "
                                                   "credentials (veil keys init)."),
    store: Path = typer.Option(None, "--store",
                               help="A pool made by `veil dealer preprocess`: its items are "
                                    "served once each, the rest generated on demand."),
    idle_timeout: float = typer.Option(900.0, help="Seconds a session may stay idle."),
    verbose: bool = VERBOSE_OPT,
) -> None:
    """Run the dealer service until SIGTERM/SIGINT (or `veil dealer preprocess ...`)."""
    if ctx.invoked_subcommand is not None:
        return
    if listen is None or keys is None:
        _fail("veil dealer needs --listen HOST:PORT and --keys DIR")
    _logging(verbose)
    from veil.comm.errors import CommError
    from veil.nn.service import DealerService
    from veil.sharing.errors import StoreError

    try:
        service = DealerService(listen, keys, store=store, idle_timeout=idle_timeout)
    except (CommError, StoreError, ValueError) as exc:
        _fail(str(exc))
    service.start()
    typer.echo(f"dealer listening on {service.address}", err=True)
    _wait_for_signal()
    service.shutdown()


@dealer_app.command("preprocess")
def dealer_preprocess(
    store: Path = typer.Option(..., "--store", help="Directory of the pool to write."),
    model: str = MODEL_OPT,
    arch: str = ARCH_OPT,
    input_shape: str = SHAPE_OPT,
    batch: int = typer.Option(1, help="Batch size of the queries to prepare for."),
    queries: int = typer.Option(10, help="Number of queries to prepare for."),
    argmax: bool = typer.Option(False, "--argmax", help="Queries asking for labels."),
    force: bool = typer.Option(False, "--force", help="Replace an existing pool."),
) -> None:
    """Generate the session-independent material of QUERIES queries ahead of time."""
    from veil.nn import convert
    from veil.nn.service import preprocess_pool
    from veil.sharing.errors import StoreError

    net, shape, _ = architecture(model, arch, input_shape)
    try:
        stats = preprocess_pool(convert(net, shape), batch, queries, store, argmax=argmax,
                                overwrite=force)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"{stats['items']} items ({stats['bytes'] / 1e6:.1f} MB for both parties) "
               f"written to {store} in {stats['seconds']:.1f} s")


# --------------------------------------------------------------------------- veil serve

def serve(
    listen: str = typer.Option(..., "--listen", help="HOST:PORT for clients."),
    dealer: str = typer.Option(..., "--dealer", help="HOST:PORT of the dealer service."),
    keys: Path = KEYS_OPT,
    model: str = MODEL_OPT,
    arch: str = ARCH_OPT,
    input_shape: str = SHAPE_OPT,
    weights: str = typer.Option(..., "--weights",
                                help="The model's state_dict (torch.save), or 'cached' for "
                                     "the zoo's trained weights (veil models train)."),
    labels_only: bool = typer.Option(False, "--labels-only",
                                     help="Answer argmax labels only, never logits."),
    max_sessions: int = typer.Option(8, help="Clients served at the same time."),
    max_batch: int = typer.Option(256, help="Largest batch per query."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for a message in a query."),
    idle_timeout: float = typer.Option(600.0, help="Seconds a session may stay idle."),
    verbose: bool = VERBOSE_OPT,
) -> None:
    """The model owner's service (role party0): private queries on its model until SIGTERM."""
    import torch

    from veil.comm.errors import CommError

    net, shape, e = architecture(model, arch, input_shape)
    if weights == "cached":
        if e is None:
            _fail("--weights cached needs a zoo --model")
        from veil.models import load_weights

        try:
            net = load_weights(model)[0]
        except FileNotFoundError as exc:
            _fail(str(exc))
    else:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (OSError, RuntimeError, ValueError) as exc:
            _fail(f"cannot load weights from {weights}: {exc}")
    _logging(verbose)
    from veil.nn.service import InferenceServer

    try:
        server = InferenceServer(net, shape, listen, dealer, keys, timeout=timeout,
                                 idle_timeout=idle_timeout, max_sessions=max_sessions,
                                 max_batch=max_batch, labels_only=labels_only)
    except (CommError, ValueError) as exc:
        _fail(str(exc))
    server.start()
    typer.echo(f"serving on {server.address}", err=True)
    _wait_for_signal()
    server.shutdown()


# --------------------------------------------------------------------------- veil query

def query(
    server: str = typer.Option(..., "--server", help="HOST:PORT of the model owner's server."),
    dealer: str = typer.Option(..., "--dealer", help="HOST:PORT of the dealer service."),
    keys: Path = KEYS_OPT,
    images: Path = typer.Option(..., "--images", help="Images: .npy, .png or IDX."),
    model: str = MODEL_OPT,
    arch: str = ARCH_OPT,
    input_shape: str = SHAPE_OPT,
    argmax: bool = typer.Option(False, "--argmax", help="Ask for labels only (secure argmax)."),
    batch_size: int = typer.Option(None, help="Images per query (default: all at once)."),
    limit: int = typer.Option(None, help="Use only the first N images."),
    normalize: str = typer.Option("auto", help="auto (the zoo dataset's mean/std for integer "
                                               "pixels), none, or MEAN,STD."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the server or the dealer."),
) -> None:
    """The data owner's client (role party1): run IMAGES through the server's model privately."""
    from veil.comm.errors import CommError
    from veil.nn.service import query as run_query
    from veil.sharing.errors import MaterialError

    net, shape, e = architecture(model, arch, input_shape)
    x = load_images(images, tuple(shape), normalize, e, limit)
    try:
        out, reports = run_query(server, dealer, net, shape, x, keys, argmax=argmax,
                                 batch_size=batch_size, timeout=timeout)
    except (CommError, MaterialError, ValueError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    labels = out.argmax(dim=-1).tolist()
    if json_out:
        result: dict[str, Any] = {"labels": labels} if argmax else {
            "logits": out.tolist(), "labels": labels}
        result["reports"] = [r.as_dict() for r in reports]
        typer.echo(json.dumps(result, indent=1))
        return
    for i, label in enumerate(labels):
        row = f"image {i}: label {label}"
        if not argmax:
            row += "  logits " + " ".join(f"{v:.4f}" for v in out[i].tolist())
        typer.echo(row)
    for r in reports:
        typer.echo(f"query {r.extra['query']}: batch {r.batch_size} in "
                   f"{r.extra['latency_s']:.3f} s (online {r.online_s:.3f} s, "
                   f"{r.online_bytes / 1e6:.2f} MB, {r.online_rounds} rounds; dealer material "
                   f"{r.offline_bytes / 1e6:.2f} MB, {r.offline_s:.3f} s)", err=True)
