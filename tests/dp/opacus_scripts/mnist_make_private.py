"""An Opacus 1.6 tutorial-style script (examples/mnist.py), on small synthetic data.

Run unmodified against Opacus, or with ``from opacus`` replaced by ``from veil.dp``.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset


class SampleConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 8, 2, padding=3)
        self.conv2 = nn.Conv2d(16, 32, 4, 2)
        self.fc1 = nn.Linear(32 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        # x of shape [B, 1, 28, 28]
        x = F.relu(self.conv1(x))  # -> [B, 16, 14, 14]
        x = F.max_pool2d(x, 2, 1)  # -> [B, 16, 13, 13]
        x = F.relu(self.conv2(x))  # -> [B, 32, 5, 5]
        x = F.max_pool2d(x, 2, 1)  # -> [B, 32, 4, 4]
        x = x.view(-1, 32 * 4 * 4)  # -> [B, 512]
        x = F.relu(self.fc1(x))  # -> [B, 32]
        x = self.fc2(x)  # -> [B, 10]
        return x

    def name(self):
        return "SampleConvNet"


def train(model, device, train_loader, optimizer, privacy_engine, epoch, delta):
    model.train()
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    epsilon = privacy_engine.accountant.get_epsilon(delta=delta)
    print(f"Train Epoch: {epoch} \tLoss: {np.mean(losses):.6f} (ε = {epsilon:.2f}, δ = {delta})")
    return epsilon


def test(model, device, test_loader):
    model.eval()
    criterion = nn.CrossEntropyLoss()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += criterion(output, target).item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return correct / len(test_loader.dataset)


def synthetic_mnist(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 28, 28, generator=g)
    labels = (images[:, 0, :14].mean((1, 2)) > images[:, 0, 14:].mean((1, 2))).long()
    images[:, 0, :14] += labels.view(-1, 1, 1).float()
    return TensorDataset(images, labels)


def main(epochs=4, n=384, batch_size=64, sigma=1.0, max_per_sample_grad_norm=1.0,
         delta=1e-5, lr=0.5):
    torch.manual_seed(0)
    device = torch.device("cpu")
    train_loader = DataLoader(synthetic_mnist(n, 1), batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(synthetic_mnist(256, 2), batch_size=256)
    model = SampleConvNet().to(device)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0)
    privacy_engine = PrivacyEngine(secure_mode=False)
    model, optimizer, train_loader = privacy_engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=train_loader,
        noise_multiplier=sigma,
        max_grad_norm=max_per_sample_grad_norm,
    )
    for epoch in range(1, epochs + 1):
        epsilon = train(model, device, train_loader, optimizer, privacy_engine, epoch, delta)
    accuracy = test(model, device, test_loader)
    return {"epsilon": epsilon, "accuracy": accuracy,
            "sample_rate": train_loader.sample_rate, "steps": len(train_loader) * epochs,
            "mechanism": privacy_engine.accountant.mechanism(),
            "grad_sample_seen": all(hasattr(p, "grad_sample") for p in model.parameters())}
