"""The examples run: each one's ``main(argv)`` in its tiny ``--quick`` configuration.

They are scripts, not a package, so they are imported from their files. The 2-D examples use
MNIST when the files are found (``$TINYNET_DATA``, or the shared data folder beside the
checkout, as CI arranges) and otherwise fall back to generated images, which is tested too.
The numbers checked are the ones a broken example gets wrong: accuracies that are fractions,
percentiles in order, a folded model that predicts what the original predicts.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _mnist_root() -> str | None:
    candidates = [os.environ.get("TINYNET_DATA"), EXAMPLES.parent.parent / "shared" / "data"]
    for root in candidates:
        if root and (Path(root) / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
            return str(root)
    return None


MNIST_ROOT = _mnist_root()
needs_mnist = pytest.mark.skipif(MNIST_ROOT is None, reason="MNIST files not found")


def load(name: str):
    """Import examples/<name>.py as a module (its helpers come from examples/_common.py)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, tmp_path, *extra: str, data: bool = True) -> dict:
    """``main(["--quick", ...])`` of one example, with its plot written under ``tmp_path``."""
    argv = ["--quick", "--threads", "2", "--out", str(tmp_path / f"{name}.png"), *extra]
    if data:
        # An empty folder makes the 2-D examples fall back to generated images.
        argv += ["--data-root", MNIST_ROOT or str(tmp_path / "no-data")]
    result = load(name).main(argv)
    assert isinstance(result, dict)
    return result


def assert_plot(result: dict, tmp_path, name: str) -> None:
    """The PNG exists when matplotlib is installed; without it the example says None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result["plot"] is None
    else:
        assert result["plot"] == str(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def is_fraction(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_mnist_cnn(tmp_path, capsys):
    result = run("mnist_cnn", tmp_path)
    assert result["data"] == ("MNIST" if MNIST_ROOT else "shapes2d")
    assert len(result["epoch_accuracy"]) == 1
    assert is_fraction(result["accuracy"]) and is_fraction(result["folded_accuracy"])
    # Folding is exact up to rounding: the same predictions, logits equal to float32 precision.
    assert result["max_relative_difference"] < 1e-3
    assert abs(result["folded_accuracy"] - result["accuracy"]) <= 0.004
    assert result["speedup"] > 0
    assert "faster" in capsys.readouterr().out
    assert_plot(result, tmp_path, "mnist_cnn")


def test_bn_paper_mnist(tmp_path):
    result = run("bn_paper_mnist", tmp_path)
    assert set(result["runs"]) == {"without BN", "with BN"}
    for record in result["runs"].values():
        assert record["step"][0] == 0 and record["step"][-1] == 300
        assert all(is_fraction(a) for a in record["accuracy"])
        percentiles = np.array(record["percentiles"])
        assert percentiles.shape == (len(record["step"]), 3)
        assert np.all(np.diff(percentiles, axis=1) >= 0), "15th <= 50th <= 85th percentile"
    # Both nets start from the same weights, so the same untrained accuracy.
    first = [r["accuracy"][0] for r in result["runs"].values()]
    assert first[0] == first[1]
    for summary in result["summary"].values():
        assert summary["median_drift"] >= 0 and summary["mean_spread"] > 0
    assert_plot(result, tmp_path, "bn_paper_mnist")


def test_examples_fall_back_to_generated_data(tmp_path, capsys):
    result = run("bn_paper_mnist", tmp_path, "--data-root", str(tmp_path / "empty"), data=False)
    assert result["data"] == "shapes2d"
    out = capsys.readouterr().out
    assert "MNIST not found" in out and "shapes2d" in out


@needs_mnist
def test_mnist_is_used_when_present(tmp_path):
    result = run("bn_paper_mnist", tmp_path, "--out", "none")
    assert result["data"] == "MNIST"
    assert result["plot"] is None


def test_bn_learning_rate(tmp_path):
    result = run("bn_learning_rate", tmp_path, "--multipliers", "1", "1000")
    names = [r["name"] for r in result["runs"]]
    assert names == ["plain-x1", "BN-x1", "plain-x1000", "BN-x1000"]
    for r in result["runs"]:
        assert is_fraction(r["accuracy"])
        assert math.isclose(r["lr"], 0.01 * r["multiplier"])
        if r["diverged"]:
            # A diverged run stops at the step where the loss blew up.
            assert len(r["losses"]) <= 20
            assert not math.isfinite(r["losses"][-1]) or r["losses"][-1] > 1e3
        else:
            assert len(r["losses"]) == 20
    # A learning rate of 10 with momentum 0.9 blows up the network without BatchNorm.
    assert result["runs"][2]["diverged"]
    assert_plot(result, tmp_path, "bn_learning_rate")


def test_population_stats(tmp_path):
    result = run("population_stats", tmp_path)
    assert [r["config"] for r in result["results"]] == ["5x8", "10x32"]
    for r in result["results"]:
        for key in ("running", "exact", "batch_stats"):
            assert is_fraction(r[key])
        assert r["stat_gap"] >= 0
    # After 5 steps with momentum 0.1 the running estimates are still mostly their initial
    # (0, 1): far from the population statistics of the trained weights.
    assert result["results"][0]["stat_gap"] > 0.1
    assert_plot(result, tmp_path, "population_stats")


def test_voxels_cnn3d(tmp_path):
    result = run("voxels_cnn3d", tmp_path, data=False)
    assert set(result["runs"]) == {"with BN", "without BN"}
    for record in result["runs"].values():
        assert is_fraction(record["accuracy"])
    bn = result["runs"]["with BN"]
    assert bn["folded_agreement"] >= 0.99
    confusion = result["confusion"]
    assert confusion.shape == (5, 5) and confusion.sum() == 128
    assert_plot(result, tmp_path, "voxels_cnn3d")
