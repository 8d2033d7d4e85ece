"""Run workloads: build the three implementations, check they agree, then time them."""

from __future__ import annotations

import time

import numpy as np

from .timing import SETTLE_S, time_interleaved

IMPLS = ("tinynet", "numpy", "torch")


def max_rel_error(got: dict, want: dict) -> tuple[float, str]:
    """Largest relative error ‖got − want‖ / ‖want‖ (2-norm) over the outputs; the worst key.

    A norm-wise error, not an element-wise one: in a training step a pre-activation within
    rounding of ReLU's kink can switch sides between two correct float32 implementations and
    move one gradient element; that shifts a norm a little, while a wrong formula shifts it a
    lot.
    """
    if set(got) != set(want):
        return float("inf"), f"different outputs: {sorted(got)} vs {sorted(want)}"
    worst, worst_key = 0.0, ""
    for key, expected in want.items():
        actual = np.asarray(got[key], dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            return float("inf"), f"{key}: shape {actual.shape} vs {expected.shape}"
        scale = max(float(np.linalg.norm(expected)), 1e-12)
        err = float(np.linalg.norm(actual - expected)) / scale
        if not np.isfinite(err):
            err = float("inf")
        if err > worst or worst_key == "":
            worst, worst_key = err, key
    return worst, worst_key


def validate(outputs: dict[str, dict], tolerance: float) -> dict[str, dict]:
    """Pairwise agreement; an implementation is valid if it agrees with another one.

    With a single implementation there is nothing to compare against: "unchecked".
    """
    names = list(outputs)
    verdict = {}
    errors = {}
    for a in names:
        for b in names:
            if a < b:
                errors[(a, b)] = errors[(b, a)] = max_rel_error(outputs[a], outputs[b])
    for a in names:
        others = [b for b in names if b != a]
        if not others:
            verdict[a] = {"status": "unchecked"}
            continue
        # Prefer reporting the error against PyTorch, the most trusted reference.
        others.sort(key=lambda b: (b != "torch", b != "numpy"))
        agree = [b for b in others if errors[(a, b)][0] <= tolerance]
        ref = agree[0] if agree else others[0]
        err, key = errors[(a, ref)]
        verdict[a] = {
            "status": "ok" if agree else "MISMATCH",
            "checked_against": ref,
            "max_rel_error": err,
            "worst_output": key,
        }
    return verdict


def run_workload(
    work, impls, tn, torch, reps: int, min_sample_s: float, settle_s: float = SETTLE_S
) -> dict:
    """Build, validate and time one workload; a record for the report."""
    record = {
        "name": work.name,
        "group": work.group,
        "op": work.op,
        "bound": work.bound,
        "impl": {},
    }
    try:
        cases = work.make(impls, tn, torch)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    record.update({k: v for k, v in work.meta.items() if k not in ("flops",)})
    record["flops"] = work.flops if work.flops is not None else work.meta.get("flops")
    record["bytes"] = work.bytes

    outputs, first_call = {}, {}
    for impl, case in cases.items():
        if isinstance(case, str):
            record["impl"][impl] = {"status": case}
            continue
        try:
            start = time.perf_counter()
            outputs[impl] = case.check()
            first_call[impl] = time.perf_counter() - start
        except Exception as exc:
            record["impl"][impl] = {"status": f"n/a ({type(exc).__name__}: {exc})"}
    for impl, verdict in validate(outputs, work.tolerance).items():
        record["impl"][impl] = verdict

    timed = {
        impl: cases[impl].run
        for impl in IMPLS
        if impl in outputs and record["impl"][impl]["status"] in ("ok", "unchecked")
    }
    for impl, result in time_interleaved(
        timed, reps, min_sample_s=min_sample_s, settle_s=settle_s
    ).items():
        if "error" in result:
            record["impl"][impl]["status"] = f"n/a ({result['error']})"
            continue
        # The check was the first call, so it carries the JIT compilation.
        result["first_call_s"] = first_call[impl]
        record["impl"][impl].update(result)
    return record


def add_rates(record: dict, limits: dict) -> None:
    """GFLOP/s or GB/s per implementation, as a fraction of the machine's limit; ratios."""
    for result in record["impl"].values():
        median = result.get("median_s")
        if not median:
            continue
        if record.get("flops"):
            result["gflops"] = record["flops"] / median / 1e9
            result["frac_sgemm"] = result["gflops"] / limits["sgemm_gflops"]
        if record.get("bytes"):
            result["gbs"] = record["bytes"] / median / 1e9
            result["frac_copy"] = result["gbs"] / limits["copy_gbs"]
    t = {k: v.get("median_s") for k, v in record["impl"].items()}
    if t.get("tinynet") and t.get("numpy"):
        record["speedup_vs_numpy"] = t["numpy"] / t["tinynet"]
    if t.get("tinynet") and t.get("torch"):
        record["tinynet_over_torch"] = t["tinynet"] / t["torch"]
    # The same ratios from the fastest samples: the least disturbed by a busy machine.
    best = {k: v.get("min_s") for k, v in record["impl"].items()}
    if best.get("tinynet") and best.get("numpy"):
        record["speedup_vs_numpy_min"] = best["numpy"] / best["tinynet"]
    if best.get("tinynet") and best.get("torch"):
        record["tinynet_over_torch_min"] = best["tinynet"] / best["torch"]
