"""The fixed-width vector copies (tinynet/kernels/vector.py) against NumPy slicing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinynet.kernels import conv, vector


@given(
    length=st.integers(0, 50),
    d=st.integers(0, 7),
    s=st.integers(0, 7),
    relu=st.booleans(),
    add=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
@settings(max_examples=80, deadline=None)
def test_store_row_matches_numpy(length, d, s, relu, add, dtype):
    """Rows of 16 or more (vectors of 16), 8 to 15 (two of 8), shorter (one at a time)."""
    rng = np.random.default_rng(length)
    src = rng.standard_normal(s + length + 5).astype(dtype)
    src[s : s + length : 7] = np.nan  # NaN stays NaN through the ReLU, as in torch
    dst = np.full(d + length + 5, 42, dtype)
    src[s + 1 : s + length : 5] = -0.0  # kept negative by a plain copy
    b = dtype(0.25) if add else None
    vector.store_row(dst, d, src, s, length, b, relu)
    expected = src[s : s + length] + b if add else src[s : s + length]
    if relu:
        expected = np.where(expected <= 0, 0, expected)
    np.testing.assert_array_equal(dst[d : d + length], expected)
    assert (np.signbit(dst[d : d + length]) == np.signbit(expected)).all()
    assert (dst[:d] == 42).all() and (dst[d + length :] == 42).all()  # nothing else written


@given(
    pairs=st.integers(0, 50),
    gap=st.integers(0, 40),
    s=st.integers(0, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
)
@settings(max_examples=60, deadline=None)
def test_deinterleave_and_interleave_rows_match_numpy(pairs, gap, s, dtype):
    """deinterleave_row splits a row by parity into one array (as the phase planes hold
    both halves), at any distance apart; interleave_row puts the halves back together."""
    src = np.random.default_rng(pairs).standard_normal(s + 2 * pairs + 3).astype(dtype)
    halves = np.full(2 * pairs + gap + 4, 42, dtype)
    e, o = 1, 1 + pairs + gap
    vector.deinterleave_row(halves, e, halves, o, src, s, pairs)
    np.testing.assert_array_equal(halves[e : e + pairs], src[s : s + 2 * pairs : 2])
    np.testing.assert_array_equal(halves[o : o + pairs], src[s + 1 : s + 2 * pairs : 2])
    untouched = np.ones(halves.shape, bool)
    untouched[e : e + pairs] = untouched[o : o + pairs] = False
    assert (halves[untouched] == 42).all()

    back = np.full(src.shape, 42, dtype)
    vector.interleave_row(back, s, halves, e, halves, o, pairs)
    np.testing.assert_array_equal(back[s : s + 2 * pairs], src[s : s + 2 * pairs])
    assert (back[:s] == 42).all() and (back[s + 2 * pairs :] == 42).all()


@pytest.mark.parametrize("width", [1, 2, 5, 31, 32, 33, 40, 64])
@pytest.mark.parametrize("pw", [0, 1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 3])
def test_phase_plane_of_stride_2_matches_the_general_loop(width, pw, kernel):
    """conv._phase_plane's column-stride-2 rows (vector.deinterleave_row) write what its
    general loop writes: the same plane, for the padded extents an output size leaves."""
    x = np.random.default_rng(width).standard_normal((2, 3, width))
    out_w = (width + 2 * pw - kernel) // 2 + 1
    if out_w < 1:
        pytest.skip("no output column")
    stride, padding = (1, 1, 2), np.array([0, 1, pw])
    shape, _, _ = conv._phase_layout((1, 3, kernel), stride, (1, 1, 1), (2, 2, out_w))
    fast = np.zeros(shape)
    conv._phase_plane(x, padding, fast)
    # Where each of x's values goes, by hand: row y + 1 and column c + pw of the padded
    # input split by their parity, rows and columns past the padded extent left out.
    dp, sh, sw, hq, wq = shape
    places = []
    for z in range(min(x.shape[0], dp)):
        for y in range(x.shape[1]):
            yy = y + 1
            for c in range(width):
                k = (c + pw) // 2
                if yy // sh < hq and k < wq:
                    places.append(((z, y, c), (z, yy % sh, (c + pw) % 2, yy // sh, k)))
    slow = np.zeros(shape)
    for source, target in places:
        slow[target] = x[source]
    np.testing.assert_array_equal(fast, slow)
    # And back (the input gradient from the planes' gradient): the positions x's values came
    # from, zero past the padded extent.
    grad = np.random.default_rng(width + 1).standard_normal(shape)
    back = np.full(x.shape, 42.0)
    conv._phase_plane(back, padding, grad, True)
    expected = np.zeros(x.shape)
    for source, target in places:
        expected[source] = grad[target]
    np.testing.assert_array_equal(back, expected)


def test_a_strided_view_is_refused_at_compile_time():
    """A vector load reads 16 values side by side: a strided array must not type-check."""
    from numba.core.errors import TypingError

    src = np.arange(64, dtype=np.float32)
    dst = np.zeros(16, np.float32)
    with pytest.raises(TypingError):
        vector.store_row(dst, 0, src[::2], 0, 16, None, False)


@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    s=st.integers(0, 3),
    d=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
@settings(max_examples=60, deadline=None)
def test_transpose_matches_numpy(rows, cols, s, d, dtype):
    """16 × 16 blocks in registers (overlapping at the ends) from 16 a side, else plain."""
    src = np.random.default_rng(rows * 41 + cols).standard_normal(s + rows * cols + 2)
    src = src.astype(dtype)
    dst = np.full(d + rows * cols + 2, 42, dtype)
    vector.transpose(src, s, rows, cols, dst, d)
    expected = src[s : s + rows * cols].reshape(rows, cols).T.reshape(-1)
    np.testing.assert_array_equal(dst[d : d + rows * cols], expected)
    assert (dst[:d] == 42).all() and (dst[d + rows * cols :] == 42).all()
