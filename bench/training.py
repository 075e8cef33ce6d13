"""Benchmark private training (Network1 on MNIST, AriaNN's recipe) against plaintext PyTorch.

Same as ``veil bench training``: ``python bench/training.py [--json] [--output F] [--quick]``.
"""

from veil.bench.output import run_script
from veil.bench.training import main

if __name__ == "__main__":
    run_script(main, __doc__)
