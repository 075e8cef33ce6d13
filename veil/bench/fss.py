"""Benchmark of function secret sharing: DReLU keygen/eval throughput, key sizes, ReLU end to end.

Measured in one run, side by side:

- **DReLU throughput** for ``n = 32`` and ``n = 64`` input bits: keygen (the
  dealer's whole material: DCF keys in their transport form plus mask shares)
  and evaluation (one party's local work after the opening: key unpacking,
  the DCF walk, the output shares), per core (one process, one thread) and on
  all cores (one process per core, each on its share of the batch). Veil's
  boolean-output DReLU (``ell = 1``, the BCG+21 key) and the arithmetic-output
  one the gates use (``ell = n``). AriaNN's Rust library ``sycret``
  (``LeFactory``: its 32-bit comparison keygen and eval; ``EqFactory``: its
  DPF) runs the same batch sizes in the same run, single-threaded per core and
  with one thread per core for "all cores"; ratios are ours / sycret's.
- **Key bytes per comparison** against the BCG+21 formula ``n(λ+ℓ+2)+λ+ℓ``
  (the DCF runs on ``n - 1`` bits) and sycret's key length.
- **Online bytes and rounds per comparison** and **ReLU on 1e5 and 1e6
  elements end to end** through :func:`veil.run` (in-memory transport, dealer
  streamed): offline and online times, rounds, bytes counted at the transport.
  CrypTen 0.4.1's ReLU runs on the same 1e5 elements when importable
  (``$VEIL_CRYPTEN_PATH`` may point at a ``pip install --target`` directory);
  otherwise its figure from DESIGN.md (0.13 s, 9 rounds, 46 MB) is shown,
  labelled as a reference.

- **Key bytes per DReLU and per ReLU at each comparison width k**
  (``drelu_key_bytes``, ``relu_key_bytes``, keyed by k: the lean two-round gate;
  ``*_one_round``: the one-round gate), as generated, and the ReLU gates at
  ``k = 32`` (lean and one-round) and ``k = 64`` (lean): keygen and eval per
  core, on all cores, and keygen in one process on every thread; ratios to
  sycret of the same run.
- **A network's dealer material** (full runs only): LeNet at batch 64 through
  ``secure_inference`` over TCP, with the 64-bit gates and with a graph
  calibrated on training inputs at ``k = 32`` (one-round and lean).

Run: ``veil bench fss [--json] [--output F] [--quick]`` or ``python bench/fss.py``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veil.bench.output import publish
from veil.bench.peers import crypten_env

DEFAULT_OUTPUT = Path("bench/results/fss.json")
#: CrypTen 0.4.1 ReLU on 1e5 elements on our machines (DESIGN.md §3), 2 processes.
CRYPTEN_RELU_1E5 = {"online_s": 0.13, "rounds": 9, "bytes_total": 46e6}

_CRYPTEN_WORKER = r"""
import json, statistics, sys, time, types
import torch
shim = types.ModuleType("torch.onnx._internal.registration"); shim.registry = None
sys.modules.setdefault("torch.onnx._internal.registration", shim)
import crypten, crypten.mpc as mpc, crypten.communicator as comm
crypten.cfg.communicator.verbose = True
n, reps, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

@mpc.run_multiprocess(world_size=2)
def job():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    x = crypten.cryptensor(torch.randn(n, generator=g), src=0)  # not-secret
    ts = []
    for _ in range(reps + 1):
        comm.get().reset_communication_stats()
        t = time.perf_counter()
        y = x.relu()
        ts.append(time.perf_counter() - t)
        st = comm.get().get_communication_stats()
    rank = comm.get().get_rank()
    with open(f"{outdir}/rank{rank}.json", "w") as f:
        json.dump({"online_s": statistics.median(ts[1:]), "rounds": st["rounds"],
                   "bytes": st["bytes"]}, f)

