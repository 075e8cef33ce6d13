"""Benchmark DP-SGLD (hidden-state accounting) vs DP-SGD (RDP/PLD) vs non-private on MNIST features.

Same as ``veil bench dp-langevin``: ``python bench/dp_langevin.py [--json] [--output F] [--quick]``.
"""

import argparse
from pathlib import Path

from veil.bench.dp_langevin import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick)
