"""DataLoader: mini-batches over in-memory arrays, reshuffled every epoch.

    loader = DataLoader((images, labels), batch_size=64, shuffle=True)
    for epoch in range(epochs):
        for x, y in loader:          # x float32 (64, 1, 28, 28), y int64 (64,)
            ...

Shuffling draws a fresh permutation of all N samples at the start of every epoch, so each
sample appears exactly once per epoch and never twice in one mini-batch (the BatchNorm paper
notes that repeated samples in a batch hurt). Only the batch is converted: uint8 images become
floats in [0, 1] one batch at a time, so a 60,000-image data set is never copied whole.
"""

from __future__ import annotations

import math

import numpy as np

from .. import config
from .. import random as tn_random


class DataLoader:
    """Iterate over ``dataset`` in mini-batches.

    ``dataset`` is one array, a tuple of arrays sharing their first dimension (``(x, y)``),
    an object with ``.images`` and ``.labels`` (what ``MNIST()`` returns), or any object with
    ``len()`` and ``dataset[i]`` returning a tuple of arrays. Each batch is a tuple with one
    array per input array (a single array for a single input), converted as follows:

    * uint8 arrays of two or more dimensions (images) → the default float dtype, divided by 255;
    * other integer and bool arrays (labels) → int64;
    * float arrays keep their dtype.

    The permutation comes from ``tinynet.random.get_generator()`` (so ``tinynet.manual_seed``
    fixes it), or from the loader's own generator when ``seed`` is given. ``state_dict()``
    holds the epoch, the position inside it and the current permutation, so a run restored with
    ``load_state_dict`` continues with exactly the batches it would have seen.
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"DataLoader expected an int batch_size, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader expected batch_size >= 1, got {batch_size}")
        self.arrays, self._single = _as_arrays(dataset)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self._generator = None if seed is None else np.random.default_rng(seed)
        self.epoch = 0  # epochs completed
        self._order = None  # the current epoch's permutation, while one is under way
        self._position = 0  # batches of the current epoch handed out
        self._resume = False

    @property
    def num_samples(self) -> int:
        return len(self.arrays[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        if not (self._resume and self._order is not None):
            self._order = self._draw_order()
            self._position = 0
        self._resume = False
        order = self._order
        size = self.batch_size
        for index in range(self._position, len(self)):
            # Counted before the yield: a state_dict taken while the caller holds this batch
            # says the batch is consumed, which is what resuming after it needs.
            self._position = index + 1
            if isinstance(order, slice):
                chosen = slice(index * size, min((index + 1) * size, self.num_samples))
            else:
                chosen = order[index * size : (index + 1) * size]
            yield self._batch(chosen)
        self._order = None
        self._position = 0
        self.epoch += 1

    def _draw_order(self):
        if not self.shuffle:
            return slice(None)  # batches are slices: views, no gather
        generator = self._generator if self._generator is not None else tn_random.get_generator()
        return generator.permutation(self.num_samples)

    def _batch(self, chosen):
        batch = tuple(_convert(array[chosen]) for array in self.arrays)
        return batch[0] if self._single else batch

    # -- state for bit-identical resume --------------------------------------------------------

    def state_dict(self) -> dict:
        """Epoch, position in the current epoch, its permutation and the own generator's state.

        With ``seed=None`` the permutation is drawn from tinynet's global generator, whose state
        ``tinynet.random.get_rng_state()`` holds (a checkpoint saves both).
        """
        order = self._order if isinstance(self._order, np.ndarray) else None
        return {
            "epoch": self.epoch,
            "position": self._position if self._order is not None else 0,
            "order": None if order is None else order.copy(),
            "in_epoch": self._order is not None,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "generator": None if self._generator is None else self._generator.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; the next ``iter()`` continues where it was taken."""
        if state.get("num_samples") != self.num_samples or state.get("batch_size") != (
            self.batch_size
        ):
            raise ValueError(
                f"DataLoader.load_state_dict: the state is for {state.get('num_samples')} "
                f"samples in batches of {state.get('batch_size')}, this loader has "
                f"{self.num_samples} in batches of {self.batch_size}"
            )
        order = state.get("order")
        if state.get("in_epoch"):
            if self.shuffle:
                order = np.asarray(order, dtype=np.int64)
                if order.shape != (self.num_samples,) or not np.array_equal(
                    np.sort(order), np.arange(self.num_samples)
                ):
                    raise ValueError("DataLoader.load_state_dict: 'order' is not a permutation")
                self._order = order
            else:
                self._order = slice(None)
            self._position = int(state["position"])
        else:
            self._order = None
            self._position = 0
        if state.get("generator") is not None:
            if self._generator is None:
                raise ValueError(
                    "DataLoader.load_state_dict: the state has its own generator (seed=...) "
                    "but this loader uses tinynet's global one"
                )
            self._generator.bit_generator.state = state["generator"]
        self.epoch = int(state["epoch"])
        self._resume = True

    def __repr__(self) -> str:
        shapes = ", ".join(str(a.shape) for a in self.arrays)
        return (
            f"DataLoader({shapes}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last})"
        )


def _as_arrays(dataset) -> tuple[tuple[np.ndarray, ...], bool]:
    """The data set as a tuple of arrays of equal length, and whether it was a single array."""
    if isinstance(dataset, np.ndarray):
        arrays, single = (dataset,), True
    elif hasattr(dataset, "images") and hasattr(dataset, "labels"):
        arrays, single = (dataset.images, dataset.labels), False
    elif isinstance(dataset, (tuple, list)):
        arrays, single = tuple(dataset), False
    elif hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        # A map-style data set of samples: stack them once into arrays.
        samples = [dataset[i] for i in range(len(dataset))]
        if not samples:
            raise ValueError("DataLoader got an empty data set")
        if not isinstance(samples[0], tuple):
            return (np.stack(samples),), True
        arrays, single = tuple(np.stack(column) for column in zip(*samples, strict=True)), False
    else:
        raise TypeError(
            f"DataLoader expected an array, a tuple of arrays or a data set, "
            f"got {type(dataset).__name__}"
        )
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise ValueError("DataLoader expected arrays with a first (sample) dimension")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"DataLoader expected arrays of equal length, got shapes {shapes}")
    if 0 in lengths:
        raise ValueError("DataLoader got an empty data set")
    for array in arrays:
        if array.dtype.kind not in "biuf":
            raise TypeError(f"DataLoader expected numeric arrays, got dtype {array.dtype}")
    return arrays, single


def _convert(batch: np.ndarray) -> np.ndarray:
    if batch.dtype == np.uint8 and batch.ndim >= 2:
        out = np.empty(batch.shape, dtype=config.get_default_dtype())
        return np.divide(batch, out.dtype.type(255), out=out)
    if batch.dtype.kind in "biu":
        return batch.astype(np.int64, copy=False)
    return batch
