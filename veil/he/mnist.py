"""An HE-friendly MNIST network, trained once and cached, and its encrypted test-set run.

:func:`henet` is TenSEAL's tutorial architecture widened to ``channels``
convolution filters: conv 7x7 stride 3 -> square -> FC -> square -> FC 10
(multiplicative depth 5: N = 8192 at a 2^24 scale). :func:`mnist_henet` trains it
with Veil's training helper on the normalised MNIST training set and caches the
weights beside the zoo's (``veil.models.store.model_dir()``).

Example
-------
>>> net = henet(4)
>>> sum(p.numel() for p in net.parameters())
17298
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from veil.he.client import Client, EncryptedBatch, PublicKeys
from veil.he.convert import Square, convert
from veil.he.plan import plan
from veil.he.server import Server

DEFAULT_CHANNELS = 4
RECIPE = {"epochs": 6, "batch_size": 64, "lr": 2e-3}


def henet(channels: int = DEFAULT_CHANNELS, hidden: int = 64) -> nn.Module:
    """conv(1->channels, 7x7, stride 3) -> x^2 -> FC(channels*64 -> hidden) -> x^2 -> FC(10)."""
    return nn.Sequential(nn.Conv2d(1, channels, 7, stride=3), Square(), nn.Flatten(),
                         nn.Linear(channels * 64, hidden), Square(), nn.Linear(hidden, 10))


def mnist_henet(channels: int = DEFAULT_CHANNELS, retrain: bool = False, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> tuple[nn.Module, dict]:
    """The trained :func:`henet` and its metadata (plaintext test accuracy), cached."""
    from veil.data import mnist_tensors
    from veil.models.store import model_dir
    from veil.models.training import evaluate, train

    net = henet(channels)
    name = f"he-mnist-{channels}"
    weights, meta_path = model_dir() / f"{name}.pt", model_dir() / f"{name}.json"
    if not retrain and weights.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("architecture") == repr(net):
            net.load_state_dict(torch.load(weights, weights_only=True))
            return net.eval(), meta
    torch.manual_seed(seed)  # weight init only, not secret
    net = henet(channels)
    x, y = mnist_tensors("train")
    start = time.perf_counter()
    train(net, x, y, progress=progress, seed=seed, **RECIPE)
    xt, yt = mnist_tensors("test")
    meta = dict(RECIPE, channels=channels, architecture=repr(net),
                train_seconds=round(time.perf_counter() - start, 1),
                test_accuracy=evaluate(net, xt, yt))
    torch.save(net.state_dict(), weights)
    meta_path.write_text(json.dumps(meta, indent=1))
    return net.eval(), meta


def encrypted_test_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                            layout: str = "batch", chunk: int | None = None,
                            progress: Callable[[int, int], None] | None = None) -> dict:
    """Encrypt ``x``, evaluate under CKKS, decrypt, and score against ``y``.

    Returns accuracy, agreement with the plaintext model, and the timings and sizes
    per image. ``chunk`` images are encrypted at a time (default: one full
    ciphertext batch, N/2 images, in the ``batch`` layout; 1 in ``vector``).
    """
    graph = convert(net, tuple(x.shape[1:]))
    spec = plan(graph, layout)
    t0 = time.perf_counter()
    client = Client(spec)
    keys = client.public_keys().to_bytes()
    server = Server(graph, PublicKeys.from_bytes(keys))
    setup = time.perf_counter() - t0
    chunk = chunk or (spec.params.slots if layout == "batch" else 1)
    flat = x.reshape(len(x), -1).double().numpy()
    preds, enc_s, eval_s, dec_s, up, down = [], 0.0, 0.0, 0.0, 0, 0
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk]
        t = time.perf_counter()
        blob = client.encrypt(part).to_bytes()
        t1 = time.perf_counter()
        out = server.evaluate(EncryptedBatch.from_bytes(server.ctx, blob)).to_bytes()
        t2 = time.perf_counter()
        logits = client.decrypt(EncryptedBatch.from_bytes(client.ctx, out))
        t3 = time.perf_counter()
        enc_s, eval_s, dec_s = enc_s + t1 - t, eval_s + t2 - t1, dec_s + t3 - t2
        up, down = up + len(blob), down + len(out)
        preds.append(logits.argmax(1))
        if progress is not None:
            progress(min(start + chunk, len(flat)), len(flat))
    pred = np.concatenate(preds)
    with torch.no_grad():
        plain = net(x.float()).argmax(1).numpy()
    n = len(flat)
    return {"layout": layout, "images": n, "accuracy": float((pred == y.numpy()).mean()),
            "plaintext_accuracy": float((plain == y.numpy()).mean()),
            "agreement": float((pred == plain).mean()), "params": spec.params.to_dict(),
            "setup_s": setup, "key_bytes": len(keys),
            "encrypt_s_per_image": enc_s / n, "evaluate_s_per_image": eval_s / n,
            "decrypt_s_per_image": dec_s / n, "s_per_image": (enc_s + eval_s + dec_s) / n,
            "bytes_up_per_image": up / n, "bytes_down_per_image": down / n}
