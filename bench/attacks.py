"""Privacy-attack benchmark (thin wrapper; same as ``veil bench attacks``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from veil.bench.attacks import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run)")
    args = parser.parse_args()
    main(json_stdout=args.json, output=args.output, quick=args.quick)
