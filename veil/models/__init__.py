"""The AriaNN model zoo, plaintext training helpers and a weights cache.

Example
-------
>>> from veil.models import build, ZOO
>>> sorted(ZOO)
['alexnet', 'lenet', 'network1', 'network2', 'resnet18', 'vgg16']
"""

from veil.models.store import has_weights, load_weights, model_dir, save_weights, weights_path
from veil.models.training import (
    RECIPES,
    dataset,
    evaluate,
    pretrained,
    train,
    train_zoo_model,
)
from veil.models.zoo import (
    VGG16,
    ZOO,
    AlexNet,
    BasicBlock,
    LeNet,
    Network1,
    Network2,
    ResNet18,
    ZooEntry,
    build,
    entry,
)

__all__ = [
    "RECIPES", "ZOO", "AlexNet", "BasicBlock", "LeNet", "Network1", "Network2", "ResNet18",
    "VGG16", "ZooEntry", "build", "dataset", "entry", "evaluate", "has_weights", "load_weights",
    "model_dir", "pretrained", "save_weights", "train", "train_zoo_model", "weights_path",
]
