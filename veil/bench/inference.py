"""Benchmark: private inference of the AriaNN zoo, next to CrypTen and plaintext PyTorch.

For Network1, Network2, LeNet, AlexNet, VGG16 and ResNet18 at AriaNN's batch
sizes (128, 128, 128, 128, 64, 8) and at batch 1, it measures (party 0, party 1
and the dealer as three processes talking TCP on loopback, one torch thread
each): offline time, online time, online bytes and rounds, dealer key bytes,
and private vs plaintext accuracy on real test images where trained weights
are cached. Online time is also given under two *network models* computed from
the measured bytes and rounds (LAN: 1 Gbit/s, 0.5 ms RTT; WAN: 100 Mbit/s,
40 ms RTT). CrypTen 0.4.1 runs LeNet at batch 1 and 64 in the same run when it
is importable (``$VEIL_CRYPTEN_PATH`` may point at a ``pip install --target``
folder); otherwise its reference figures are shown, labelled as not measured.

Results are written after every configuration, so an interrupted run resumes
where it stopped (``resume=True``); ``models=`` selects networks.

Example
-------
>>> from veil.bench.inference import main
>>> main(json_stdout=False, output=None, quick=True)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from veil.bench.output import output_for
from veil.bench.peers import crypten_env
from veil.nn.report import LAN, WAN

DEFAULT_OUTPUT = Path("bench/results/inference.json")
MODELS = ("network1", "network2", "lenet", "alexnet", "vgg16", "resnet18")

# CrypTen 0.4.1 measured earlier on our machines: 2 processes, localhost, one thread each.
# Bytes are the whole system's, as Veil counts them (both parties' traffic once). CrypTen
# logs every exchange at both ends, so its documented system total is the sum of the two
# parties' counters divided by two (crypten.communicator.Communicator.get_communication_stats);
# in a symmetric 2PC run that equals one party's counter, which is what these figures are.
CRYPTEN_REFERENCE = {
    1: {"online_s": 0.43, "online_rounds": 123, "online_bytes": 35.8e6},
    64: {"online_s": 5.25, "online_rounds": 123, "online_bytes": 1858e6},
}
# AriaNN (PETS 2022), private inference over LAN, seconds per image (CPU, GPU). Per image:
# AriaNN's main.py prints the online time of a batch divided by the batch size, run at
# batch 128 (AlexNet), 64 (VGG16) and 8 (ResNet18).
ARIANN_LAN = {"alexnet": (0.15, 0.078), "vgg16": (1.75, 1.55), "resnet18": (19.9, 13.9)}


def configs(quick: bool, models: list[str] | None = None,
            batches: list[int] | None = None) -> list[tuple[str, int]]:
    """``(model, batch)`` pairs to measure (``batches`` overrides the default sizes)."""
    from veil.models import ZOO

    chosen = [m.lower() for m in (models or MODELS)]
    for m in chosen:
        if m not in ZOO:
            raise ValueError(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    out: list[tuple[str, int]] = []
    for m in chosen:
        sizes = [1] if quick and m in ("vgg16", "resnet18", "alexnet") else \
            [1, 8] if quick else [1, ZOO[m].batch_size]
        if m == "lenet" and not quick:
            sizes.append(64)  # the CrypTen comparison point
        out += [(m, b) for b in sorted(set(batches or sizes))]
    return out


def _data(name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    from veil.models import entry
    from veil.models.training import dataset

    e = entry(name)
    if e.dataset is None:
        gen = torch.Generator().manual_seed(0)  # benchmark input, not secret
        return torch.randn(batch, *e.input_shape, generator=gen), None
    return dataset(name, "test", limit=batch)


def _model(name: str) -> tuple[torch.nn.Module, bool]:
    from veil.models import build, has_weights, load_weights

    if has_weights(name):
        return load_weights(name)[0], True
    torch.manual_seed(0)  # random init for a timing-only run; not secret
    return build(name), False


def _plaintext_s(model: torch.nn.Module, x: torch.Tensor, repeat: int = 3) -> float:
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeat):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best


def measure(name: str, batch: int, transport: str = "tcp") -> dict[str, Any]:
    """One configuration: secure inference on real (or random) inputs, plus plaintext."""
    from veil.nn.inference import secure_inference

    model, trained = _model(name)
    x, y = _data(name, batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain_s = _plaintext_s(model, x)
    finally:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    logits, report = secure_inference(model, x, transport=transport, threads=1, timeout=1800)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        plain = model(x)
    row = {"model": name, "batch": batch, "trained": trained, "plaintext_s": plain_s,
           "wall_s": wall, **report.as_dict(),
           "max_abs_logit_error": float((logits - plain.double()).abs().max()),
           "agreement": float((logits.argmax(1) == plain.argmax(1)).float().mean())}
    if trained and y is not None:
        row["plaintext_accuracy"] = float((plain.argmax(1) == y).float().mean())
        row["private_accuracy"] = float((logits.argmax(1) == y).float().mean())
    return row


# --------------------------------------------------------------------------- CrypTen peer

_CRYPTEN_WORKER = r"""
import json, sys, time, types
import torch
# CrypTen 0.4.1 imports a torch.onnx module that torch 2.x removed; it is only used by the
# ONNX converter, which we do not call.
shim = types.ModuleType("torch.onnx._internal.registration"); shim.registry = None
sys.modules.setdefault("torch.onnx._internal.registration", shim)
import crypten, crypten.nn as cnn, crypten.mpc as mpc, crypten.communicator as comm
crypten.cfg.communicator.verbose = True
batch = int(sys.argv[1])

