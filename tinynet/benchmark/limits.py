"""What the machine can do at best, measured in the same run as the workloads.

Two numbers bound every workload:

* **sgemm GFLOP/s**: a large float32 matrix product through NumPy's BLAS with the benchmark's
  thread count. A convolution or linear layer is a matrix product in disguise, so its GFLOP/s
  divided by this rate says how close it gets to the arithmetic limit.
* **copy bandwidth GB/s**: copying an array much larger than the last-level cache (bytes read
  plus bytes written, per second). BatchNorm, pooling and ReLU do a few operations per byte,
  so their speed is bounded by memory traffic, not arithmetic. ``np.copyto`` runs on one
  thread; a Numba ``prange`` copy uses all of the benchmark's threads; the larger is the limit.

Workloads whose data fits in cache can beat the DRAM copy rate (a fraction above 1).
"""

from __future__ import annotations

import os
import platform
import time

import numba
import numpy as np


@numba.njit(parallel=True, cache=False)
def _parallel_copy(src, dst):
    """dst[i] = src[i]; parallel over: contiguous chunks of i (each thread writes its own)."""
    n = src.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in numba.prange(chunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            dst[i] = src[i]


def _best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sgemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of an (n × n) @ (n × n) float32 product (2n³ flops)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm the BLAS thread pool
    best = _best_of(lambda: np.matmul(a, b, out=out), reps)
    return 2.0 * n**3 / best / 1e9


def copy_bandwidth(megabytes: int = 256, reps: int = 5) -> dict:
    """GB/s (read + write bytes) copying a float32 array of ``megabytes``, two ways."""
    n = megabytes * 1024 * 1024 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros(n, dtype=np.float32)
    moved = 2.0 * src.nbytes  # each byte is read once and written once
    np.copyto(dst, src)
    single = moved / _best_of(lambda: np.copyto(dst, src), reps) / 1e9
    _parallel_copy(src, dst)  # compile
    threaded = moved / _best_of(lambda: _parallel_copy(src, dst), reps) / 1e9
    return {
        "copyto_gbs": single,
        "parallel_copy_gbs": threaded,
        "copy_gbs": max(single, threaded),
        "megabytes": megabytes,
    }


def measure_limits(quick: bool = False) -> dict:
    """sgemm and copy limits with the current thread settings."""
    gemm_n = 512 if quick else 2048
    copy_mb = 16 if quick else 256
    reps = 2 if quick else 5
    limits = {"sgemm_n": gemm_n, "sgemm_gflops": sgemm_gflops(gemm_n, reps)}
    limits.update(copy_bandwidth(copy_mb, reps))
    return limits


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]
                    return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def _l3_cache() -> str | None:
    path = "/sys/devices/system/cpu/cpu0/cache/index3/size"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def describe_machine(torch_module=None) -> dict:
    """CPU, core count, library versions and BLAS, for the report."""
    import tinynet

    machine = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "l3_cache": _l3_cache(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": _threading_layer(),
        "tinynet": getattr(tinynet, "__version__", "?"),
        "torch": getattr(torch_module, "__version__", None),
        "blas": _blas_info(),
    }
    if torch_module is not None:
        machine["torch_mkldnn"] = bool(torch_module.backends.mkldnn.is_available())
    return machine


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel function has run yet
        return str(numba.config.THREADING_LAYER)
