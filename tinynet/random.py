"""tinynet's one source of randomness.

Every random choice the library makes (initialisation, dropout masks, shuffling, generated
data) draws from the generator returned by :func:`get_generator`, so ``manual_seed(s)`` makes a
whole run repeatable.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed every random choice tinynet makes; returns the new generator."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed expected an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def get_generator() -> np.random.Generator:
    """The generator tinynet draws from (replaced by each ``manual_seed``)."""
    return _generator


def get_rng_state() -> dict:
    """The generator's state, as plain data (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state from :func:`get_rng_state`."""
    global _generator
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    _generator = np.random.Generator(bit_generator)


@contextmanager
def isolated():
    """Draws inside come from a private generator; tinynet's own is left as it was (for
    internal objects whose random initial values are thrown away)."""
    global _generator
    saved = _generator
    _generator = np.random.default_rng(0)
    try:
        yield
    finally:
        _generator = saved
