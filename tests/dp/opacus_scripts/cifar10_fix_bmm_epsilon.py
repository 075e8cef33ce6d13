"""An Opacus 1.6 tutorial-style script (tutorials/building_image_classifier.ipynb) on
small CIFAR-10-shaped synthetic data: ModuleValidator.fix, make_private_with_epsilon,
BatchMemoryManager.

Run unmodified against Opacus, or with ``from opacus`` replaced by ``from veil.dp``.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from opacus import PrivacyEngine
from opacus.utils.batch_memory_manager import BatchMemoryManager
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

MAX_GRAD_NORM = 1.2
EPSILON = 50.0
DELTA = 1e-5
EPOCHS = 2
LR = 1e-3
BATCH_SIZE = 64
MAX_PHYSICAL_BATCH_SIZE = 16


def make_model():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


def accuracy(preds, labels):
    return (preds == labels).mean()


def synthetic_cifar(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    images[torch.arange(n), labels % 3] += 0.5  # a learnable signal
    return TensorDataset(images, labels)


def train(model, train_loader, optimizer, privacy_engine, epoch, device):
    model.train()
    criterion = nn.CrossEntropyLoss()
    losses = []
    top1_acc = []
    with BatchMemoryManager(
        data_loader=train_loader,
        max_physical_batch_size=MAX_PHYSICAL_BATCH_SIZE,
        optimizer=optimizer,
    ) as memory_safe_data_loader:
        for i, (images, target) in enumerate(memory_safe_data_loader):
            optimizer.zero_grad()
            images = images.to(device)
            target = target.to(device)
            output = model(images)
            loss = criterion(output, target)
            preds = np.argmax(output.detach().cpu().numpy(), axis=1)
            labels = target.detach().cpu().numpy()
            if len(labels):
                top1_acc.append(accuracy(preds, labels))
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
            if (i + 1) % 4 == 0:
                epsilon = privacy_engine.get_epsilon(DELTA)
                print(f"\tTrain Epoch: {epoch} Loss: {np.mean(losses):.6f} "
                      f"Acc@1: {np.mean(top1_acc) * 100:.6f} (ε = {epsilon:.2f}, δ = {DELTA})")
    return privacy_engine.get_epsilon(DELTA)


def main():
    torch.manual_seed(0)
    device = torch.device("cpu")
    train_loader = DataLoader(synthetic_cifar(256, 1), batch_size=BATCH_SIZE)
    model = make_model()
    errors = ModuleValidator.validate(model, strict=False)
    model = ModuleValidator.fix(model)
    fixed_errors = ModuleValidator.validate(model, strict=False)
    model = model.to(device)
    optimizer = optim.RMSprop(model.parameters(), lr=LR)
    privacy_engine = PrivacyEngine()
    model, optimizer, train_loader = privacy_engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=train_loader,
        epochs=EPOCHS,
        target_epsilon=EPSILON,
        target_delta=DELTA,
        max_grad_norm=MAX_GRAD_NORM,
    )
    print(f"Using sigma={optimizer.noise_multiplier} and C={MAX_GRAD_NORM}")
    for epoch in range(EPOCHS):
        epsilon = train(model, train_loader, optimizer, privacy_engine, epoch + 1, device)
    return {"errors": len(errors), "fixed_errors": len(fixed_errors), "epsilon": epsilon,
            "sigma": optimizer.noise_multiplier, "sample_rate": train_loader.sample_rate}
