"""Benchmark quadratic functional encryption on MNIST (see ``veil/bench/fe.py``).

Same as ``veil bench fe``: ``python bench/fe.py [--json] [--output F] [--quick] [--full]
[--images N]``. ``--full`` decrypts all 10,000 test images (about 2 h on one core).
"""

import argparse
from pathlib import Path

from veil.bench.fe import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--full", action="store_true", help="all 10,000 test images encrypted")
    parser.add_argument("--images", type=int, default=None, help="encrypted sample size")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick, full=ns.full, images=ns.images)
