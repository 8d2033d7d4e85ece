"""The kernels' on-disk cache is stamped with all the kernel sources and flags
(tinynet/numba_cache.py), so an edit to a helper in another module recompiles its callers."""

import inspect
import shutil
import subprocess
import sys
import textwrap

import numba
import pytest
from numba.core import caching

from tinynet import config, numba_cache
from tinynet.kernels import winograd3d4, winograd4

needs_cache = pytest.mark.skipif(
    not config.CACHE or numba.config.DISABLE_JIT, reason="the kernels are not cached"
)


@needs_cache
def test_kernels_get_the_package_stamp_in_numbas_own_folder():
    assert numba_cache.install()
    for kernel in (winograd4._output_transform, winograd3d4.winograd3d4_backward):
        locator = kernel._cache._impl.locator
        assert isinstance(locator, numba_cache.KernelsLocator)
        package, own_file = locator.get_source_stamp()
        assert package == numba_cache.kernels_stamp()
        # The folder is the one Numba's own locators pick for that file.
        for other in numba_cache._IMPL._locator_classes[1:]:
            own = other.from_function(kernel.py_func, inspect.getfile(kernel.py_func))
            if own is not None:
                break
        assert locator.get_cache_path() == own.get_cache_path()
        assert own_file == own.get_source_stamp()


@needs_cache
def test_other_functions_keep_numbas_locators():
    @numba.njit(cache=True)
    def add_one(x):
        return x + 1

    assert not isinstance(add_one._cache._impl.locator, numba_cache.KernelsLocator)
    assert isinstance(add_one._cache._impl.locator, caching._CacheLocator)


def test_the_stamp_changes_with_any_module_and_with_the_flags(tmp_path):
    shutil.copy(winograd4.__file__, tmp_path / "a.py")
    shutil.copy(winograd3d4.__file__, tmp_path / "b.py")
    before = numba_cache.stamp(tmp_path, ("flags",))
    assert numba_cache.stamp(tmp_path, ("flags",)) == before
    assert numba_cache.stamp(tmp_path, ("other flags",)) != before
    # A change in the module the kernel does not live in (its helper's) changes the stamp.
    (tmp_path / "a.py").write_text((tmp_path / "a.py").read_text() + "\n# edited\n")
    assert numba_cache.stamp(tmp_path, ("flags",)) != before


def test_fastmath_switch_changes_the_stamp():
    # TINYNET_FASTMATH=0 compiles every kernel without fast-math: a kernel cached with it
    # must not be loaded. The flags are read at import, so compare two processes.
    code = "from tinynet import numba_cache; print(numba_cache.kernels_stamp())"

    def stamp(env_value):
        env = {"TINYNET_FASTMATH": env_value, "PATH": "", "PYTHONPATH": ":".join(sys.path)}
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return run.stdout.strip()

    assert stamp("0") != stamp("1")
