"""The networks of the AriaNN paper (Ryffel, Tholoniat, Pointcheval, Bach, PETS 2022).

Six architectures, as AriaNN benchmarks them: three MNIST networks (Network1,
Network2, LeNet), two CIFAR-10 variants (AlexNet, VGG16) and ResNet18 on
224x224 inputs. Every model is plain PyTorch, traceable with ``torch.fx`` and
convertible into a secure model by :func:`veil.nn.convert`.

Example
-------
>>> import torch
>>> from veil.models import build
>>> net = build("lenet")
>>> net(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class Network1(nn.Module):
    """Fully connected 784-128-128-10 (SecureML's network A)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 784)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Network2(nn.Module):
    """Two 5x5 conv layers with 16 channels and max pooling, then 256-100-10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, 1, padding=0)
        self.conv2 = nn.Conv2d(16, 16, 5, 1, padding=0)
        self.fc1 = nn.Linear(256, 100)
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.reshape(-1, 256)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class LeNet(nn.Module):
    """LeNet as in AriaNN: conv 20@5x5, max pool, conv 50@5x5, max pool, 800-500-10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.reshape(-1, 800)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class AlexNet(nn.Module):
    """AlexNet for 32x32 CIFAR-10, AriaNN's ``AlexNet_CIFAR10`` (with BatchNorm).

    As in AriaNN's ``models.py`` except that the logits are not passed through a
    final ReLU; AriaNN writes each ReLU after its max pool, which
    :func:`veil.nn.convert` does by itself.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=10),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.BatchNorm2d(96),
            nn.Conv2d(96, 256, kernel_size=5, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.BatchNorm2d(256),
            nn.Conv2d(256, 384, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


_VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                   512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG16 for 32x32 CIFAR-10 as AriaNN runs it: torchvision's VGG16 (13 conv3x3+ReLU,
    5 max pools, no BatchNorm), no average pool, classifier 512-4096-4096-10 without
    Dropout."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in _VGG16_CHANNELS:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU()]
                channels = int(spec)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity or 1x1 conv+BN shortcut, residual add."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 (He et al. 2016) for 224x224 inputs, the torchvision layout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@dataclass(frozen=True)
class ZooEntry:
    """A zoo network: its class, input shape (without batch), dataset and AriaNN batch size."""

    cls: type[nn.Module]
    input_shape: tuple[int, ...]
    dataset: str | None
    batch_size: int
    num_classes: int


ZOO: dict[str, ZooEntry] = {
    "network1": ZooEntry(Network1, (1, 28, 28), "mnist", 128, 10),
    "network2": ZooEntry(Network2, (1, 28, 28), "mnist", 128, 10),
    "lenet": ZooEntry(LeNet, (1, 28, 28), "mnist", 128, 10),
    "alexnet": ZooEntry(AlexNet, (3, 32, 32), "cifar10", 128, 10),
    "vgg16": ZooEntry(VGG16, (3, 32, 32), "cifar10", 64, 10),
    "resnet18": ZooEntry(ResNet18, (3, 224, 224), None, 8, 1000),
}


def entry(name: str) -> ZooEntry:
    """The zoo entry called ``name`` (case-insensitive), with a clear error when unknown."""
    key = name.lower()
    if key not in ZOO:
        raise KeyError(f"unknown model {name!r}; the zoo has: {', '.join(ZOO)}")
    return ZOO[key]


def build(name: str, num_classes: int | None = None) -> nn.Module:
    """A fresh (untrained) zoo network in eval mode.

    Example
    -------
    >>> build("network1").fc1
    Linear(in_features=784, out_features=128, bias=True)
    """
    e = entry(name)
    model = e.cls(num_classes if num_classes is not None else e.num_classes)
    return model.eval()
