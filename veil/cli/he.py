"""``veil he``: CKKS encrypted inference of an HE-friendly MNIST network.

Two roles, two folders:

* ``veil he keygen --dir keys``: the client asks for the model's public spec
  (here: the cached MNIST HE net, trained on first use) and makes its keys:
  ``keys/secret.key`` (mode 0600, stays with the client), ``keys/public.keys``
  (for the server; no secret key inside).
* ``veil he encrypt --keys keys --count 16 --out cts.he``: encrypt MNIST test
  images (labels to ``cts.he.labels.json``).
* ``veil he infer --keys keys/public.keys cts.he --out out.he``: the server
  evaluates on ciphertexts with the public keys only.
* ``veil he decrypt --keys keys out.he``: the client decrypts and scores.
* ``veil he serve``: the server answers over TCP; ``veil he encrypt --send HOST:PORT``
  queries it.
* ``veil he mnist``: the whole encrypted test set, with accuracy, time and sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="CKKS homomorphic encryption: encrypted MNIST inference.",
                  no_args_is_help=True)

LAYOUT_HELP = "vector: one image per ciphertext (latency); batch: N/2 images per ciphertext."


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn())


def _model(retrain: bool = False):
    from veil.he.mnist import mnist_henet

    with _progress() as bar:
        task = bar.add_task("HE MNIST net (trained once, then cached)", total=None)
        net, meta = mnist_henet(retrain=retrain,
                                progress=lambda s, t: bar.update(task, completed=s, total=t))
    return net, meta


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    raise AssertionError


def _client(keys: Path):
    from veil.he import Client

    try:
        return Client.load(keys / "secret.key")
    except FileNotFoundError:
        _fail(f"{keys / 'secret.key'} is missing: run `veil he keygen --dir {keys}` first")
    except ValueError as exc:
        _fail(str(exc))
    raise AssertionError


@app.command()
def keygen(dir: Path = typer.Option(Path("he-keys"), "--dir", "-d", help="Where to write keys."),
           layout: str = typer.Option("vector", help=LAYOUT_HELP)) -> None:
    """Make the client's keys for the MNIST HE net's spec."""
    from veil.he import Client, convert, plan

    net, _ = _model()
    try:
        spec = plan(convert(net, (1, 28, 28)), layout)
    except ValueError as exc:
        _fail(str(exc))
    client = Client(spec)
    dir.mkdir(parents=True, exist_ok=True)
    client.save(dir / "secret.key")
    (dir / "public.keys").write_bytes(client.public_keys().to_bytes())
    (dir / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1))
    p = spec.params
    typer.echo(f"keys in {dir}/: secret.key (keep it), public.keys "
               f"({(dir / 'public.keys').stat().st_size / 1e6:.1f} MB, for the server); "
               f"N={p.poly_modulus_degree}, moduli {list(p.coeff_mod_bit_sizes)}, "
               f"scale 2^{p.scale_bits}, layout {layout}")


@app.command()
def encrypt(keys: Path = typer.Option(Path("he-keys"), "--keys", "-k", help="Client key folder."),
            count: int = typer.Option(16, help="How many MNIST test images."),
            offset: int = typer.Option(0, help="First test image."),
            out: Path = typer.Option(Path("cts.he"), "--out", "-o"),
            send: str = typer.Option(None, help="HOST:PORT of `veil he serve` to query instead.")
            ) -> None:
    """Encrypt MNIST test images (or send them to a server and print the predictions)."""
    from veil.data import mnist_tensors

    if count < 1 or offset < 0:
        _fail("--count must be >= 1 and --offset >= 0")
    client = _client(keys)
    x, y = mnist_tensors("test", limit=offset + count)
    x, y = x[offset:], y[offset:]
    flat = x.reshape(len(x), -1).double().numpy()
    if send:
        from veil.he.service import HEConnection, ServiceError

        host, _, port = send.rpartition(":")
        try:
            with HEConnection((host or "127.0.0.1", int(port)), client.spec.layout,
                              client=client) as conn:
                pred = conn.infer(flat).argmax(1)
        except (ServiceError, ValueError) as exc:
            _fail(str(exc))
        acc = float((pred == y.numpy()).mean())
        typer.echo(f"predictions {pred.tolist()}; accuracy {acc:.4f} on {len(y)} images")
        return
    out.write_bytes(client.encrypt(flat).to_bytes())
    Path(f"{out}.labels.json").write_text(json.dumps(y.tolist()))
    typer.echo(f"{len(y)} images encrypted to {out} ({out.stat().st_size / 1e6:.2f} MB)")


@app.command()
def infer(ciphertexts: Path = typer.Argument(..., help="Encrypted images (from `encrypt`)."),
          keys: Path = typer.Option(Path("he-keys/public.keys"), "--keys", "-k",
                                    help="The client's public keys."),
          out: Path = typer.Option(Path("out.he"), "--out", "-o")) -> None:
    """Server side: evaluate the MNIST HE net on ciphertexts (public keys only)."""
    import time

    from veil.he import EncryptedBatch, PublicKeys, Server, convert

    net, _ = _model()
    try:
        server = Server(convert(net, (1, 28, 28)), PublicKeys.from_bytes(_read(keys)))
        enc = EncryptedBatch.from_bytes(server.ctx, _read(ciphertexts))
        t = time.perf_counter()
        result = server.evaluate(enc)
    except ValueError as exc:
        _fail(str(exc))
    seconds = time.perf_counter() - t
    out.write_bytes(result.to_bytes())
    typer.echo(f"evaluated {enc.n} images in {seconds:.2f}s ({seconds / enc.n * 1e3:.1f} "
               f"ms/image); encrypted outputs in {out}")


@app.command()
def decrypt(outputs: Path = typer.Argument(..., help="Encrypted outputs (from `infer`)."),
            keys: Path = typer.Option(Path("he-keys"), "--keys", "-k"),
            labels: Path = typer.Option(None, help="Labels JSON (default: <cts>.labels.json "
                                        "beside the ciphertexts, if given)."),
            json_out: bool = typer.Option(False, "--json")) -> None:
    """Client side: decrypt the logits, print predictions (and accuracy given labels)."""
    from veil.he import EncryptedBatch

    client = _client(keys)
    try:
        logits = client.decrypt(EncryptedBatch.from_bytes(client.ctx, _read(outputs)))
    except ValueError as exc:
        _fail(str(exc))
    pred = logits.argmax(1).tolist()
    result = {"predictions": pred}
    if labels is not None:
        y = json.loads(_read(labels))
        if len(y) != len(pred):
            _fail(f"{labels} has {len(y)} labels for {len(pred)} outputs")
        result["accuracy"] = sum(int(a == b) for a, b in zip(pred, y, strict=True)) / len(y)
    typer.echo(json.dumps(result) if json_out else
               f"predictions {pred}" + (f"; accuracy {result['accuracy']:.4f}"
                                        if "accuracy" in result else ""))


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
          port: int = typer.Option(7730)) -> None:
    """Serve the MNIST HE net over TCP until interrupted."""
    import threading

    from veil.he.service import start_server

    net, _ = _model()
    server = start_server(net, (1, 28, 28), host, port)
    typer.echo(f"serving encrypted MNIST inference on {host}:{server.port} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


@app.command()
def mnist(limit: int = typer.Option(None, help="Only the first LIMIT test images."),
          layout: str = typer.Option("batch", help=LAYOUT_HELP),
          retrain: bool = typer.Option(False, help="Retrain the cached HE net."),
          json_out: bool = typer.Option(False, "--json")) -> None:
    """Train (once) the HE-friendly MNIST net and run the encrypted test set."""
    from veil.data import mnist_tensors
    from veil.he.mnist import encrypted_test_accuracy

    net, meta = _model(retrain)
    x, y = mnist_tensors("test", limit=limit)
    with _progress() as bar:
        task = bar.add_task(f"encrypted inference ({layout})", total=len(y))
        result = encrypted_test_accuracy(net, x, y, layout,
                                         progress=lambda d, t: bar.update(task, completed=d))
    if json_out:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"encrypted accuracy {result['accuracy']:.4f} on {result['images']} images "
               f"(plaintext {result['plaintext_accuracy']:.4f}, agreement "
               f"{result['agreement']:.4f}); {result['s_per_image'] * 1e3:.1f} ms/image "
               f"(encrypt {result['encrypt_s_per_image'] * 1e3:.1f}, evaluate "
               f"{result['evaluate_s_per_image'] * 1e3:.1f}, decrypt "
               f"{result['decrypt_s_per_image'] * 1e3:.1f}); "
               f"{result['bytes_up_per_image'] / 1e3:.0f} kB up, "
               f"{result['bytes_down_per_image'] / 1e3:.0f} kB down per image")
