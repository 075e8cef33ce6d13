"""CrypTen's bytes are compared like for like with Veil's: the whole system's traffic once.

CrypTen logs every exchange at both ends; its documented system total is the sum of the
two parties' counters divided by two (summing them double-counted CrypTen's bytes).
"""

import json
import subprocess
from pathlib import Path

import veil.bench.inference as inference
import veil.bench.mpc as mpc


def test_a_measured_crypten_lenet_run_counts_the_system_total(monkeypatch):
    out = "CRYPTEN " + json.dumps({"rank": 0, "online_s": 1.0, "online_rounds": 5,
                                   "bytes_one_party": 100}) + "\nCRYPTEN " + json.dumps(
        {"rank": 1, "online_s": 2.0, "online_rounds": 5, "bytes_one_party": 100})
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, stdout=out, stderr=""))
    got = inference.crypten_lenet(1)
    assert got == {"online_s": 2.0, "online_rounds": 5, "online_bytes": 100, "measured": True}


def test_a_measured_crypten_matmul_counts_the_system_total(monkeypatch):
    def fake_run(cmd, **kw):
        for rank in (0, 1):
            (Path(cmd[-1]) / f"rank{rank}.json").write_text(json.dumps(
                {"rank": rank, "cases": [{"online_s": 0.01, "rounds": 1, "bytes": 2097152}]}))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    got = mpc.crypten_peer([{"op": "matmul"}], reps=1)
    assert got[0]["bytes_total"] == 2097152  # = Veil's 2 x 1 MB opened (E and F) per matmul


def test_the_fallback_and_the_measured_figures_agree_in_kind():
    data = {"rows": {"lenet@1": {"model": "lenet", "batch": 1, "online_s": 0.1,
                                 "lan_online_s": 0.1, "online_bytes": 17.9e6,
                                 "online_rounds": 10}},
            "crypten": {"1": dict(inference.CRYPTEN_REFERENCE[1], measured=False)}}
    assert inference.comparisons(data)["lenet@1 vs CrypTen"]["bytes_ratio"] == 2.0
