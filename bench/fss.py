"""Benchmark function secret sharing (DReLU keygen/eval vs sycret, key sizes, ReLU end to end).

Same as ``veil bench fss``: ``python bench/fss.py [--json] [--output F] [--quick]``.
"""

from veil.bench.fss import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
