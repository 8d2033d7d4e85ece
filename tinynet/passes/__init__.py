"""Passes: pure rewrites of a model (the input is never modified)."""
