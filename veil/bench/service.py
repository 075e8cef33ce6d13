"""Private inference as a service: queries per second and latency, measured over shaped links.

The three roles run as three processes (dealer, model-owner server, and the
data-owner client in this process), each with its own credentials and one
torch thread. Every link goes through a latency-and-bandwidth shaping TCP
proxy (:mod:`veil.bench.netshape`) in front of the dealer and the server:

- ``loopback``: no proxy;
- ``LAN``: 0.25 ms each way, 1 Gbit/s, per direction of each link;
- ``WAN``: 20 ms each way, 100 Mbit/s.

For LeNet at batch 1 and 64 and dealer material generated on demand or taken
from a pool preprocessed ahead of time (:func:`veil.nn.service.preprocess_pool`),
one client opens a session (weights shared once), sends one warm-up query
(not timed) and then ``queries`` timed queries in a row. Reported: queries per
second (timed queries / their total wall time), p50/p95 latency as the client
sees it (request to revealed output, dealer material included), online time,
online bytes and rounds; and, next to the measured LAN/WAN online times, the
LAN/WAN *models* of :class:`~veil.nn.report.InferenceReport` computed from the
loopback run's measured online time, bytes and rounds.

Usage: ``python bench/service.py [--json] [--output F] [--quick]`` or
``veil bench service``. Material for LeNet is about 32 MB per image and party,
so batch 64 moves about 2 GB to each party per query; WAN at batch 64 (about
3 minutes per query) runs only with ``wan64=True``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.bench.netshape import LAN, WAN, Shape, ShapingProxy
from veil.bench.output import publish

DEFAULT_OUTPUT = Path("bench/results/service.json")
MODEL = "lenet"
SHAPE = (1, 28, 28)
SHAPES: dict[str, Shape | None] = {"loopback": None, "LAN": LAN, "WAN": WAN}


# --------------------------------------------------------------------------- role processes

def _dealer_proc(keys: str, store: str | None, ready, stop) -> None:
    torch.set_num_threads(1)
    from veil.nn.service import DealerService

    with DealerService("127.0.0.2:0", keys, store=store) as dealer:
        ready.put(dealer.address)
        stop.wait()


def _server_proc(keys: str, dealer: str, seed: int, ready, stop) -> None:
    torch.set_num_threads(1)
    from veil.models import build
    from veil.nn.service import InferenceServer

    torch.manual_seed(seed)  # not-secret: benchmark weights
    with InferenceServer(build(MODEL), SHAPE, "127.0.0.3:0", dealer, keys, timeout=600,
                         max_batch=64) as server:
        ready.put(server.address)
        stop.wait()


def _proxy_proc(upstreams: list[str], shape: Shape, ready, stop) -> None:
    proxies = [ShapingProxy("127.0.0.4:0", up, shape).start() for up in upstreams]
    ready.put([p.address for p in proxies])
    stop.wait()
    for p in proxies:
        p.close()


class _Roles:
    """Start a process, wait for the address it reports; stop them all at the end."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.stop = self.ctx.Event()
        self.procs: list = []

    def start(self, target, *args) -> Any:
        ready = self.ctx.Queue()
        p = self.ctx.Process(target=target, args=(*args, ready, self.stop), daemon=True)
        p.start()
        self.procs.append(p)
        return ready.get(timeout=120)

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)

    def __enter__(self) -> _Roles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- one configuration

def _measure(keys: str, network: str, batch: int, material: str, queries: int,
             workdir: Path) -> dict[str, Any]:
    from veil.models import build
    from veil.nn import convert
    from veil.nn.report import LAN as LAN_MODEL
    from veil.nn.report import WAN as WAN_MODEL
    from veil.nn.service import InferenceClient, preprocess_pool

    row: dict[str, Any] = {"network": network, "batch": batch, "material": material,
                           "queries": queries}
    store = None
    if material == "preprocessed":
        store = workdir / f"pool-{network}-{batch}"
        shutil.rmtree(store, ignore_errors=True)
        t0 = time.perf_counter()
        stats = preprocess_pool(convert(build(MODEL), SHAPE), batch, queries + 1, store)
        row["preprocess_s"] = time.perf_counter() - t0
        row["pool_bytes"] = stats["bytes"]
    with _Roles() as roles:
        dealer = roles.start(_dealer_proc, keys, str(store) if store else None)
        shape = SHAPES[network]
        if shape is not None:
            (dealer,) = roles.start(_proxy_proc, [dealer], shape)
        server = roles.start(_server_proc, keys, dealer, 0)
        if shape is not None:
            (server,) = roles.start(_proxy_proc, [server], shape)
        gen = torch.Generator().manual_seed(1)  # not-secret: benchmark inputs
        t0 = time.perf_counter()
        with InferenceClient(server, dealer, build(MODEL), SHAPE, keys, timeout=600,
                             offline="auto") as client:
            row["session_open_s"] = time.perf_counter() - t0
            client.query(torch.randn(batch, *SHAPE, generator=gen))  # warm-up, not timed
            reports = [client.query(torch.randn(batch, *SHAPE, generator=gen))[1]
                       for _ in range(queries)]
    if store is not None:
        shutil.rmtree(store, ignore_errors=True)
    lat = np.array([r.extra["latency_s"] for r in reports])
    online = np.array([r.online_s for r in reports])
    row.update({
        "qps": float(len(lat) / lat.sum()),
        "images_per_s": float(batch * len(lat) / lat.sum()),
        "p50_s": float(np.percentile(lat, 50)),
        "p95_s": float(np.percentile(lat, 95)),
        "online_s": float(np.median(online)),
        "offline_s": float(np.median([r.offline_s for r in reports])),
        "online_bytes": int(reports[0].online_bytes),
        "online_rounds": int(reports[0].online_rounds),
        "offline_bytes": int(reports[0].offline_bytes),
        "setup_bytes": int(reports[0].setup_bytes),
        "offline_mode": reports[0].extra["offline_mode"],
        "modelled_lan_online_s": float(np.median([r.modelled_online_s(LAN_MODEL)
                                                  for r in reports])),
        "modelled_wan_online_s": float(np.median([r.modelled_online_s(WAN_MODEL)
                                                  for r in reports])),
    })
    return row


