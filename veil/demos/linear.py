"""Demo: a linear MNIST classifier evaluated on secret-shared data by two parties.

Party 0 (the model owner) holds the weights of a linear classifier trained on
MNIST; party 1 (the data owner) holds test images. The logits ``X @ W + b`` are
computed on secret shares between two parties and a dealer, over TCP on
localhost by default, and revealed to party 1 only: the model owner learns
nothing about the images, the data owner nothing about the weights beyond the
logits. The result is printed next to the plaintext one, with the measured
rounds, bytes and offline/online times.

Example
-------
>>> from veil.demos.linear import run_linear_demo
>>> summary = run_linear_demo(transport="local", n_images=20)   # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

import torch

from veil.sharing.material import Plan

N_FEATURES = 28 * 28
N_CLASSES = 10


def train_linear_classifier(n_train: int = 10_000, ridge: float = 10.0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (ridge) linear classifier on one-hot MNIST labels: ``(W, b)``.

    Closed form, deterministic, about a second on a laptop core; ~85% test accuracy.
    """
    from veil.data import mnist_tensors

    x, y = mnist_tensors("train", limit=n_train)
    x = x.reshape(len(x), -1).double()
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    target = torch.nn.functional.one_hot(y.long(), N_CLASSES).double()
    gram = xb.T @ xb + ridge * torch.eye(xb.shape[1], dtype=torch.float64)
    coef = torch.linalg.solve(gram, xb.T @ target)
    return coef[:-1].float(), coef[-1].float()


def linear_job(party, my_input: Any, n_images: int) -> dict[str, Any]:
    """The SPMD program: party 0 inputs ``(W, b)``, party 1 inputs images ``(n, 784)``."""
    w = party.share(my_input[0] if party.rank == 0 else None, owner=0,
                    shape=(N_FEATURES, N_CLASSES))
    b = party.share(my_input[1] if party.rank == 0 else None, owner=0, shape=(N_CLASSES,))
    x = party.share(my_input if party.rank == 1 else None, owner=1,
                    shape=(n_images, N_FEATURES))
    t0 = time.perf_counter()
    logits = x @ w + b
    online_compute_s = time.perf_counter() - t0
    revealed = logits.reveal(to=1)  # only the data owner learns its predictions
    stats = party.stats()
    stats["online_compute_s"] = online_compute_s
    return {"logits": revealed, "stats": stats}


def run_linear_demo(transport: str = "tcp", n_images: int = 100, n_train: int = 10_000,
                    timeout: float = 60.0, quiet: bool = False) -> dict[str, Any]:
    """Train (plaintext, party 0), then evaluate securely on ``n_images`` test images.

    Returns a summary dict: errors against plaintext, agreement, accuracies, and the
    measured rounds, bytes and times of each party.
    """
    import veil
    from veil.data import mnist_tensors

    t0 = time.perf_counter()
    weights, bias = train_linear_classifier(n_train)
    train_s = time.perf_counter() - t0
    images, labels = mnist_tensors("test", limit=n_images)
    flat = images.reshape(len(images), -1)
    plan = Plan().add("matmul", shape_x=[n_images, N_FEATURES], shape_y=[N_FEATURES, N_CLASSES])

    t0 = time.perf_counter()
    r0, r1 = veil.run(linear_job, transport=transport, inputs=((weights, bias), flat),
                      args=(n_images,), plan=plan, timeout=timeout)
    wall_s = time.perf_counter() - t0

    secure = r1["logits"]
    plain = flat @ weights + bias
    pred_secure, pred_plain = secure.argmax(1), plain.argmax(1)
    s0, s1 = r0["stats"], r1["stats"]
    summary = {
        "transport": transport,
        "n_images": n_images,
        "train_s": train_s,
        "max_abs_error": float((secure - plain).abs().max()),
        "prediction_agreement": float((pred_secure == pred_plain).float().mean()),
        "accuracy_secure": float((pred_secure == labels).float().mean()),
        "accuracy_plaintext": float((pred_plain == labels).float().mean()),
        "party0_learned_logits": r0["logits"] is not None,
        "rounds": s1["rounds"],
        "bytes_sent": [s0["bytes_sent"], s1["bytes_sent"]],
        "offline_bytes": [s0["offline_bytes_received"], s1["offline_bytes_received"]],
        "offline_s": max(s0["offline_s"], s1["offline_s"]),
        "online_s": max(s0["online_s"], s1["online_s"]),
        "online_compute_s": max(s0["online_compute_s"], s1["online_compute_s"]),
        "wall_s": wall_s,
        "logits_secure": secure[:3].tolist(),
        "logits_plaintext": plain[:3].tolist(),
    }
    if not quiet:
        _print(summary)
    return summary


def _print(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]Secret-shared linear MNIST classifier[/bold]: weights owned by party 0, "
                  f"{s['n_images']} test images owned by party 1, dealer as third party, "
                  f"transport [bold]{s['transport']}[/bold].")
    logits = Table(title="First image: logits (secure vs plaintext)")
    logits.add_column("class", justify="right")
    logits.add_column("secure", justify="right")
    logits.add_column("plaintext", justify="right")
    for k, (a, b) in enumerate(zip(s["logits_secure"][0], s["logits_plaintext"][0],
                                   strict=True)):
        logits.add_row(str(k), f"{a:+.5f}", f"{b:+.5f}")
    console.print(logits)
    t = Table(title="Result and measured cost")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("max |secure - plaintext| over all logits", f"{s['max_abs_error']:.2e}"),
        ("predictions identical to plaintext", f"{100 * s['prediction_agreement']:.1f}%"),
        ("accuracy (secure / plaintext)",
         f"{100 * s['accuracy_secure']:.1f}% / {100 * s['accuracy_plaintext']:.1f}%"),
        ("party 0 saw the logits", "no" if not s["party0_learned_logits"] else "yes"),
        ("online rounds", str(s["rounds"])),
        ("online bytes sent (party 0 / party 1)",
         f"{s['bytes_sent'][0]:,} / {s['bytes_sent'][1]:,}"),
        ("offline bytes from dealer (party 0 / party 1)",
         f"{s['offline_bytes'][0]:,} / {s['offline_bytes'][1]:,}"),
        ("offline time (dealer material)", f"{1e3 * s['offline_s']:.1f} ms"),
        ("online time (sharing, matmul, reveal)", f"{1e3 * s['online_s']:.1f} ms"),
        ("  of which the secure matmul + bias", f"{1e3 * s['online_compute_s']:.1f} ms"),
        ("wall time incl. process start-up", f"{s['wall_s']:.2f} s"),
        ("plaintext training (party 0, ridge)", f"{s['train_s']:.2f} s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
