"""Numba kernels: pure functions, arrays in, preallocated arrays out. No classes here."""
