"""Real datasets from pinned, checksummed registry packages (no hub downloads).

Example
-------
>>> from veil.data import mnist_tensors
>>> x, y = mnist_tensors("test", limit=128)   # doctest: +SKIP
"""

from veil.data.cifar import CIFAR10_CLASSES, cifar10_tensors, load_cifar10, read_cifar_batch
from veil.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist, mnist_tensors, read_idx
from veil.data.registry import PACKAGES, DatasetUnavailableError, data_dir, fetch, is_cached

__all__ = [
    "CIFAR10_CLASSES", "DatasetUnavailableError", "MNIST_MEAN", "MNIST_STD", "PACKAGES",
    "cifar10_tensors", "data_dir", "fetch", "is_cached", "load_cifar10", "load_mnist",
    "mnist_tensors", "read_cifar_batch", "read_idx",
]
