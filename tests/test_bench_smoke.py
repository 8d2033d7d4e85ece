"""Smoke test of the benchmark: tiny shapes, few repetitions; checks structure, not speed."""

import json

import numpy as np
import pytest

from tinynet.benchmark import main, report
from tinynet.benchmark.runner import validate
from tinynet.benchmark.timing import calibrate, summarize, time_interleaved

# Cheap workloads whose kernels compile quickly: dense layers, BN1d, ReLU and the paper's MLP.
ONLY = "linear,relu,bn1d,bn_mlp"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    paths = {"json": out / "r.json", "markdown": out / "r.md", "png": out / "r.png"}
    argv = ["--quick", "--reps", "2", "--only", ONLY]
    for flag, path in paths.items():
        argv += [f"--{flag}", str(path)]
    status = main(argv)
    return status, paths


def test_bench_runs_and_writes_json(results):
    status, paths = results
    assert status == 0
    data = json.loads(paths["json"].read_text())
    for key in ("machine", "limits", "workloads", "threads", "implementations"):
        assert key in data
    assert data["limits"]["sgemm_gflops"] > 0
    assert data["limits"]["copy_gbs"] > 0
    assert data["machine"]["cores"] >= 1
    names = [w["name"] for w in data["workloads"]]
    assert any(n.startswith("linear") and n.endswith("fwd") for n in names)
    assert any(n.startswith("bn_mlp train step") for n in names)


def test_every_implementation_is_checked_or_explained(results):
    _, paths = results
    data = json.loads(paths["json"].read_text())
    for work in data["workloads"]:
        assert "error" not in work, work
        for impl in data["implementations"]:
            r = work["impl"][impl]
            # Either it agreed with another implementation and was timed, or it says why not.
            if r["status"] == "ok":
                assert r["median_s"] > 0 and r["q1_s"] <= r["median_s"] <= r["q3_s"]
                assert r["max_rel_error"] <= 2e-2
            else:
                assert r["status"].startswith("n/a"), r
        # The NumPy baseline always exists; it must agree with the others.
        assert work["impl"]["numpy"]["status"] == "ok"


def test_rates_and_ratios(results):
    _, paths = results
    data = json.loads(paths["json"].read_text())
    relu = next(w for w in data["workloads"] if w["name"].startswith("relu"))
    assert relu["bound"] == "memory" and relu["bytes"] > 0
    assert relu["impl"]["numpy"]["gbs"] > 0
    linear = next(w for w in data["workloads"] if w["name"].startswith("linear"))
    assert linear["bound"] == "compute" and linear["impl"]["numpy"]["gflops"] > 0
    timed = linear["impl"]
    if "median_s" in timed["tinynet"]:
        ratio = timed["numpy"]["median_s"] / timed["tinynet"]["median_s"]
        assert linear["speedup_vs_numpy"] == pytest.approx(ratio)


def test_markdown_and_png(results):
    _, paths = results
    text = paths["markdown"].read_text()
    assert "| workload |" in text and "bn_mlp train step" in text
    pytest.importorskip("matplotlib")
    data = json.loads(paths["json"].read_text())
    if any(w.get("speedup_vs_numpy") for w in data["workloads"]):
        assert paths["png"].stat().st_size > 0


def test_table_lists_every_workload(results):
    _, paths = results
    data = json.loads(paths["json"].read_text())
    table = report.format_table(data)
    for work in data["workloads"]:
        assert work["name"] in table


def test_validate_flags_the_odd_one_out():
    good = {"out": np.arange(6.0)}
    bad = {"out": np.arange(6.0) + 1.0}
    verdict = validate({"tinynet": bad, "numpy": good, "torch": dict(good)}, 1e-3)
    assert verdict["tinynet"]["status"] == "MISMATCH"
    assert verdict["numpy"]["status"] == verdict["torch"]["status"] == "ok"
    assert validate({"numpy": good}, 1e-3)["numpy"]["status"] == "unchecked"


def test_interleaved_timing_reports_errors_and_spread():
    def broken():
        raise RuntimeError("boom")

    out = time_interleaved(
        {"a": lambda: sum(range(100)), "b": broken}, reps=3, warmup=0, min_sample_s=1e-4
    )
    assert "boom" in out["b"]["error"]
    assert out["a"]["samples"] == 3 and out["a"]["min_s"] <= out["a"]["median_s"]
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["median_s"] == 3.0 and stats["max_s"] == 100.0


class _FakeClock:
    """A clock that only the timed function moves, so the test does not depend on the machine:
    the first ``slow_calls`` calls take 20 ms, later ones 0.1 ms."""

    def __init__(self, slow_calls):
        self.now, self.calls, self.slow_calls = 0.0, 0, slow_calls

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def fn(self):
        self.calls += 1
        self.now += 0.02 if self.calls <= self.slow_calls else 1e-4


