"""Private inference of the AriaNN zoo vs CrypTen and plaintext PyTorch (see
``veil/bench/inference.py``).

Usage: ``python bench/inference.py [--json] [--output F] [--quick] [--models lenet,alexnet]
[--fresh] [--no-crypten]``; the same as ``veil bench inference``.
"""

from veil.bench.inference import _cli

if __name__ == "__main__":
    _cli()
