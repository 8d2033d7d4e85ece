"""DataLoader: epochs cover every sample once, batches convert only themselves, state resumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet.data import DataLoader, ImageDataset


def _data(n=50):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8)  # label i marks sample i
    return images, labels


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 50),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
)
def test_each_epoch_covers_every_sample_once(n, batch_size, drop_last, shuffle):
    images, labels = _data(n)
    loader = DataLoader((images, labels), batch_size, shuffle=shuffle, drop_last=drop_last, seed=1)
    expected_len = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(loader) == expected_len
    for _ in range(2):
        seen = []
        batches = list(loader)
        assert len(batches) == expected_len
        for x, y in batches:
            assert len(set(y.tolist())) == len(y)  # no sample twice in a batch
            assert x.dtype == np.float32 and y.dtype == np.int64
            np.testing.assert_array_equal(x, images[y] / np.float32(255))
            seen.extend(y.tolist())
        if drop_last:
            assert len(seen) == expected_len * batch_size and len(set(seen)) == len(seen)
        else:
            assert sorted(seen) == list(range(n))
        if not shuffle:
            assert seen == list(range(len(seen)))


def test_reshuffles_every_epoch_and_seed_repeats():
    data = _data(200)
    loader = DataLoader(data, batch_size=200, shuffle=True, seed=3)
    first, second = (next(iter(loader))[1] for _ in range(2))
    assert not np.array_equal(first, second)
    again = DataLoader(data, batch_size=200, shuffle=True, seed=3)
    np.testing.assert_array_equal(next(iter(again))[1], first)
    assert loader.epoch == 0  # abandoned epochs are not counted
    for _ in loader:
        pass
    assert loader.epoch == 1


def test_global_generator_is_used_without_seed():
    data = _data(100)
    tinynet.manual_seed(5)
    first = next(iter(DataLoader(data, batch_size=100, shuffle=True)))[1]
    tinynet.manual_seed(5)
    expected = tinynet.random.get_generator().permutation(100)
    np.testing.assert_array_equal(first, expected)


def test_conversions_and_views():
    rng = np.random.default_rng(0)
    floats = rng.standard_normal((10, 3)).astype(np.float64)
    labels = rng.integers(0, 5, 10).astype(np.int32)
    x, y = next(iter(DataLoader((floats, labels), batch_size=4)))
    assert x.dtype == np.float64 and y.dtype == np.int64
    assert np.shares_memory(x, floats)  # unshuffled float batches are views, not copies
    single = next(iter(DataLoader(floats, batch_size=3)))
    assert isinstance(single, np.ndarray) and single.shape == (3, 3)
    images = rng.integers(0, 256, (6, 1, 2, 2), dtype=np.uint8)
    dataset = ImageDataset(images, np.arange(6, dtype=np.int64), ("a",))
    x, y = next(iter(DataLoader(dataset, batch_size=6)))
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(x, (images.astype(np.float64) / 255).astype(np.float32))


def test_map_style_dataset():
    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(2, i * i, dtype=np.float32), i

    x, y = next(iter(DataLoader(Squares(), batch_size=5)))
    np.testing.assert_array_equal(x[:, 0], [0, 1, 4, 9, 16])
    np.testing.assert_array_equal(y, np.arange(5))


@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("stop_after", [0, 3, 7])
def test_state_dict_resumes_bit_identically(seed, stop_after):
    data = _data(70)
    tinynet.manual_seed(11)
    straight = DataLoader(data, batch_size=10, shuffle=True, seed=seed)
    reference = [y for _ in range(3) for _, y in straight]

    tinynet.manual_seed(11)
    loader = DataLoader(data, batch_size=10, shuffle=True, seed=seed)
    got = [y for _, y in loader]  # one whole epoch, then part of the second
    iterator = iter(loader)
    for _ in range(stop_after):
        got.append(next(iterator)[1])
    state = loader.state_dict()
    rng_state = tinynet.random.get_rng_state()

    tinynet.manual_seed(999)  # a fresh process would start elsewhere
    tinynet.random.set_rng_state(rng_state)
    resumed = DataLoader(data, batch_size=10, shuffle=True, seed=None if seed is None else 0)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    while len(got) < len(reference):
        got.extend(y for _, y in resumed)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_dict_errors():
    loader = DataLoader(_data(20), batch_size=5, shuffle=True)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="the state is for 20 samples in batches of 5"):
        DataLoader(_data(20), batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="own generator"):
        loader.load_state_dict(DataLoader(_data(20), batch_size=5, seed=1).state_dict())
    bad = dict(state, in_epoch=True, order=np.zeros(20, np.int64), position=1)
    with pytest.raises(ValueError, match="not a permutation"):
        loader.load_state_dict(bad)


def test_argument_errors():
    images, labels = _data(10)
    with pytest.raises(ValueError, match="equal length"):
        DataLoader((images, labels[:5]))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        DataLoader((images, labels), batch_size=0)
    with pytest.raises(TypeError, match="int batch_size"):
        DataLoader((images, labels), batch_size=2.0)
    with pytest.raises(ValueError, match="empty"):
        DataLoader((images[:0], labels[:0]))
    with pytest.raises(TypeError, match="numeric arrays"):
        DataLoader(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="expected an array"):
        DataLoader(42)
