"""Benchmark DP-SGD cost against non-private training and Opacus 1.6 (MNIST CNN).

Same as ``veil bench dp-sgd``: ``python bench/dp_sgd.py [--json] [--output F] [--quick]``.
"""

import argparse
from pathlib import Path

from veil.bench.dp_sgd import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick)