def _configs(quick: bool, wan64: bool) -> list[tuple[str, int, str, int]]:
    if quick:
        return [(net, 1, mat, 3) for net in ("loopback", "LAN") for mat in
                ("on demand", "preprocessed")]
    out = [(net, 1, mat, 10) for net in ("loopback", "LAN", "WAN")
           for mat in ("on demand", "preprocessed")]
    nets64 = ("loopback", "LAN", "WAN") if wan64 else ("loopback", "LAN")
    out += [(net, 64, mat, 3) for net in nets64 for mat in ("on demand", "preprocessed")]
    return out


def run_benchmark(quick: bool = False, wan64: bool = False) -> dict[str, Any]:
    from veil.comm.credentials import init_keys

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="veil-bench-service-") as tmp:
        keys = os.path.join(tmp, "keys")
        init_keys(keys)
        for network, batch, material, queries in _configs(quick, wan64):
            row = _measure(keys, network, batch, material, queries, Path(tmp))
            rows.append(row)
            print(f"  {network:8s} batch {batch:3d} {material:12s}: {row['qps']:.2f} q/s, "
                  f"p50 {row['p50_s']:.3f} s, p95 {row['p95_s']:.3f} s, "
                  f"online {row['online_s']:.3f} s", flush=True)
    # the models next to the measurements: loopback run's model vs the shaped run's measure
    base = {(r["batch"], r["material"]): r for r in rows if r["network"] == "loopback"}
    for r in rows:
        ref = base.get((r["batch"], r["material"]))
        if ref is not None and r["network"] in ("LAN", "WAN"):
            r["modelled_online_s"] = ref[f"modelled_{r['network'].lower()}_online_s"]
            r["measured_over_modelled"] = r["online_s"] / r["modelled_online_s"]
    return {
        "benchmark": "service",
        "model": MODEL,
        "rows": rows,
        "networks": {"LAN": LAN.name, "WAN": WAN.name},
        "note": "roles as 3 processes on one host (1 torch thread each), links shaped by a "
                "Python TCP proxy; the machine is shared with other jobs",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                    "loadavg_1_5_15_before": list(load_before),
                    "loadavg_1_5_15_after": list(os.getloadavg())},
    }


def _print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"LeNet private inference as a service ({res['note']})")
    for col in ("network", "batch", "material", "q/s", "img/s", "p50 s", "p95 s", "online s",
                "modelled online s", "measured/model", "online MB", "rounds", "dealer MB"):
        t.add_column(col)
    for r in res["rows"]:
        model = r.get("modelled_online_s")
        t.add_row(r["network"], str(r["batch"]), r["material"], f"{r['qps']:.2f}",
                  f"{r['images_per_s']:.1f}", f"{r['p50_s']:.3f}", f"{r['p95_s']:.3f}",
                  f"{r['online_s']:.3f}", "-" if model is None else f"{model:.3f}",
                  "-" if model is None else f"{r['measured_over_modelled']:.2f}",
                  f"{r['online_bytes'] / 1e6:.2f}", str(r["online_rounds"]),
                  f"{r['offline_bytes'] / 1e6:.1f}")
    Console(width=200).print(t)


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False,
         wan64: bool = False) -> dict[str, Any]:
    """Run the service benchmark, print its table, write JSON (``bench/results/service.json``)."""
    results = run_benchmark(quick=quick, wan64=wan64)
    path = output or DEFAULT_OUTPUT
    if quick and output is None:
        path = path.with_name("service-quick.json")
    return publish(results, path, json_stdout, _print_table)
