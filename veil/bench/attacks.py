"""Benchmark of the privacy attacks: wall time and results of each reference experiment.

Runs the three experiments of :mod:`veil.audit.experiments` once and prints:

* membership inference — AUC, balanced accuracy and TPR at 0.1% / 1% FPR of the
  threshold attack, the shadow-model attack and LiRA (online, offline) against the
  overfit, the well-generalised and the DP-SGD target, with LiRA's TPR as a ratio of
  the threshold attack's, and each target's leakage as a ratio of the overfit one's;
* model inversion — per mode (white box, black box, rounded scores): classes
  recognised, correlation to the class mean, queries, time;
* gradient inversion — PSNR/SSIM per defence, and the TV weight tuned per dataset.

No peer library runs in the same process here (none is installed for attacks); the
comparisons are between attacks and between defences, measured in the same run.

JSON goes to ``bench/results/attacks.json`` (figures to ``bench/results/attacks/``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

DEFAULT_OUTPUT = Path("bench/results/attacks.json")


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def membership_ratios(report: dict) -> dict:
    """LiRA vs threshold per target, and each target's LiRA leakage relative to the overfit one."""
    out: dict = {}
    targets = {k: v for k, v in report["targets"].items() if "attacks" in v}
    for name, t in targets.items():
        a = t["attacks"]
        out[name] = {
            f"lira_over_threshold_{key}": _ratio(a["lira"][key], a["threshold"][key])
            for key in ("tpr_at_0.1%_fpr", "tpr_at_1%_fpr")
        }
    if "overfit" in targets:
        base = targets["overfit"]["attacks"]["lira"]
        for name, t in targets.items():
            if name != "overfit":
                out[name]["lira_tpr_at_1%_fpr_vs_overfit"] = _ratio(
                    t["attacks"]["lira"]["tpr_at_1%_fpr"], base["tpr_at_1%_fpr"])
    return out


def main(json_stdout: bool = False, output: Path | None = None, quick: bool = False) -> dict:
    """Run the attack benchmark, print tables, write JSON; returns the results."""
    from rich.console import Console

    from veil.audit.experiments import (
        gradient_experiment,
        inversion_experiment,
        membership_experiment,
    )
    from veil.audit.render import gradient_table, inversion_table, membership_table

    output = Path(output) if output is not None else DEFAULT_OUTPUT
    figures = output.parent / output.stem
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # small models: one thread is fastest on a shared machine
    results: dict = {"benchmark": "attacks", "quick": quick,
                     "command": "veil bench attacks" + (" --quick" if quick else ""),
                     "machine": {"cpu": platform.processor() or platform.machine(),
                                 "torch": torch.__version__, "torch_threads": 1},
                     "wall_seconds": {}}
    try:
        for name, run in (("membership", membership_experiment),
                          ("inversion", inversion_experiment),
                          ("gradient", gradient_experiment)):
            t0 = time.perf_counter()
            results[name] = run(figures / name, quick=quick)
            results["wall_seconds"][name] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    results["ratios"] = {"membership": membership_ratios(results["membership"])}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    if json_stdout:
        print(json.dumps(results))
    else:
        console = Console()
        console.print(membership_table(results["membership"]))
        console.print(results["ratios"]["membership"])
        console.print(inversion_table(results["inversion"]))
        console.print(gradient_table(results["gradient"]))
        console.print({k: f"{v:.0f} s" for k, v in results["wall_seconds"].items()})
        console.print(f"JSON: {output}; figures: {figures}/")
    return results
