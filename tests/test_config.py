"""tinynet.config and tinynet.random: threads, default dtype, Numba flags, seeding."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

import tinynet
from tinynet import config
from tinynet import random as tn_random
from tinynet.nn import Dropout, Linear


def blas_threads() -> set[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return {
        info["num_threads"]
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    }


# -- threads -----------------------------------------------------------------------------------


def test_set_num_threads_as_a_call():
    start = tinynet.get_num_threads()
    try:
        tinynet.set_num_threads(1)
        assert tinynet.get_num_threads() == numba.get_num_threads() == 1
        assert blas_threads() == {1}
    finally:
        tinynet.set_num_threads(start)
    assert tinynet.get_num_threads() == start


def test_set_num_threads_as_a_context_restores():
    start = tinynet.get_num_threads()
    most = numba.config.NUMBA_NUM_THREADS
    with tinynet.set_num_threads(1) as setting:
        assert isinstance(setting, tinynet.set_num_threads)
        assert tinynet.get_num_threads() == 1
        assert blas_threads() == {1}
        with tinynet.set_num_threads(most):
            assert tinynet.get_num_threads() == most
            assert blas_threads() == {most}
        assert tinynet.get_num_threads() == 1
        assert blas_threads() == {1}  # BLAS is restored with Numba
    assert tinynet.get_num_threads() == start
    assert blas_threads() == {start}


def test_set_num_threads_restores_after_an_exception():
    start = tinynet.get_num_threads()
    with pytest.raises(KeyError), tinynet.set_num_threads(1):
        raise KeyError("inside")
    assert tinynet.get_num_threads() == start


@pytest.mark.parametrize("n", [1.0, "2", True, None])
def test_set_num_threads_rejects_non_ints(n):
    with pytest.raises(TypeError, match="set_num_threads expected an int"):
        tinynet.set_num_threads(n)


@pytest.mark.parametrize("n", [0, -1, 10_000])
def test_set_num_threads_rejects_out_of_range(n):
    start = tinynet.get_num_threads()
    with pytest.raises(ValueError, match=rf"expected 1 <= n <= \d+ .*got {n}"):
        tinynet.set_num_threads(n)
    assert tinynet.get_num_threads() == start


def test_set_num_threads_accepts_numpy_ints():
    start = tinynet.get_num_threads()
    with tinynet.set_num_threads(np.int64(1)):
        assert tinynet.get_num_threads() == 1
    assert tinynet.get_num_threads() == start


# -- default dtype -----------------------------------------------------------------------------


def test_default_dtype_controls_new_parameters():
    assert tinynet.get_default_dtype() == np.float32
    try:
        tinynet.set_default_dtype(np.float64)
        layer = Linear(3, 2)
        assert layer.weight.dtype == layer.bias.dtype == np.float64
        assert layer.dtype == np.float64
        assert layer(np.ones((1, 3))).dtype == np.float64
    finally:
        tinynet.set_default_dtype(np.float32)
    assert Linear(3, 2).weight.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.int64, complex])
def test_set_default_dtype_rejects_others(dtype):
    with pytest.raises(TypeError, match="set_default_dtype expected float32 or float64"):
        tinynet.set_default_dtype(dtype)
    assert tinynet.get_default_dtype() == np.float32


# -- Numba flags -------------------------------------------------------------------------------


def test_numba_flags_come_from_the_environment():
    assert config.FASTMATH is False or "nnan" not in config.FASTMATH  # max pooling needs -inf
    code = "from tinynet import config; print(repr(config.FASTMATH), config.CACHE)"
    env = {**os.environ, "TINYNET_FASTMATH": "0", "TINYNET_NUMBA_CACHE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


# -- random ------------------------------------------------------------------------------------


def test_manual_seed_repeats_init_and_dropout():
    def draw():
        tinynet.manual_seed(7)
        layer = Linear(5, 4)
        mask = Dropout(0.5)(np.ones((8, 8)))
        return layer.weight.data.copy(), mask

    (w1, m1), (w2, m2) = draw(), draw()
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(m1, m2)
    tinynet.manual_seed(8)
    assert not np.array_equal(Linear(5, 4).weight.data, w1)


def test_manual_seed_returns_the_new_generator():
    generator = tinynet.manual_seed(np.int64(3))
    assert generator is tn_random.get_generator()
    assert isinstance(generator, np.random.Generator)


@pytest.mark.parametrize("seed", [1.5, "1", True, None])
def test_manual_seed_rejects_non_ints(seed):
    with pytest.raises(TypeError, match="manual_seed expected an int"):
        tinynet.manual_seed(seed)


def test_rng_state_round_trip():
    tinynet.manual_seed(11)
    tn_random.get_generator().random(3)
    state = tn_random.get_rng_state()
    expected = tn_random.get_generator().random(4)
    tn_random.get_generator().random(10)
    tn_random.set_rng_state(state)
    np.testing.assert_array_equal(tn_random.get_generator().random(4), expected)
