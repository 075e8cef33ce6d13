"""Benchmark quadratic functional encryption on MNIST (see ``veil/bench/fe.py``).

Same as ``veil bench fe``: ``python bench/fe.py [--json] [--output F] [--quick] [--full]
[--images N]``. ``--full`` decrypts all 10,000 test images (about 2 h on one core).
"""

from veil.bench.fe import main
from veil.bench.output import script_arguments

if __name__ == "__main__":
    parser = script_arguments(__doc__)
    parser.add_argument("--full", action="store_true", help="all 10,000 test images encrypted")
    parser.add_argument("--images", type=int, default=None, help="encrypted sample size")
    ns = parser.parse_args()
    main(json_stdout=ns.json, output=ns.output, quick=ns.quick, full=ns.full, images=ns.images)
