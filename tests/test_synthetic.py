"""The generated shape data sets: shapes, balance, seeding, variety, and learnability."""

from __future__ import annotations

import numpy as np
import pytest

from tinynet.data import SHAPES2D_CLASSES, SHAPES3D_CLASSES, shapes2d, shapes3d


@pytest.mark.parametrize(
    ("generate", "classes", "shape"),
    [(shapes2d, SHAPES2D_CLASSES, (1, 28, 28)), (shapes3d, SHAPES3D_CLASSES, (1, 16, 16, 16))],
)
def test_shapes_balance_and_seeding(generate, classes, shape):
    x, y = generate(103, seed=4)
    assert x.shape == (103, *shape) and x.dtype == np.float32
    assert y.shape == (103,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=len(classes))
    assert len(counts) == len(classes) and counts.max() - counts.min() <= 1
    assert np.isfinite(x).all()
    x2, y2 = generate(103, seed=4)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = generate(103, seed=5)
    assert not np.array_equal(x, x3)


def test_input_statistics_vary_a_lot_between_images():
    x, _ = shapes2d(500, seed=0)
    flat = x.reshape(len(x), -1)
    means = flat.mean(axis=1)
    spreads = flat.std(axis=1)
    # Brightness offsets span several units; contrast varies by an order of magnitude.
    assert means.max() - means.min() > 2
    assert np.percentile(spreads, 95) / np.percentile(spreads, 5) > 5


def _ridge_accuracy(x, y, classes, n_train):
    """A linear classifier (ridge regression on one-hot targets) on standardised samples."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / flat.std(axis=1, keepdims=True)
    flat = np.hstack([flat, np.ones((len(flat), 1))])
    targets = np.eye(classes)[y]
    a, b = flat[:n_train], targets[:n_train]
    # The dual form solves an n_train × n_train system, cheaper for the 4096-voxel volumes.
    w = a.T @ np.linalg.solve(a @ a.T + 1000 * np.eye(n_train), b)
    return np.mean((flat[n_train:] @ w).argmax(axis=1) == y[n_train:])


@pytest.mark.parametrize(
    ("generate", "classes"), [(shapes2d, len(SHAPES2D_CLASSES)), (shapes3d, len(SHAPES3D_CLASSES))]
)
def test_labels_are_learnable_but_not_linearly_trivial(generate, classes):
    x, y = generate(1600, seed=0)
    accuracy = _ridge_accuracy(x, y, classes, 1200)
    chance = 1 / classes
    # The labels carry signal a linear model partly finds, but the task needs more than that.
    # (Random labels would give chance ± 0.02 on 400 test samples.)
    assert chance + 0.06 < accuracy < 0.9


def test_drawn_ink_matches_the_shape():
    """Filled shapes put more ink inside than their outlines do (measured at the centre)."""
    x, y = shapes2d(2000, seed=2)
    flat = x.reshape(len(x), -1)
    # Undo each image's brightness/contrast roughly: rank-normalise to [0, 1].
    low = np.percentile(flat, 5, axis=1, keepdims=True)
    high = np.percentile(flat, 99, axis=1, keepdims=True)
    centre = ((x[:, 0, 12:16, 12:16].reshape(len(x), -1) - low) / (high - low)).mean(axis=1)
    ring, disk = centre[y == 0].mean(), centre[y == 1].mean()
    square, filled_square = centre[y == 2].mean(), centre[y == 3].mean()
    assert disk > ring + 0.2 and filled_square > square + 0.2


@pytest.mark.parametrize("size", [0, -5, 2.0, True, 5])
def test_bad_sizes(size):
    for generate in (shapes2d, shapes3d):
        with pytest.raises(ValueError, match="expected size to be an int"):
            generate(4, size=size)


def test_bad_counts():
    with pytest.raises(ValueError, match="positive number of samples"):
        shapes2d(0)
    with pytest.raises(ValueError, match="positive number of samples"):
        shapes3d(2.5)


def test_batchnorm_visibly_helps():
    """The BatchNorm paper's MNIST comparison, on shapes2d: the same sigmoid MLP and learning
    rate with and without BatchNorm, trained briefly. The per-image brightness and contrast
    saturate the plain network's sigmoids; normalised, the same network learns."""
    from tinynet import manual_seed, models, nn, optim
    from tinynet.data import DataLoader

    x, y = shapes2d(1000, seed=0)
    x_test, y_test = shapes2d(1000, seed=1)
    x, x_test = x.reshape(len(x), -1), x_test.reshape(len(x_test), -1)
    accuracy = {}
    for bn in (True, False):
        manual_seed(0)
        model = models.bn_mlp(bn=bn)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        criterion = nn.CrossEntropyLoss()
        for _ in range(2):
            for xb, yb in DataLoader((x, y), batch_size=50, shuffle=True):
                criterion(model(xb), yb)
                optimizer.zero_grad()
                model.backward(criterion.backward())
                optimizer.step()
        predicted = model.eval()(x_test).argmax(axis=1)
        accuracy[bn] = np.mean(predicted == y_test)
    # 1000 test images: a difference of 0.08 is far beyond sampling noise (about 0.02).
    assert accuracy[True] > accuracy[False] + 0.08, accuracy
