"""Numba's on-disk cache for tinynet's kernels, kept fresh across all the kernel modules.

Numba stores a compiled kernel with a stamp of its own source file (a hash of its contents)
and reuses it while that file is unchanged. A kernel compiles the helpers it calls from
other modules into itself (``winograd3d4.py`` holds ``winograd4.py``'s transforms), and the
flags it compiles with come from ``config.py`` (``TINYNET_FASTMATH``). So after an edit to
a helper (a learner trying a change, an upgrade that changes some modules and not others),
or with other flags, Numba would load the old machine code: the change would silently not
take effect. Here each kernel's stamp is a hash of every kernel module's source and of the
flags instead, so any such change recompiles the kernels (once; the cache is warm again
after).

How: Numba picks a "locator" for each cached function (where its cache lives, and its
stamp) from a list of locator classes; :func:`install` puts :class:`KernelsLocator` first.
It answers only for files in ``tinynet/kernels`` and hands everything else on, so other
libraries' caches are untouched. Its folder is the one Numba would have chosen.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from numba.core import caching

from . import config

KERNELS = Path(__file__).resolve().parent / "kernels"
# The class that holds Numba's list of locator classes (renamed in Numba 0.61).
_IMPL = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)


def stamp(folder: Path = KERNELS, flags: tuple = ()) -> str:
    """A hash of the sources of every module in ``folder`` and of ``flags``."""
    digest = hashlib.sha256(repr(flags).encode())
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def kernels_stamp() -> str:
    # Read once per process: the kernels are compiled from the files as imported.
    flags = (sorted(config.FASTMATH) if config.FASTMATH else False, config.WINOGRAD_FASTMATH)
    return stamp(KERNELS, flags)


class KernelsLocator(caching._CacheLocator):
    """Numba's own locator for a kernel module, but stamped with :func:`stamp`."""

    def __init__(self, inner):
        self._inner = inner

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    def get_source_stamp(self):
        # With Numba's own stamp of the file too: never less fresh than without this locator
        # (should the kernel sources not be listable, as from a zipped install).
        return kernels_stamp(), self._inner.get_source_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(os.path.abspath(py_file)).parent != KERNELS:
            return None
        for other in _IMPL._locator_classes:
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None


def install() -> bool:
    """Put :class:`KernelsLocator` first in Numba's list (once); whether it is there.

    Called before any kernel module is imported (``tinynet/kernels/__init__.py``): the
    locator is chosen when the ``@njit(cache=True)`` decorator runs. The list is Numba's
    internals (``CacheImpl``, ``_CacheImpl`` before 0.61): with a Numba that has neither,
    the kernels keep Numba's own stamps.
    """
    if _IMPL is None:
        return False
    if KernelsLocator not in _IMPL._locator_classes:
        _IMPL._locator_classes.insert(0, KernelsLocator)
    return True
