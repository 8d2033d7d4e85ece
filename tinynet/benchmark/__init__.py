"""tinynet's benchmark: tinynet against plain NumPy and PyTorch, beside the machine's limits.

Run ``tinynet bench`` (or ``python -m tinynet.benchmark``, or ``python bench/run.py`` in the
source tree); ``--help`` lists the options. What is measured and how to read it is in
``bench/README.md``. The pieces:

* ``workloads.py``: the layer shapes and model steps; ``spec.py`` builds all three
  implementations of a model from one description; ``numpy_impl.py`` and ``torch_impl.py``
  are the baselines.
* ``timing.py``: interleaved repetitions, medians and spread; ``limits.py``: sgemm GFLOP/s
  and copy bandwidth, measured in the same run; ``compile_time.py``: cold and warm start-up.
* ``runner.py`` checks that the implementations agree before timing them; ``report.py``
  prints and saves the results.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

__all__ = ["main", "run"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit status 2, as the rest of the command line reports a mistake.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tinynet bench",
        description="Time tinynet against plain NumPy and PyTorch with the same thread count, "
        "beside the machine's sgemm rate and copy bandwidth.",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for every implementation")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few repetitions")
    p.add_argument(
        "--only",
        metavar="PATTERN",
        help="regular expression(s), comma-separated, matched against workload names "
        "(e.g. 'conv2d', 'lenet', 'bn.d .* bwd')",
    )
    p.add_argument("--reps", type=int, help="timed samples per implementation (default 11)")
    p.add_argument(
        "--min-sample",
        type=float,
        help="seconds each sample lasts at least (calls are batched; default 0.05)",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown")
    p.add_argument("--png", metavar="PATH", help="write a speed-up chart (needs matplotlib)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-numpy", action="store_true", help="leave the NumPy baseline out")
    p.add_argument("--scaling", action="store_true", help="also time 1..cores threads")
    p.add_argument("--compile", action="store_true", help="also time cold/warm compilation")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument(
        "--survey",
        type=int,
        metavar="N",
        help="instead: N random convolutions, tinynet against PyTorch (see survey.py)",
    )
    p.add_argument("--seed", type=int, default=0, help="the survey's configurations (default 0)")
    return p


def _check_arguments(args) -> str | None:
    """What is wrong with the arguments, checked before minutes of timing: None if nothing."""
    if args.threads < 1:
        return "--threads must be at least 1"
    if args.survey is not None and args.survey < 1:
        return f"--survey needs a count of at least 1, got {args.survey}"
    if args.reps is not None and args.reps < 1:
        return f"--reps must be at least 1, got {args.reps}"
    if args.min_sample is not None and not args.min_sample > 0:
        return f"--min-sample must be a positive number of seconds, got {args.min_sample}"
    for pattern in (args.only or "").split(","):
        try:
            re.compile(pattern.strip())
        except re.error as exc:
            return f"--only {pattern.strip()!r} is not a regular expression ({exc})"
    for option in ("json", "markdown", "png"):
        path = getattr(args, option)
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            return f"--{option} {path}: no folder {folder} to write into"
    return None


def _select(workloads, only: str | None):
    if not only:
        return workloads
    patterns = [re.compile(p.strip(), re.IGNORECASE) for p in only.split(",") if p.strip()]
    return [w for w in workloads if any(p.search(w.name) for p in patterns)]


def run(args: argparse.Namespace, log=print) -> dict:
    """Run the benchmark described by parsed ``args``; returns the results dict."""
    import numba

    import tinynet

    from . import limits as limits_mod
    from .runner import IMPLS, add_rates, run_workload
    from .timing import SETTLE_S
    from .torch_impl import import_torch
    from .workloads import all_workloads

    torch = None if args.no_torch else import_torch()
    impls = [i for i in IMPLS if not (i == "numpy" and args.no_numpy)]
    if torch is None:
        impls = [i for i in impls if i != "torch"]
    cores = os.cpu_count() or 1
    threads = max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS))
    reps = args.reps or (3 if args.quick else 11)
    min_sample = args.min_sample or (0.002 if args.quick else 0.05)
    settle = 0.0 if args.quick else SETTLE_S

    def set_threads(n):
        tinynet.set_num_threads(n)
        if torch is not None:
            torch.set_num_threads(n)

    set_threads(threads)
    workloads = _select(all_workloads(args.quick), args.only)
    results = {
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "tinynet bench " + " ".join(args.argv),
        "threads": threads,
        "reps": reps,
        "min_sample_s": min_sample,
        "quick": bool(args.quick),
        "machine": limits_mod.describe_machine(torch),
        "implementations": impls,
    }
    log(f"measuring limits with {threads} threads ...")
    results["limits"] = limits_mod.measure_limits(args.quick)
    results["machine"] = limits_mod.describe_machine(torch)  # threading layer now known
    records = []
    for n, work in enumerate(workloads, 1):
        log(f"[{n}/{len(workloads)}] {work.name}")
        records.append(run_workload(work, impls, tinynet, torch, reps, min_sample, settle))
    results["workloads"] = records
    # Limits again at the end: if the machine got busier during the run, it shows here. The
    # fractions use the better of the two, the best this machine showed it can do.
    after = limits_mod.measure_limits(args.quick)
    results["limits_before"] = dict(results["limits"])
    results["limits_after"] = after
    for key in ("sgemm_gflops", "copyto_gbs", "parallel_copy_gbs", "copy_gbs"):
        results["limits"][key] = max(results["limits"][key], after[key])
    for record in records:
        add_rates(record, results["limits"])

    if args.scaling:
        results["scaling"] = _scaling(
            args, workloads, impls, tinynet, torch, cores, set_threads, log
        )
        set_threads(threads)
    if args.compile:
        from .compile_time import measure_compile

        log("timing cold and warm compilation in fresh processes ...")
        results["compile"] = measure_compile(
            threads, torch is not None, batch=4 if args.quick else 64
        )
    return results


def _scaling(args, workloads, impls, tn, torch, cores, set_threads, log) -> dict:
    """The limits and (by default) the model workloads at 1..cores threads."""
    from . import limits as limits_mod
    from .runner import run_workload
    from .timing import SETTLE_S

    chosen = workloads if args.only else [w for w in workloads if w.group == "model"]
    reps = max(3, (args.reps or 7) // 2)
    min_sample = args.min_sample or (0.002 if args.quick else 0.05)
    settle = 0.0 if args.quick else SETTLE_S
    out = {}
    for t in range(1, cores + 1):
        set_threads(t)
        log(f"thread scaling: {t} thread(s)")
        entry = {"limits": limits_mod.measure_limits(args.quick), "workloads": {}}
        for work in chosen:
            record = run_workload(work, impls, tn, torch, reps, min_sample, settle)
            entry["workloads"][work.name] = {
                impl: r.get("median_s") for impl, r in record["impl"].items()
            }
        out[str(t)] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``tinynet bench``); returns the exit status."""
    from . import report
    from .workloads import all_workloads

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    problem = _check_arguments(args)
    if problem:
        print(f"tinynet bench: {problem}", file=sys.stderr)
        return 2
    if args.survey is not None:
        return _survey(args)
    selected = _select(all_workloads(args.quick), args.only)
    if args.list:
        for work in selected:
            print(work.name)
        return 0
    if not selected:
        print(f"tinynet bench: no workload matches {args.only!r}", file=sys.stderr)
        return 2
    results = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(report.format_table(results))
    if args.json:
        report.write_json(results, args.json)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.format_markdown(results))
    if args.png:
        skipped = report.write_png(results, args.png)
        if skipped:
            print(f"tinynet bench: {skipped}", file=sys.stderr)
    wrong = [
        r["name"]
        for r in results["workloads"]
        if any(v.get("status") == "MISMATCH" for v in r["impl"].values())
    ]
    if wrong:
        print(f"tinynet bench: implementations disagree on {wrong}", file=sys.stderr)
        return 1
    return 0


def _survey(args) -> int:
    """``tinynet bench --survey N``: the random-configuration survey (survey.py)."""
    import numba

    import tinynet

    from .survey import format_survey, survey
    from .timing import SETTLE_S
    from .torch_impl import import_torch

    torch = import_torch()
    if torch is None:
        print("tinynet bench: --survey compares with PyTorch: pip install torch", file=sys.stderr)
        return 2
    threads = max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS))
    tinynet.set_num_threads(threads)
    torch.set_num_threads(threads)
    rows = survey(
        args.survey,
        args.seed,
        reps=args.reps or (3 if args.quick else 5),
        min_sample=args.min_sample or (0.002 if args.quick else 0.02),
        settle=0.0 if args.quick else SETTLE_S,
        torch=torch,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    header = f"tinynet bench --survey {args.survey} --seed {args.seed}, {threads} threads"
    print(header)
    print(format_survey(rows))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"command": header, "threads": threads, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# {header}\n\n" + format_survey(rows, markdown=True))
    return 0
