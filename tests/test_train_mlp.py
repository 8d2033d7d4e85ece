"""End to end: a small MLP learns a generated 2-D problem with each optimizer."""

from __future__ import annotations

import numpy as np
import pytest

import tinynet
from tinynet import nn, optim
from tinynet.data import DataLoader


def rings(n, seed):
    """Three concentric noisy rings, one class each: separable, but not by a line."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    radius = 0.6 + labels + rng.normal(0, 0.12, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return points.astype(np.float32), labels


def accuracy(model, x, y) -> float:
    model.eval()
    predicted = model(x).argmax(axis=1)
    model.train()
    return float((predicted == y).mean())


OPTIMIZERS = [
    ("SGD", lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", lambda params: optim.Adam(params, lr=0.01)),
    ("AdamW", lambda params: optim.AdamW(params, lr=0.01, weight_decay=1e-2)),
]


@pytest.mark.parametrize(("name", "make"), OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_mlp_learns_rings(name, make):
    tinynet.manual_seed(0)
    x_train, y_train = rings(1200, seed=1)
    x_test, y_test = rings(600, seed=2)
    model = nn.Sequential(
        nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3)
    )
    criterion = nn.CrossEntropyLoss()
    optimizer = make(model.parameters())
    scheduler = optim.CosineAnnealingLR(optimizer, T_max=30)
    loader = DataLoader((x_train, y_train), batch_size=32, shuffle=True)
    first_loss = None
    for _ in range(30):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            model.backward(criterion.backward())
            optimizer.step()
            first_loss = loss if first_loss is None else first_loss
        scheduler.step()
    assert criterion(model.eval()(x_train), y_train) < first_loss / 5
    assert accuracy(model, x_test, y_test) > 0.95, name
    assert all(p.dtype == np.float32 for p in model.parameters())
