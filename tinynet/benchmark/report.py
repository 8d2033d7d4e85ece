"""Present results: a terminal table, a markdown table, JSON, and an optional PNG chart."""

from __future__ import annotations

import json
import math

from .runner import IMPLS


def _ms(result: dict | None) -> str:
    if not result:
        return "-"
    if "median_s" not in result:
        status = result.get("status", "n/a")
        return "WRONG" if status == "MISMATCH" else "n/a"
    ms = result["median_s"] * 1e3
    text = f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"
    return f"{text} ±{50 * result['iqr_rel']:.0f}%"


def _ratio(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rate(record: dict) -> tuple[str, str]:
    result = record["impl"].get("tinynet", {})
    if "gflops" in result:
        return f"{result['gflops']:.1f} GF/s", f"{100 * result['frac_sgemm']:.0f}% sgemm"
    if "gbs" in result:
        return f"{result['gbs']:.1f} GB/s", f"{100 * result['frac_copy']:.0f}% copy"
    return "-", "-"


def _check(record: dict) -> str:
    if "error" in record:
        return "error"
    marks = []
    for impl in IMPLS:
        status = record["impl"].get(impl, {}).get("status")
        if status == "MISMATCH":
            marks.append(f"{impl} WRONG")
    if marks:
        return ", ".join(marks)
    checked = [i for i in IMPLS if record["impl"].get(i, {}).get("status") == "ok"]
    return "ok" if len(checked) >= 2 else "unchecked"


HEADER = [
    "workload",
    "tinynet ms",
    "numpy ms",
    "torch ms",
    "numpy/tinynet",
    "tinynet/torch",
    "(fastest)",
    "tinynet rate",
    "of limit",
    "check",
]


def rows(results: dict) -> list[list[str]]:
    out = []
    for record in results["workloads"]:
        rate, frac = _rate(record)
        out.append(
            [
                record["name"],
                _ms(record["impl"].get("tinynet")),
                _ms(record["impl"].get("numpy")),
                _ms(record["impl"].get("torch")),
                _ratio(record.get("speedup_vs_numpy"), 1),
                _ratio(record.get("tinynet_over_torch")),
                _ratio(record.get("tinynet_over_torch_min")),
                rate,
                frac,
                _check(record),
            ]
        )
    return out


def _machine_lines(results: dict) -> list[str]:
    m, lim = results["machine"], results["limits"]
    blas = ", ".join(
        f"{b.get('internal_api')} {b.get('version') or b.get('prefix')}"
        for b in m.get("blas", [])
        if b
    )
    return [
        f"CPU: {m['cpu']} ({m['cores']} cores; {' '.join(m.get('cpu_flags', []))}; "
        f"L3 {m.get('l3_cache')})",
        f"threads: {results['threads']} for every implementation | numpy {m['numpy']}, "
        f"numba {m['numba']} ({m['numba_threading_layer']}), torch {m['torch']}",
        f"thread pools: {blas}",
        f"limits (same run, best of start and end): sgemm {lim['sgemm_gflops']:.1f} GFLOP/s "
        f"(n={lim['sgemm_n']}{_spread(results, 'sgemm_gflops')}); "
        f"copy {lim['copy_gbs']:.1f} GB/s{_spread(results, 'copy_gbs')} "
        f"(np.copyto {lim['copyto_gbs']:.1f}, "
        f"{results['threads']}-thread copy {lim['parallel_copy_gbs']:.1f}; "
        f"{lim['megabytes']} MB arrays)",
    ]


def _spread(results: dict, key: str) -> str:
    before, after = results.get("limits_before"), results.get("limits_after")
    if not before or not after:
        return ""
    return f"; start {before[key]:.1f}, end {after[key]:.1f}"


def format_table(results: dict) -> str:
    """Fixed-width table for the terminal."""
    table = [HEADER, *rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = _machine_lines(results) + [""]
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", *_legend()]
    lines += _extra_sections(results)
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """The same table in GitHub markdown."""
    lines = [f"# tinynet benchmark ({results['timestamp']})", ""]
    lines += [f"- {line}" for line in _machine_lines(results)]
    lines += [f"- command: `{results['command']}`", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 2) + ["---"]) + "|")
    for row in rows(results):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *_legend(), ""]
    extra = _extra_sections(results)
    if extra:
        lines += ["```", *extra, "```"]
    return "\n".join(lines) + "\n"