job()
"""


def crypten_relu(n: int, reps: int, timeout: float = 900) -> dict | None:
    """CrypTen 0.4.1 ReLU on ``n`` elements (2 processes, 1 thread each), or ``None``."""
    env = crypten_env()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-c", _CRYPTEN_WORKER, str(n), str(reps), tmp],
                                  env=env, capture_output=True, timeout=timeout, text=True)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0:
            return None
        try:
            ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in (0, 1)]
        except (OSError, ValueError):
            return None
    return {"online_s": max(r["online_s"] for r in ranks),
            "rounds": ranks[0]["rounds"],
            "bytes_total": sum(r["bytes"] for r in ranks)}


# -- per-core throughput --------------------------------------------------------------------
def _rand_u64(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, count, dtype=np.uint64)  # not-secret


def _veil_drelu(n: int, ell: int, count: int, reps: int) -> dict[str, float]:
    from veil.fss import gates

    gates.sign_keygen(64, ring_bits=n, ell=ell)  # warm-up: JIT cache load, AES contexts
    gen, ev = [], []
    for rep in range(reps):
        t = time.perf_counter()
        m0, m1 = gates.sign_keygen(count, ring_bits=n, ell=ell)
        gen.append(time.perf_counter() - t)
        xh = _rand_u64(count, rep)
        t = time.perf_counter()
        gates.sign_finish(m0, 0, xh)
        ev.append(time.perf_counter() - t)
    return {"keygen_per_s": count / statistics.median(gen),
            "eval_per_s": count / statistics.median(ev)}


def _veil_sign(bits: int, lean: bool, count: int, reps: int,
               threads: int | None = None) -> dict[str, float]:
    """A ReLU sign gate on the 64-bit ring comparing ``bits`` bits (``lean``: two rounds):
    keygen (both parties' material) and one party's local work after the opening(s)."""
    from veil.fss import gates

    if threads is not None:
        os.environ["VEIL_FSS_THREADS"] = str(threads)
    try:
        gates.sign_keygen(64, relu=True, bits=bits, lean=lean)  # warm-up
        gen, ev = [], []
        for rep in range(reps):
            t = time.perf_counter()
            m0, _ = gates.sign_keygen(count, relu=True, bits=bits, lean=lean)
            gen.append(time.perf_counter() - t)
            xh = _rand_u64(count, rep)
            t = time.perf_counter()
            eh = None
            if lean:  # the peer's bit is random: only this party's work is timed
                eh = gates.sign_select_bit(m0, 0, xh) ^ (xh & np.uint64(1)).astype(np.uint8)
            gates.sign_finish(m0, 0, xh, None, eh)
            ev.append(time.perf_counter() - t)
    finally:
        if threads is not None:
            os.environ.pop("VEIL_FSS_THREADS", None)
    return {"keygen_per_s": count / statistics.median(gen),
            "eval_per_s": count / statistics.median(ev)}


def key_sizes(ks: tuple[int, ...] = (16, 24, 32, 40, 48, 64)) -> dict[str, dict[str, int]]:
    """Bytes one party holds per DReLU and per ReLU at each comparison width ``k``, as
    generated (every array of the material: keys in transport form and mask shares), for
    the lean two-round gate and the one-round gate."""
    from veil.fss import gates

    def shipped(k: int, relu: bool, lean: bool) -> int:
        m0, _ = gates.sign_keygen(8, relu=relu, bits=k, lean=lean)
        total = sum(v.nbytes for name, v in m0.items()
                    if isinstance(v, np.ndarray) and name != "shape")
        assert total == 8 * gates.sign_material_bytes(relu=relu, bits=k, lean=lean)
        return total // 8

    out: dict[str, dict[str, int]] = {}
    for field, relu in (("drelu_key_bytes", False), ("relu_key_bytes", True)):
        out[field] = {str(k): shipped(k, relu, True) for k in ks}
        out[field + "_one_round"] = {str(k): shipped(k, relu, False) for k in ks}
    return out


def _sycret(factory: str, count: int, reps: int, threads: int = 1) -> dict[str, float] | None:
    try:
        import sycret
    except ImportError:
        return None
    fac = getattr(sycret, factory)(n_threads=threads)
    fac.keygen(64)
    gen, ev = [], []
    for rep in range(reps):
        t = time.perf_counter()
        ka, _ = fac.keygen(count)
        gen.append(time.perf_counter() - t)
        xs = _rand_u64(count, rep).view(np.int64)
        t = time.perf_counter()
        fac.eval(0, xs, ka, n_threads=threads)
        ev.append(time.perf_counter() - t)
    return {"keygen_per_s": count / statistics.median(gen),
            "eval_per_s": count / statistics.median(ev), "key_bytes": int(fac.key_len)}


def _veil_eq(n: int, count: int, reps: int) -> dict[str, float]:
    from veil.fss import gates

    gates.eq_keygen(64, ring_bits=n)
    gen, ev = [], []
    for rep in range(reps):
        t = time.perf_counter()
        m0, _ = gates.eq_keygen(count, ring_bits=n)
        gen.append(time.perf_counter() - t)
        xh = _rand_u64(count, rep) >> np.uint64(64 - n)
        t = time.perf_counter()
        gates.eq_finish(m0, 0, xh)
        ev.append(time.perf_counter() - t)
    return {"keygen_per_s": count / statistics.median(gen),
            "eval_per_s": count / statistics.median(ev)}


def _worker(task: tuple) -> dict[str, float] | None:
    torch.set_num_threads(1)
    kind, args = task
    if kind == "veil":
        return _veil_drelu(*args)
    if kind == "veil_eq":
        return _veil_eq(*args)
    if kind == "veil_sign":
        return _veil_sign(*args)
    return _sycret(*args)


def _all_cores(task: tuple, cores: int) -> dict[str, float] | None:
    """The same task in ``cores`` processes at once, each on its batch: summed throughput."""
    ctx = mp.get_context("spawn")  # fresh interpreters: forking after AES/numba use can hang
    with ctx.Pool(cores) as pool:
        parts = pool.map(_worker, [task] * cores)
    if any(p is None for p in parts):
        return None
    return {k: sum(p[k] for p in parts) for k in ("keygen_per_s", "eval_per_s")}


# -- end-to-end ReLU through the engine ----------------------------------------------------------
def _relu_job(party, n: int, bits: int = 64, lean: bool = False):
    from veil.mpc import nonlinear

    g = torch.Generator().manual_seed(3)
    x_plain = torch.randn(n, generator=g)  # not-secret: benchmark data
    x = party.share(x_plain if party.rank == 0 else None, owner=0, shape=(n,))
    party.barrier()
    before = party.stats()
    t = time.perf_counter()
    y = nonlinear.relu(x, bits=bits, lean=lean)
    wall = time.perf_counter() - t
    after = party.stats()
    err = float((y.reveal() - x_plain.clamp(min=0)).abs().max())
    return {"wall_s": wall,
            "online_s": after["online_s"] - before["online_s"],
            "offline_s": after["offline_s"] - before["offline_s"],
            "rounds": after["rounds"] - before["rounds"],
            "bytes_sent": after["bytes_sent"] - before["bytes_sent"],
            "offline_bytes_received": after["offline_bytes_received"]
            - before["offline_bytes_received"],
            "max_abs_error": err}


def _relu_end_to_end(n: int, bits: int = 64, lean: bool = False) -> dict[str, Any]:
    import veil

    r0, r1 = veil.run(_relu_job, args=(n, bits, lean), timeout=1800)
    return {"elements": n, "bits": bits, "lean": lean,
            "online_s": max(r0["online_s"], r1["online_s"]),
            "offline_s": max(r0["offline_s"], r1["offline_s"]),
            "wall_s": max(r0["wall_s"], r1["wall_s"]),
            "rounds": r0["rounds"],
            "bytes_total": r0["bytes_sent"] + r1["bytes_sent"],
            "bytes_per_element_per_party": r0["bytes_sent"] / n,
            "dealer_bytes_per_element_per_party": r0["offline_bytes_received"] / n,
            "max_abs_error": max(r0["max_abs_error"], r1["max_abs_error"])}


# -- a network's dealer material at 64 bits and at calibrated k bits ----------------------------
def network_material(name: str = "lenet", batch: int = 64, transport: str = "tcp",
                     calibration_samples: int = 2048) -> dict[str, Any]:
    """Secure inference of model ``name`` on ``batch`` test inputs, three ways in one run:
    the 64-bit one-round gates (the default), and a graph calibrated on training inputs
    (:func:`veil.nn.calibration.calibrate`) with k = 32 one-round and k = 32 lean gates."""
    from veil.bench.inference import _data, _model
    from veil.models.training import dataset
    from veil.nn import convert
    from veil.nn.calibration import calibrate, check
    from veil.nn.inference import secure_inference

    model, trained = _model(name)
    x, _ = _data(name, batch)
    try:
        samples, _ = dataset(name, "train", limit=calibration_samples)
    except (KeyError, ValueError, OSError):  # no dataset: random inputs of the same shape
        gen = torch.Generator().manual_seed(1)  # not-secret: calibration inputs
        samples = torch.randn(calibration_samples, *x.shape[1:], generator=gen)
    graph = convert(model, tuple(x.shape[1:]))
    with torch.no_grad():
        plain = model(x).double()
    out: dict[str, Any] = {"model": name, "batch": batch, "transport": transport,
                           "trained_weights": trained, "rows": {}}
    for label, lean in (("64-bit one-round", None), ("k=32 one-round", False),
                        ("k=32 lean", True)):
        g = graph if lean is None else calibrate(graph, samples, lean=lean)
        logits, rep = secure_inference(g, x, transport=transport, threads=1, timeout=3600)
        d = rep.as_dict()
        out["rows"][label] = {
            **{k: d[k] for k in ("offline_s", "online_s", "lan_online_s", "wan_online_s",
                                 "offline_bytes", "dealer_key_bytes", "online_bytes",
                                 "online_rounds")},
            "max_abs_logit_error": float((logits - plain).abs().max()),
            "bound_violations_on_the_batch": {} if lean is None else check(g, x),
            "bits": {layer.name: layer.params["bits"] for layer in g.layers
                     if "bits" in layer.params}}
    return out


# -- the benchmark ---------------------------------------------------------------------
def run_benchmark(quick: bool = False) -> dict[str, Any]:
    """Run every measurement (see the module docstring) and return the results."""
    from veil.fss import gates, key_bits
    from veil.mpc import nonlinear

    count = 20_000 if quick else 100_000
    reps = 2 if quick else 3
    cores = os.cpu_count() or 1
    throughput = []
    for n in (32, 64):
        for ell, label in ((1, "boolean (BCG+21 key)"), (n, "arithmetic (gates)")):
            per_core = _worker(("veil", (n, ell, count, reps)))
            row = {"n": n, "ell": ell, "output": label, "per_core": per_core,
                   "all_cores": _all_cores(("veil", (n, ell, count, reps)), cores),
                   "dcf_key_bits": gates.sign_key_bits(n, ell),
                   "bcg21_formula_bits": (n - 1) * (128 + ell + 2) + 128 + ell,
                   "material_bytes_per_party": None}
            m0, _ = gates.sign_keygen(1, ring_bits=n, ell=ell)
            row["material_bytes_per_party"] = sum(
                v.nbytes for v in m0.values() if isinstance(v, np.ndarray) and v.ndim)
            throughput.append(row)
    syc = _sycret("LeFactory", count, reps)
    syc_all = (_all_cores(("sycret", ("LeFactory", count, reps, 1)), cores)
               if syc is not None else None)
    for row in throughput:
        if row["n"] == 32 and syc is not None:
            row["sycret_per_core"] = syc
            row["sycret_all_cores"] = syc_all
            row["eval_ratio_per_core"] = row["per_core"]["eval_per_s"] / syc["eval_per_s"]
            row["keygen_ratio_per_core"] = row["per_core"]["keygen_per_s"] / syc["keygen_per_s"]
            if syc_all and row["all_cores"]:
                row["eval_ratio_all_cores"] = (row["all_cores"]["eval_per_s"]
                                               / syc_all["eval_per_s"])
                row["keygen_ratio_all_cores"] = (row["all_cores"]["keygen_per_s"]
                                                 / syc_all["keygen_per_s"])
    gates_k = []
    for bits, lean in ((32, True), (32, False), (64, True)):
        row = {"bits": bits, "lean": lean, "rounds": 1 + lean,
               "per_core": _worker(("veil_sign", (bits, lean, count, reps, 1))),
               "all_cores": _all_cores(("veil_sign", (bits, lean, count, reps, 1)), cores),
               "one_process_all_threads": _veil_sign(bits, lean, count, reps),
               "material_bytes_per_party": gates.sign_material_bytes(relu=True, bits=bits,
                                                                     lean=lean)}
        if syc is not None:
            row["keygen_ratio_per_core"] = row["per_core"]["keygen_per_s"] / syc["keygen_per_s"]
            row["eval_ratio_per_core"] = row["per_core"]["eval_per_s"] / syc["eval_per_s"]
        gates_k.append(row)
    eq = {"veil_per_core": _worker(("veil_eq", (32, count, reps))),
          "sycret_per_core": _sycret("EqFactory", count, reps),
          "veil_key_bits": key_bits("dpf", 32, 32)}

    network = None if quick else network_material()
    online = []
    for n in ([20_000] if quick else [100_000, 1_000_000]):
        online.append(_relu_end_to_end(n))
    for bits, lean in ((32, False), (32, True)):
        online.append(_relu_end_to_end(20_000 if quick else 100_000, bits, lean))
    peer = crypten_relu(online[0]["elements"], reps)
    ref = peer if peer is not None else CRYPTEN_RELU_1E5
    ref_elements = online[0]["elements"] if peer is not None else 100_000
    for row in online:
        scale = row["elements"] / ref_elements  # CrypTen's ReLU cost is linear in the size
        row["crypten"] = (dict(ref, elements=ref_elements) if peer is not None
                          else dict(ref, elements=ref_elements, reference=True))
        row["bytes_ratio_crypten_over_veil"] = ref["bytes_total"] * scale / row["bytes_total"]
        row["online_ratio_veil_over_crypten"] = row["online_s"] / (ref["online_s"] * scale)
    return {
        "benchmark": "fss",
        "quick": quick,
        "batch": count,
        "repetitions": reps,
        "machine": {"platform": platform.platform(), "cpus": cores, "torch": torch.__version__,
                    "numpy": np.__version__, "kernels": _kernels()},
        "drelu": throughput,
        **key_sizes(),
        "sycret_key_bytes": syc["key_bytes"] if syc is not None else None,
        "relu_gates_k_bits": gates_k,
        "equality_dpf_n32": eq,
        "relu_end_to_end": online,
        "network_material": network,
        "gate_rounds": {"drelu": 1, "relu": 1, "comparison": 1, "equality": 1,
                        "max_pool_3x3": 4, "argmax_1000": 10, "lean: each sign gate": 2},
        "max_chunk": nonlinear.MAX_CHUNK,
        "crypten_measured_in_this_run": peer is not None,
        "notes": ("throughput: median over repetitions of one batch; per core = one process, "
                  "one thread; all cores = one process per core on its own batch, summed. "
                  "Keygen = the dealer's material for both parties (keys in transport form + "
                  "mask shares); eval = one party's local work after the opening. sycret: "
                  "LeFactory (32-bit comparison), n_threads=1 per process. ReLU end to end: "
                  "in-memory transport, dealer material streamed; online excludes obtaining "
                  "material; rounds and bytes counted at the transport. CrypTen: measured in "
                  "this run on the first size if importable (else DESIGN.md's 1e5 figure), "
                  "scaled linearly to the other sizes for the ratios."),
    }


def _kernels() -> str:
    from veil.fss import tree

    return "numba fused kernels" if tree.USE_KERNELS else "numpy reference path"


def _fmt(v: float) -> str:
    return f"{v / 1e3:,.0f} k/s"


def _print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"FSS DReLU throughput (batch {res['batch']:,}; {res['machine']['kernels']})")
    for col in ("n", "output", "keygen/core", "eval/core", "keygen all", "eval all",
                "DCF key bits (formula)", "vs sycret keygen / eval (core)"):
        t.add_column(col, justify="right")
    for r in res["drelu"]:
        pc, ac = r["per_core"], r["all_cores"] or {"keygen_per_s": 0, "eval_per_s": 0}
        ratio = (f"{r['keygen_ratio_per_core']:.1f}x / {r['eval_ratio_per_core']:.1f}x"
                 if "eval_ratio_per_core" in r else "-")
        t.add_row(str(r["n"]), r["output"], _fmt(pc["keygen_per_s"]), _fmt(pc["eval_per_s"]),
                  _fmt(ac["keygen_per_s"]), _fmt(ac["eval_per_s"]),
                  f"{r['dcf_key_bits']} ({r['bcg21_formula_bits']})", ratio)
    syc = next((r.get("sycret_per_core") for r in res["drelu"] if r.get("sycret_per_core")), None)
    if syc:
        sa = next(r.get("sycret_all_cores") for r in res["drelu"] if r.get("sycret_per_core"))
        t.add_row("32", "sycret LeFactory", _fmt(syc["keygen_per_s"]), _fmt(syc["eval_per_s"]),
                  _fmt(sa["keygen_per_s"]) if sa else "-", _fmt(sa["eval_per_s"]) if sa else "-",
                  f"{8 * syc['key_bytes']} (stored)", "1.0x / 1.0x")
    console.print(t)
    k = Table(title="Key bytes per party and element (lean two-round / one-round gate)")
    for col in ("k", "DReLU lean", "ReLU lean", "DReLU 1-round", "ReLU 1-round"):
        k.add_column(col, justify="right")
    for bits in res["relu_key_bytes"]:
        k.add_row(bits, str(res["drelu_key_bytes"][bits]), str(res["relu_key_bytes"][bits]),
                  str(res["drelu_key_bytes_one_round"][bits]),
                  str(res["relu_key_bytes_one_round"][bits]))
    if res.get("sycret_key_bytes"):
        k.add_row("32", f"sycret {res['sycret_key_bytes']}", "-", "-", "-")
    console.print(k)
    g = Table(title="ReLU gates on the 64-bit ring comparing k bits (per core = 1 process, "
                    "1 thread; 1 proc = keygen threads on every core)")
    for col in ("k", "rounds", "bytes/party", "keygen/core", "eval/core", "keygen all",
                "eval all", "keygen 1 proc", "vs sycret keygen / eval (core)"):
        g.add_column(col, justify="right")
    for r in res["relu_gates_k_bits"]:
        pc, ac = r["per_core"], r["all_cores"] or {"keygen_per_s": 0, "eval_per_s": 0}
        ratio = (f"{r['keygen_ratio_per_core']:.1f}x / {r['eval_ratio_per_core']:.1f}x"
                 if "eval_ratio_per_core" in r else "-")
        g.add_row(str(r["bits"]), str(r["rounds"]), str(r["material_bytes_per_party"]),
                  _fmt(pc["keygen_per_s"]), _fmt(pc["eval_per_s"]), _fmt(ac["keygen_per_s"]),
                  _fmt(ac["eval_per_s"]), _fmt(r["one_process_all_threads"]["keygen_per_s"]),
                  ratio)
    console.print(g)
    e = Table(title="ReLU end to end (veil.run, in-memory transport)")
    for col in ("elements", "k", "online s", "offline s", "rounds", "MB total", "B/elt/party",
                "CrypTen s / rounds / MB", "bytes: CrypTen/Veil"):
        e.add_column(col, justify="right")
    for r in res["relu_end_to_end"]:
        c = r["crypten"]
        tag = " (ref)" if c.get("reference") else ""
        e.add_row(f"{r['elements']:,}", f"{r['bits']}{' lean' if r['lean'] else ''}",
                  f"{r['online_s']:.2f}", f"{r['offline_s']:.2f}",
                  str(r["rounds"]), f"{r['bytes_total'] / 1e6:.1f}",
                  f"{r['bytes_per_element_per_party']:.1f}",
                  f"{c['online_s']:.2f} / {c['rounds']} / {c['bytes_total'] / 1e6:.0f}{tag}",
                  f"{r['bytes_ratio_crypten_over_veil']:.1f}x")
    console.print(e)
    net = res.get("network_material")
    if net:
        n = Table(title=f"{net['model']} batch {net['batch']} through secure_inference "
                        f"({net['transport']}; dealer material = both parties)")
        for col in ("gates", "offline s", "online s", "LAN s", "material GB", "FSS keys GB",
                    "rounds", "max |logit err|"):
            n.add_column(col, justify="right")
        for label, r in net["rows"].items():
            n.add_row(label, f"{r['offline_s']:.2f}", f"{r['online_s']:.2f}",
                      f"{r['lan_online_s']:.2f}", f"{r['offline_bytes'] / 1e9:.3f}",
                      f"{r['dealer_key_bytes'] / 1e9:.3f}", str(r["online_rounds"]),
                      f"{r['max_abs_logit_error']:.1e}")
        console.print(n)


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False) -> dict:
    """Entry point of ``veil bench fss`` and ``bench/fss.py``."""
    results = run_benchmark(quick=quick)
    path = Path(output) if output is not None else DEFAULT_OUTPUT
    return publish(results, path, json_stdout, _print_table)
