"""Benchmark DP-SGLD (hidden-state accounting) vs DP-SGD (RDP/PLD) vs non-private on MNIST features.

Same as ``veil bench dp-langevin``: ``python bench/dp_langevin.py [--json] [--output F] [--quick]``.
"""

from veil.bench.dp_langevin import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
