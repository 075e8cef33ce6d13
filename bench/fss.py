"""Benchmark function secret sharing (DReLU keygen/eval vs sycret, key sizes, ReLU end to end).

Same as ``veil bench fss``: ``python bench/fss.py [--json] [--output F] [--quick]``.
"""

import argparse
from pathlib import Path

from veil.bench.fss import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick)
