"""Benchmark DP-SGD cost against non-private training and Opacus 1.6 (MNIST CNN,
ResNet-20 with GroupNorm on CIFAR-10, an LSTM and a small transformer encoder).

Same as ``veil bench dp-sgd``: ``python bench/dp_sgd.py [--json] [--output F] [--quick]``.
"""

from veil.bench.dp_sgd import main
from veil.bench.output import run_script

if __name__ == "__main__":
    run_script(main, __doc__)