@mpc.run_multiprocess(world_size=2)
def job():
    torch.set_num_threads(1)
    model = cnn.Sequential(cnn.Conv2d(1, 20, 5), cnn.ReLU(), cnn.MaxPool2d(2),
                           cnn.Conv2d(20, 50, 5), cnn.ReLU(), cnn.MaxPool2d(2), cnn.Flatten(),
                           cnn.Linear(800, 500), cnn.ReLU(), cnn.Linear(500, 10))
    model.encrypt(src=0)
    model.eval()
    x = crypten.cryptensor(torch.randn(batch, 1, 28, 28), src=1)
    comm.get().reset_communication_stats()
    t = time.perf_counter()
    model(x).get_plain_text(dst=1)
    dt = time.perf_counter() - t
    st = comm.get().get_communication_stats()
    print("CRYPTEN " + json.dumps({"rank": comm.get().get_rank(), "online_s": dt,
          "online_rounds": st["rounds"], "bytes_one_party": st["bytes"]}), flush=True)

job()
"""


def crypten_lenet(batch: int, timeout: float = 900) -> dict[str, Any] | None:
    """CrypTen 0.4.1 on LeNet (2 processes, gloo on localhost, 1 thread each), or ``None``."""
    env = crypten_env()
    try:
        proc = subprocess.run([sys.executable, "-c", _CRYPTEN_WORKER, str(batch)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    # The two CrypTen processes share stdout, so their lines may interleave.
    decoder = json.JSONDecoder()
    rows = [decoder.raw_decode(part)[0] for part in proc.stdout.split("CRYPTEN ")[1:]]
    if proc.returncode != 0 or len(rows) != 2:
        return None
    return {"online_s": max(r["online_s"] for r in rows),
            "online_rounds": max(r["online_rounds"] for r in rows),
            # CrypTen's documented system total: its two per-party logs count every exchange
            # at both ends (summing them, as this did before, doubled CrypTen's bytes).
            "online_bytes": sum(r["bytes_one_party"] for r in rows) // 2, "measured": True}


# --------------------------------------------------------------------------- report

def _load(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def _row_key(model: str, batch: int) -> str:
    return f"{model}@{batch}"


def comparisons(data: dict[str, Any]) -> dict[str, Any]:
    """Ratios against CrypTen (LeNet) and AriaNN's published LAN times."""
    rows, out = data.get("rows", {}), {}
    for batch in (1, 64):
        ours = rows.get(_row_key("lenet", batch))
        peer = data.get("crypten", {}).get(str(batch))
        if ours and peer:
            peer_lan = peer["online_s"] + LAN.transfer_s(peer["online_bytes"],
                                                         peer["online_rounds"])
            out[f"lenet@{batch} vs CrypTen"] = {
                "crypten_measured": peer.get("measured", False),
                "online_lan_speedup": peer_lan / ours["lan_online_s"],
                "online_measured_speedup": peer["online_s"] / ours["online_s"],
                "bytes_ratio": peer["online_bytes"] / max(ours["online_bytes"], 1),
                "rounds_ratio": peer["online_rounds"] / max(ours["online_rounds"], 1),
            }
    for model, (cpu, gpu) in ARIANN_LAN.items():
        for key, row in rows.items():
            if row["model"] == model:
                per_image = row["lan_online_s"] / row["batch"]
                out[f"{key} vs AriaNN LAN"] = {
                    "ariann_cpu_s_per_image": cpu, "ariann_gpu_s_per_image": gpu,
                    "ours_lan_s_per_batch": row["lan_online_s"],
                    "ours_lan_s_per_image": per_image,
                    "speedup_vs_ariann_cpu": cpu / per_image,
                    "speedup_vs_ariann_gpu": gpu / per_image,
                }
    return out