def _legend() -> list[str]:
    return [
        "ms: median per call, ±half the interquartile range. numpy/tinynet > 1: tinynet faster "
        "than plain NumPy; tinynet/torch < 1: tinynet faster than PyTorch; (fastest): the same "
        "ratio from each side's fastest sample, the least disturbed by other processes.",
        "rate: tinynet's GFLOP/s (conv, linear, models) or GB/s of compulsory traffic (BN, "
        "pool, ReLU); 'of limit' divides by the sgemm rate or copy bandwidth measured above.",
    ]


def _extra_sections(results: dict) -> list[str]:
    lines = []
    first = [
        (r["name"], r["impl"]["tinynet"]["first_call_s"])
        for r in results["workloads"]
        if "first_call_s" in r["impl"].get("tinynet", {})
    ]
    if first:
        slow = sorted(first, key=lambda item: -item[1])[:5]
        lines.append("")
        lines.append(
            "tinynet first calls (JIT compile, excluded from the medians): "
            + "; ".join(f"{name} {t:.2f} s" for name, t in slow)
        )
    compile_info = results.get("compile")
    if compile_info:
        lines += ["", "compile time (fresh processes, LeNet-BN train step + eval forward):"]
        for key in ("cold", "precompiled", "warm", "torch"):
            c = compile_info.get(key)
            if not c:
                continue
            if "error" in c:
                lines.append(f"  {key}: error {c['error']}")
                continue
            ahead = c.get("precompile_s", 0.0)
            lines.append(
                f"  {key:5s}: import {c['import_s']:.2f} s, "
                + (f"tinynet.precompile {ahead:.2f} s, " if ahead else "")
                + "first train step "
                f"{c['first_step_s']:.2f} s, first eval {c['first_eval_s']:.2f} s, "
                f"steady step {1e3 * c['steady_step_s']:.1f} ms, "
                f"process total {c['process_s']:.2f} s"
            )
    kernels = (compile_info or {}).get("kernels")
    if kernels and "error" not in kernels["cold"] and "error" not in kernels["warm"]:
        lines += ["", "conv and pooling kernels, first forward + backward (cold -> warm cache):"]
        cold, warm = kernels["cold"], kernels["warm"]
        lines += [
            f"  {name}: {cold[name]:.2f} s -> {warm.get(name, float('nan')):.2f} s"
            for name in cold
            if name != "process_s"
        ]
    scaling = results.get("scaling")
    if scaling:
        lines += ["", "thread scaling (median ms; speed-up vs 1 thread in brackets):"]
        threads = sorted(int(t) for t in scaling)
        base = scaling[str(threads[0])]
        lim_cells = []
        for t in threads:
            lim = scaling[str(t)]["limits"]
            lim_cells.append(
                f"{t}T sgemm {lim['sgemm_gflops']:.0f} GF/s copy {lim['copy_gbs']:.1f} GB/s"
            )
        lines.append("  limits: " + " | ".join(lim_cells))
        for name in base["workloads"]:
            for impl in IMPLS:
                t1 = base["workloads"][name].get(impl)
                if not t1:
                    continue
                cells = []
                for t in threads:
                    tt = scaling[str(t)]["workloads"].get(name, {}).get(impl)
                    cells.append(f"{t}T {1e3 * tt:.3g} ({t1 / tt:.2f}x)" if tt else f"{t}T -")
                lines.append(f"  {name} [{impl}]: " + "  ".join(cells))
    return lines


def write_json(results: dict, path: str) -> None:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    with open(path, "w") as f:
        json.dump(clean(results), f, indent=1)
        f.write("\n")


def write_png(results: dict, path: str) -> str | None:
    """Bar chart of tinynet's speed-up over NumPy and over PyTorch (log scale).

    Returns a reason string when the chart was skipped (matplotlib missing), else None.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; no chart written"
    records = [
        r for r in results["workloads"] if r.get("speedup_vs_numpy") or r.get("tinynet_over_torch")
    ]
    if not records:
        return "no workload has both tinynet and a baseline timed; no chart written"
    names = [r["name"] for r in records]
    vs_numpy = [r.get("speedup_vs_numpy") or float("nan") for r in records]
    vs_torch = [
        1 / r["tinynet_over_torch"] if r.get("tinynet_over_torch") else float("nan")
        for r in records
    ]
    height = 0.38
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.5))
    ys = range(len(names))
    ax.barh([y - height / 2 for y in ys], vs_numpy, height, label="vs NumPy (numpy / tinynet)")
    ax.barh([y + height / 2 for y in ys], vs_torch, height, label="vs PyTorch (torch / tinynet)")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of tinynet (>1: tinynet faster)")
    ax.set_title(f"tinynet speed-ups, {results['threads']} threads, {results['machine']['cpu']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
