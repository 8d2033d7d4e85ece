"""Fair timing of several implementations of one workload.

The rules, and why:

* **Warm-up first.** The first call of a tinynet kernel compiles it (Numba JIT); PyTorch and
  NumPy have first-call costs too (allocator, thread pools). The first call is timed on its own
  and reported as ``first_call_s``, then a few more untimed calls run before measuring.
* **Interleaved repetitions.** Samples are taken tinynet, numpy, torch, tinynet, numpy, ...
  (the order rotates each round), so a slow minute on a shared machine hurts all of them
  alike instead of whichever happened to run then.
* **Enough work per sample.** A sample times ``number`` back-to-back calls, with ``number``
  chosen so one sample lasts at least ``min_sample_s``; a 20-microsecond call timed alone
  would measure the clock.
* **A pause between samples, none within one.** After a call, thread pools keep their
  workers spinning on the cores for a while, waiting for more work: OpenBLAS (NumPy's
  products) for 2^28 cycles by default, about 0.1 s. Whoever runs next shares the cores with
  them: measured on a 2-core machine, tinynet's Conv2d 32 → 64 forward right after NumPy's
  took 8.5 ms instead of 2.0 with a 10 ms pause, still 2.6x slow after 50 ms, and as fast as
  alone after 150 ms; PyTorch's suffered alike. So each sample waits ``settle_s`` (0.2 s)
  first. Within a sample, calls come back to back, as in a training loop.
* **Medians and spread.** The median is robust to the odd sample a neighbour's process
  stole; the interquartile range and min/max show how noisy the machine was.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

MAX_NUMBER = 10_000  # calls in one sample at most


def _count_for(min_sample_s: float, per_call_s: float) -> int:
    """Calls that fill a sample at ``per_call_s`` a call, aiming 30% past the target so that
    the next try usually succeeds."""
    return int(1.3 * min_sample_s / max(per_call_s, 1e-9)) + 1


def calibrate(fn: Callable[[], object], min_sample_s: float, max_number: int = MAX_NUMBER) -> int:
    """How many back-to-back calls of ``fn`` make one sample last ``min_sample_s``.

    The count must fill a sample at the fastest rate seen, twice in a row. One batch that
    something slowed would otherwise fix a count far too small, and each sample would then
    be a few calls, each paying much of the thread wake-up and cold caches after the pause
    before the sample: seen in a full run, a ReLU forward calibrated to 10 calls a sample (its
    calibration batches ran at about 5 ms a call) timed 0.37 ms a call, against 0.11 ms with
    the count a quiet calibration gives. (A slow spell longer than that is caught by
    :func:`time_interleaved`, which retakes a sample far shorter than asked.)
    """
    number = 1
    best = float("inf")  # fastest time per call seen so far
    met = False  # did a batch at this number already fill a sample?
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / number)
        if number >= max_number:
            return number
        if number * best >= min_sample_s:  # fills a sample even at the fastest rate seen
            if met:
                return number
            met = True
            continue
        met = False
        number = min(max(_count_for(min_sample_s, best), number * 2), max_number)


def summarize(times: list[float]) -> dict:
    """Median, quartiles and extremes of per-call times (seconds)."""
    arr = np.asarray(times, dtype=np.float64)
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {
        "median_s": float(median),
        "q1_s": float(q1),
        "q3_s": float(q3),
        "min_s": float(arr.min()),
        "max_s": float(arr.max()),
        "iqr_rel": float((q3 - q1) / median) if median > 0 else 0.0,
        "samples": len(times),
    }


# Longer than OpenBLAS's default spin (2^28 cycles, ~0.1 s at 2.5 GHz; see the rules above).
SETTLE_S = 0.2


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    reps: int,
    warmup: int = 2,
    min_sample_s: float = 0.02,
    settle_s: float = SETTLE_S,
) -> dict[str, dict]:
    """Time each callable in ``fns``, interleaving their samples; per-call statistics.

    Returns ``{name: summary}`` where the summary (see :func:`summarize`) also holds
    ``first_call_s`` (the first call, JIT compilation included) and ``number`` (calls per
    sample). A callable that raises is reported as ``{"error": message}`` and dropped.
    """
    results: dict[str, dict] = {}
    numbers: dict[str, int] = {}
    live: dict[str, Callable[[], object]] = {}
    for name, fn in fns.items():
        try:
            start = time.perf_counter()
            fn()
            first = time.perf_counter() - start
            for _ in range(warmup):
                fn()
            numbers[name] = calibrate(fn, min_sample_s)
        except Exception as exc:  # a broken implementation must not stop the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = {"first_call_s": first}
        live[name] = fn

    samples: dict[str, list[float]] = {name: [] for name in live}
    names = list(live)
    for rep in range(reps):
        # Rotate the order so no implementation always runs right after the same neighbour.
        shift = rep % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            fn = live[name]
            number = numbers[name]
            # Let the previous implementation's thread pools fall asleep first: OpenMP and
            # OpenBLAS workers spin-wait for a while after each call, on the cores the next
            # implementation needs, which otherwise slows whoever runs second.
            time.sleep(settle_s)
            while True:
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                elapsed = time.perf_counter() - start
                # A sample far shorter than asked means the count was fixed during a slow
                # spell: raise it (for the later samples too) and take the sample again.
                if elapsed >= min_sample_s / 2 or number >= MAX_NUMBER:
                    break
                number = numbers[name] = min(_count_for(min_sample_s, elapsed / number), MAX_NUMBER)
                time.sleep(settle_s)
            samples[name].append(elapsed / number)

    for name in live:
        results[name].update(summarize(samples[name]))
        results[name]["number"] = numbers[name]
    return results


def time_once(fn: Callable[[], object]) -> float:
    """Wall time of a single call (seconds)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
