"""Benchmark federated learning on Flower: plain vs SecAgg+ vs two-server aggregation
(bytes per client, server and client time), Ray simulation time per round, rounds to 99%.

Same as ``veil bench fl``: ``python bench/fl.py [--json] [--output F] [--quick]``.
"""

from veil.bench.fl import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
