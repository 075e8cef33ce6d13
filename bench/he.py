"""Benchmark CKKS encrypted MNIST inference (see ``veil/bench/he.py``).

Same as ``veil bench he``: ``python bench/he.py [--json] [--output F] [--quick] [--full]
[--images N] [--no-peers]``. ``--full`` runs the whole 10,000-image test set encrypted.
"""

from veil.bench.he import main
from veil.bench.output import script_arguments

if __name__ == "__main__":
    parser = script_arguments(__doc__)
    parser.add_argument("--full", action="store_true", help="all 10,000 test images encrypted")
    parser.add_argument("--images", type=int, default=None, help="encrypted sample size")
    parser.add_argument("--no-peers", action="store_true", help="skip FE and 2PC")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick, full=ns.full, images=ns.images,
         peers=not ns.no_peers)