def test_calibration_is_not_fooled_by_a_slow_start(monkeypatch):
    from tinynet.benchmark import timing

    # A count fixed by the slow first call would be 1; the fast rate needs 100+ calls to fill
    # a 10 ms sample (at most 131, as calibration aims 30% past the target).
    clock = _FakeClock(slow_calls=1)
    monkeypatch.setattr(timing, "time", clock)
    assert 100 <= calibrate(clock.fn, min_sample_s=0.01) <= 131
    assert calibrate(lambda: None, min_sample_s=1.0, max_number=50) == 50
    # A slow spell through the whole calibration: the samples themselves notice and retake.
    clock = _FakeClock(slow_calls=3)
    monkeypatch.setattr(timing, "time", clock)
    out = time_interleaved({"a": clock.fn}, reps=3, warmup=0, min_sample_s=0.01)
    assert out["a"]["number"] >= 100 and out["a"]["median_s"] == pytest.approx(1e-4)


def test_only_matching_nothing_is_an_error(capsys):
    assert main(["--quick", "--only", "no-such-workload", "--no-torch", "--reps", "1"]) == 2


@pytest.mark.parametrize(
    "layer_spec, x_shape",
    [
        ({"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": (3, 2),
          "stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 1, "bias": True},
         (2, 3, 7, 6)),
        ({"type": "Conv3d", "in_channels": 2, "out_channels": 3, "kernel_size": (3, 3, 3),
          "stride": (1, 1, 1), "padding": (1, 1, 1), "dilation": (1, 1, 1), "groups": 1,
          "bias": False}, (2, 2, 4, 5, 3)),
        ({"type": "MaxPool2d", "kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)},
         (2, 3, 7, 7)),
        ({"type": "AvgPool3d", "kernel_size": (2, 2, 2), "stride": (2, 2, 2),
          "padding": (0, 0, 0)}, (2, 3, 4, 4, 4)),
        ({"type": "BatchNorm2d", "num_features": 3, "eps": 1e-5, "momentum": 0.1}, (4, 3, 5, 5)),
    ],
)  # fmt: skip
def test_numpy_baseline_matches_torch(layer_spec, x_shape):
    """The NumPy baseline is what tinynet is measured against: it must be right."""
    torch = pytest.importorskip("torch")
    from tinynet.benchmark import spec
    from tinynet.benchmark.runner import max_rel_error
    from tinynet.benchmark.torch_impl import TorchLayer
    from tinynet.benchmark.workloads import NumpyLayer

    rng = np.random.default_rng(0)
    s = spec._init([dict(layer_spec)], rng)[0]
    x = rng.standard_normal(x_shape).astype(np.float32)
    y = NumpyLayer(s, x, None).check_forward()["out"]
    g = rng.standard_normal(y.shape).astype(np.float32)
    ours, theirs = NumpyLayer(s, x, g), TorchLayer(s, x, g, torch)
    assert max_rel_error(ours.check_forward(), theirs.check_forward())[0] < 1e-5
    assert max_rel_error(ours.check_backward(), theirs.check_backward())[0] < 1e-5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "("], "is not a regular expression"),
        (["--reps", "0"], "--reps must be at least 1"),
        (["--min-sample", "-1"], "--min-sample must be a positive"),
        (["--json", "/nonexistent/folder/b.json"], "no folder /nonexistent/folder"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--only", "no-such-workload"], "no workload matches"),
        (["--survey", "0"], "--survey needs a count of at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_survey_times_random_convolutions_against_torch(tmp_path, capsys):
    """``tinynet bench --survey``: random configurations (the same for the same seed), both
    frameworks' outputs agree, every row timed, the table sorted worst first."""
    pytest.importorskip("torch")
    from tinynet.benchmark.survey import _draw

    draws = [[_draw(np.random.default_rng(3)) for _ in range(5)] for _ in range(2)]
    assert draws[0] == draws[1]
    path = tmp_path / "survey.json"
    assert main(["--survey", "3", "--seed", "3", "--quick", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == 3
    for row in rows:
        assert row["difference"] < 1e-4, row
        assert row["algorithm"]  # the path tinynet took is named
        for key in ("forward_ratio", "train_ratio"):
            assert np.isfinite(row[key]) and row[key] > 0
    table = capsys.readouterr().out
    worst = max(rows, key=lambda r: max(r["forward_ratio"], r["train_ratio"]))
    assert table.splitlines()[2].startswith(worst["config"])
    assert "3 configurations" in table
