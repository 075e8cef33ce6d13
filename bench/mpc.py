"""Benchmark the MPC engine (secret matmul, secret product; both transports).

Same as ``veil bench mpc``: ``python bench/mpc.py [--json] [--output F] [--quick]``.
"""

from veil.bench.mpc import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