def _table(data: dict[str, Any]) -> Table:
    t = Table(title="Private inference (3 processes, TCP loopback, 1 thread each); "
                    "LAN/WAN columns are network models on measured traffic")
    cols = ("model", "batch", "setup MB", "offline s", "online s", "LAN s", "WAN s",
            "online MB", "rounds", "dealer keys MB", "plain ms", "acc plain/private", "agree")
    for c in cols:
        t.add_column(c, justify="right")
    for row in data.get("rows", {}).values():
        acc = (f"{100 * row['plaintext_accuracy']:.1f}/{100 * row['private_accuracy']:.1f}%"
               if "private_accuracy" in row else "(untrained)")
        t.add_row(row["model"], str(row["batch"]), f"{row.get('setup_bytes', 0) / 1e6:.1f}",
                  f"{row['offline_s']:.2f}",
                  f"{row['online_s']:.3f}", f"{row['lan_online_s']:.3f}",
                  f"{row['wan_online_s']:.2f}", f"{row['online_bytes'] / 1e6:.2f}",
                  str(row["online_rounds"]), f"{row['dealer_key_bytes'] / 1e6:.2f}",
                  f"{1e3 * row['plaintext_s']:.1f}", acc, f"{100 * row['agreement']:.1f}%")
    for batch, peer in sorted(data.get("crypten", {}).items(), key=lambda kv: int(kv[0])):
        label = "CrypTen" if peer.get("measured") else "CrypTen (earlier run, not run now)"
        lan = peer["online_s"] + LAN.transfer_s(peer["online_bytes"], peer["online_rounds"])
        wan = peer["online_s"] + WAN.transfer_s(peer["online_bytes"], peer["online_rounds"])
        t.add_row(f"{label} lenet", batch, "-", "-", f"{peer['online_s']:.3f}", f"{lan:.3f}",
                  f"{wan:.2f}", f"{peer['online_bytes'] / 1e6:.2f}", str(peer["online_rounds"]),
                  "-", "-", "-", "-")
    return t


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False,
         models: list[str] | None = None, resume: bool = True, crypten: bool = True,
         transport: str = "tcp", batches: list[int] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write JSON (default ``bench/results/inference.json``).

    ``resume`` keeps configurations already in the output file (delete it, or pass
    ``resume=False``, to measure again).
    """
    path = Path(output) if output is not None else (
        output_for("inference", None, quick) or DEFAULT_OUTPUT)
    console = Console(stderr=json_stdout, width=max(Console().width, 150))
    data = _load(path) if resume else {}
    data.setdefault("rows", {})
    data.setdefault("crypten", {})
    data["setup"] = {"transport": transport, "threads_per_party": 1, "quick": quick,
                     "machine_cores": os.cpu_count(), "torch": torch.__version__,
                     "lan_model": LAN.name, "wan_model": WAN.name}
    for name, batch in configs(quick, models, batches):
        key = _row_key(name, batch)
        if key in data["rows"]:
            continue
        console.print(f"measuring {key} ...")
        data["rows"][key] = measure(name, batch, transport)
        r = data["rows"][key]
        console.print(f"  online {r['online_s']:.3f} s, offline {r['offline_s']:.2f} s, "
                      f"{r['online_bytes'] / 1e6:.2f} MB, {r['online_rounds']} rounds")
        _save(path, data)
    if crypten and (models is None or "lenet" in [m.lower() for m in models]):
        for batch in ((1,) if quick else (1, 64)):
            if data["crypten"].get(str(batch), {}).get("measured"):
                continue
            console.print(f"CrypTen 0.4.1 LeNet batch {batch} ...")
            got = crypten_lenet(batch)
            data["crypten"][str(batch)] = got if got is not None else \
                dict(CRYPTEN_REFERENCE[batch], measured=False)
            _save(path, data)
    data["comparisons"] = comparisons(data)
    _save(path, data)
    console.print(_table(data))
    for k, v in data["comparisons"].items():
        console.print(f"{k}: " + ", ".join(
            f"{kk}={vv:.2f}" if isinstance(vv, float) else f"{kk}={vv}" for kk, vv in v.items()))
    console.print(f"results written to {path}")
    if json_stdout:
        print(json.dumps(data, indent=2, default=float))
    return data


def _cli(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="small configurations only")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes overriding the defaults")
    parser.add_argument("--fresh", action="store_true", help="ignore results already saved")
    parser.add_argument("--no-crypten", action="store_true", help="skip the CrypTen peer")
    parser.add_argument("--transport", default="tcp", choices=["tcp", "local"])
    ns = parser.parse_args(argv)
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick,
         models=ns.models.split(",") if ns.models else None, resume=not ns.fresh,
         crypten=not ns.no_crypten, transport=ns.transport,
         batches=[int(b) for b in ns.batches.split(",")] if ns.batches else None)


if __name__ == "__main__":
    _cli()
