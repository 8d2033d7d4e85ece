"""Numba kernels: pure functions, arrays in, preallocated arrays out. No classes here."""

from ..numba_cache import install

# Before any kernel module is imported: their @njit(cache=True) decorators pick where and how
# Numba caches them (see numba_cache.py).
install()
