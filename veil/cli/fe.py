"""``veil fe``: functional encryption for partially encrypted MNIST inference; collateral learning.

Three roles, three folders of files:

* ``veil fe keygen --dir keys``: the authority trains (or loads) the MNIST QuadNet,
  integerises it, and writes ``mpk.fe`` + ``client.json`` (for clients),
  ``network.fe`` + ``network.json`` (functional keys and plaintext rest, for the
  server) and ``msk.fe`` (master secret: keep it with the authority).
* ``veil fe encrypt --keys keys --out cts``: a client encrypts MNIST test images
  to ``cts/*.fe``, the folder sent to the server (ciphertexts only: the true
  labels, kept for scoring, go to ``cts.labels.json`` beside the folder, or
  ``--labels``, never inside it); or ``--send HOST:PORT`` to query a running
  server.
* ``veil fe decrypt --keys keys cts``: the server classifies the ciphertexts
  (``--labels`` scores them, where the client's labels are at hand).
* ``veil fe serve --keys keys``: the server answers ciphertexts over TCP (loopback
  by default).
* ``veil fe collateral``: the collateral-learning study (JSON report and plot).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="Quadratic functional encryption: encrypted MNIST inference, "
                       "collateral learning.", no_args_is_help=True)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn())


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _load_server(keys: Path):
    from veil import fe
    from veil.fe.pipeline import EncryptedClassifier
    from veil.fe.quadnet import IntQuadNet

    try:
        mpk = fe.load(keys / "mpk.fe")
        key = fe.load(keys / "network.fe", mpk=mpk)
        net = IntQuadNet.from_dict(json.loads((keys / "network.json").read_text()))
    except FileNotFoundError as exc:
        _fail(f"{exc.filename} is missing: run `veil fe keygen --dir {keys}` first")
    except (fe.FEError, ValueError, KeyError) as exc:
        _fail(f"cannot load the server keys from {keys}: {exc}")
    return mpk, EncryptedClassifier(mpk, key, net)


@app.command()
def keygen(
    dir: Path = typer.Option(Path("fe-keys"), "--dir", "-d", help="Where to write the keys."),
    k: int = typer.Option(40, help="Hidden size of the QuadNet."),
    epochs: int = typer.Option(20, help="Training epochs (the model is cached)."),
    retrain: bool = typer.Option(False, help="Retrain even if a cached model exists."),
) -> None:
    """Train/load the MNIST QuadNet, integerise it, and issue the functional keys."""
    from rich.console import Console
    from rich.table import Table

    from veil import fe
    from veil.fe.pipeline import authority_keys, integer_mnist_quadnet, mnist_quadnet

    console = Console()
    with _progress() as bar:
        task = bar.add_task("training QuadNet (cached after the first run)", total=epochs)
        model = mnist_quadnet(k=k, epochs=epochs, retrain=retrain,
                              progress=lambda e, loss: bar.update(task, completed=e + 1))
        bar.update(task, completed=epochs)
    net, acc = integer_mnist_quadnet(model)
    t0 = time.perf_counter()
    mpk, msk, key = authority_keys(net)
    seconds = time.perf_counter() - t0
    dir.mkdir(parents=True, exist_ok=True)
    fe.dump(mpk, dir / "mpk.fe")
    fe.dump(msk, dir / "msk.fe")
    fe.dump(key, dir / "network.fe")
    (dir / "network.json").write_text(json.dumps(net.to_dict()))
    (dir / "client.json").write_text(json.dumps({"pixel_bits": net.pixel_bits,
                                                 "inputs": int(net.P.shape[0] - 1)}))
    table = Table(title=f"QuadNet k={k} on MNIST (full test set)")
    for col in ("float acc", "integer acc", "bit widths", "output bound", "setup+keygen"):
        table.add_column(col)
    table.add_row(f"{acc['float']:.4f}", f"{acc['integer']:.4f}", json.dumps(net.widths),
                  f"{net.bound:,}", f"{seconds:.2f} s")
    console.print(table)
    console.print(f"wrote {dir}/mpk.fe, client.json (clients); network.fe, network.json "
                  f"(server); msk.fe (keep secret)")


@app.command()
def encrypt(
    keys: Path = typer.Option(Path("fe-keys"), "--keys", "-k", help="Folder with mpk.fe."),
    out: Path = typer.Option(Path("fe-ciphertexts"), "--out", "-o", help="Output folder."),
    start: int = typer.Option(0, help="First MNIST test image."),
    count: int = typer.Option(10, help="Number of images."),
    send: str = typer.Option(None, help="HOST:PORT of a `veil fe serve` instead of files."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the server."),
    labels: Path = typer.Option(None, "--labels", help="Where the client keeps the true "
                                "labels (default: OUT.labels.json, beside the folder; never "
                                "inside the folder that goes to the server)."),
) -> None:
    """Client: encrypt MNIST test images (to files, or straight to a server)."""
    from veil import fe
    from veil.data import load_mnist
    from veil.fe.quadnet import quantise_pixels

    try:
        mpk = fe.load(keys / "mpk.fe")
        client = json.loads((keys / "client.json").read_text())
    except FileNotFoundError as exc:
        _fail(f"{exc.filename} is missing: the authority runs `veil fe keygen` first")
    x, y = load_mnist("test")
    if not 0 <= start < len(x) or count < 1:
        _fail(f"need 0 <= start < {len(x)} and count >= 1")
    x, y = x[start : start + count], y[start : start + count]
    levels = quantise_pixels(x, client["pixel_bits"]).numpy()
    import numpy as np

    inputs = np.concatenate([levels, np.ones((len(levels), 1), np.int64)], 1)
    address = None
    if send:
        host, _, port = send.rpartition(":")
        if not host or not port.isdigit():
            _fail("--send takes HOST:PORT")
        address = (host, int(port))
    else:
        labels = labels or out.with_name(out.name + ".labels.json")
        if labels.resolve().is_relative_to(out.resolve()):
            _fail(f"--labels {labels} is inside {out}/, the folder sent to the server: the "
                  "server would learn exactly what the encryption hides")
        out.mkdir(parents=True, exist_ok=True)
    correct, seconds = 0, []
    with _progress() as bar:
        task = bar.add_task("encrypting" + (f" and sending to {send}" if send else ""),
                            total=len(inputs))
        for i, v in enumerate(inputs):
            t0 = time.perf_counter()
            ct = fe.encrypt(mpk, v)
            seconds.append(time.perf_counter() - t0)
            if address is not None:
                from veil.fe.service import ServiceError, query

                try:
                    reply = query(address, ct, timeout)
                except ServiceError as exc:
                    _fail(str(exc))
                correct += int(reply["label"] == int(y[i]))
                typer.echo(f"image {start + i}: predicted {reply['label']}, true {int(y[i])}")
            else:
                fe.dump(ct, out / f"{start + i:05d}.fe")
            bar.advance(task)
    if address is None:
        labels.write_text(json.dumps({f"{start + i:05d}.fe": int(y[i]) for i in range(len(y))}))
        typer.echo(f"wrote {len(inputs)} ciphertexts to {out}/ "
                   f"({sum(seconds) / len(seconds):.3f} s per image to encrypt); the true "
                   f"labels stay with the client in {labels}")
    else:
        typer.echo(f"accuracy {correct}/{len(inputs)}; encrypt "
                   f"{sum(seconds) / len(seconds):.3f} s per image")


@app.command()
def decrypt(
    ciphertexts: Path = typer.Argument(..., help="Folder of *.fe ciphertexts."),
    keys: Path = typer.Option(Path("fe-keys"), "--keys", "-k", help="Server key folder."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report."),
    labels_path: Path = typer.Option(None, "--labels", help="The client's true labels "
                                     "(from `veil fe encrypt`), to score the predictions."),
) -> None:
    """Server: classify encrypted images with the functional keys."""
    from veil import fe

    mpk, server = _load_server(keys)
    files = sorted(ciphertexts.glob("*.fe"))
    if not files:
        _fail(f"no *.fe ciphertexts in {ciphertexts}")
    try:
        labels = json.loads(labels_path.read_text()) if labels_path else {}
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the labels {labels_path}: {exc}")
    results, seconds = [], []
    with _progress() as bar:
        task = bar.add_task("decrypting", total=len(files))
        for path in files:
            try:
                ct = fe.load(path, mpk=mpk)
                t0 = time.perf_counter()
                c = server.classify(ct)
                seconds.append(time.perf_counter() - t0)
            except (fe.FEError, ValueError) as exc:
                _fail(f"{path.name}: {exc}")
            results.append({"file": path.name, "label": c.label, "outputs": c.outputs,
                            "true": labels.get(path.name)})
            bar.advance(task)
    scored = [r for r in results if r["true"] is not None]
    report = {"images": len(results),
              "accuracy": (sum(r["label"] == r["true"] for r in scored) / len(scored)
                           if scored else None),
              "decrypt_s_mean": sum(seconds) / len(seconds),
              "phases_s": server.timings.as_dict(), "results": results}
    if json_out:
        typer.echo(json.dumps(report, indent=1))
    else:
        for r in results:
            typer.echo(f"{r['file']}: {r['label']}" + (f" (true {r['true']})"
                                                       if r["true"] is not None else ""))
        acc = "" if report["accuracy"] is None else f"accuracy {report['accuracy']:.4f}, "
        typer.echo(f"{acc}{report['decrypt_s_mean']:.3f} s per image to decrypt 10 outputs")


@app.command()
def serve(
    keys: Path = typer.Option(Path("fe-keys"), "--keys", "-k", help="Server key folder."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(7878, help="TCP port (0: any free port)."),
    max_requests: int = typer.Option(0, help="Stop after this many requests (0: never)."),
    timeout: float = typer.Option(30.0, help="Per-connection socket timeout (seconds)."),
) -> None:
    """Server: answer encrypted images over TCP (see veil/fe/service.py for the protocol)."""
    from veil.fe.service import FEServer

    _, classifier = _load_server(keys)
    server = FEServer(classifier, host, port, timeout, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"serving encrypted QuadNet inference on {host}:{server.port} (Ctrl-C stops)")
    try:
        if max_requests:
            while server.served < max_requests:
                server.handle_request()
        else:
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def collateral(
    quick: bool = typer.Option(False, "--quick", help="Small sizes: a few minutes."),
    output: Path = typer.Option(Path("bench/results/fe_collateral.json"), "--output", "-o",
                                help="JSON report."),
    plot: Path = typer.Option(None, help="PNG plot (default: beside the JSON)."),
    alpha: float = typer.Option(None, help="Weight of the adversary loss."),
    digit: int = typer.Option(None, help="The fixed digit of the distinguisher study."),
) -> None:
    """The collateral-learning study: attack, mitigations, ten distinguishers."""
    from rich.console import Console
    from rich.table import Table

    from veil.fe.collateral import DISTINGUISHERS, CollateralConfig, plot_report, run_study

    cfg = CollateralConfig.quick() if quick else CollateralConfig()
    if alpha is not None:
        cfg.alpha = alpha
    if digit is not None:
        if not 0 <= digit <= 9:
            _fail("digit must be in 0..9")
        cfg.digit = digit
    console = Console()
    steps = 2 + 3 * (len(cfg.outputs) + 1) + cfg.semi_rounds
    with _progress() as bar:
        task = bar.add_task("collateral study", total=steps)

        def note(message: str, weight: float) -> None:
            bar.update(task, description=message, advance=weight)

        report = run_study(cfg, note)
        bar.update(task, completed=steps, description="done")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    plot = plot or output.with_suffix(".png")
    plot_report(report, plot)
    table = Table(title=f"Collateral learning (font attack); font learned directly: "
                        f"{report['direct_font_accuracy']:.3f}; baseline 0.5")
    table.add_column("setting")
    table.add_column("main (digit)")
    table.add_column("attack (font)")
    table.add_column("distinguishers min-max")
    for s in report["settings"]:
        d = s["distinguishers"]
        table.add_row(s["setting"], f"{s['main_accuracy']:.4f}", f"{s['collateral_accuracy']:.4f}",
                      f"{min(d.values()):.3f}-{max(d.values()):.3f}")
    console.print(table)
    dist = Table(title=f"Distinguishers on digit {cfg.digit} ({cfg.cv_folds}-fold CV accuracy)")
    dist.add_column("classifier")
    for s in report["settings"]:
        dist.add_column(s["setting"])
    for name in DISTINGUISHERS:
        dist.add_row(name, *(f"{s['distinguishers'][name]:.3f}" for s in report["settings"]))
    console.print(dist)
    console.print(f"wrote {output} and {plot} ({report['seconds']:.0f} s)")
