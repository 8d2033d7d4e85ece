"""The ``tinynet`` command, run in-process through ``main([...])`` with tiny settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import tinynet
from tinynet import checkpoint as checkpoint_module
from tinynet import cli
from tinynet.checkpoint import load_checkpoint
from tinynet.cli import main
from tinynet.data import mnist as mnist_module
from tinynet.data import shapes2d

TINY = ["--limit", "96", "--batch-size", "32"]


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_eval_and_resume_bit_identically(tmp_path, capsys, monkeypatch):
    straight = tmp_path / "straight.npz"
    code, out, _ = _run(
        capsys, ["train", "--model", "bn_mlp", "--epochs", "2", *TINY, "--checkpoint", straight]
    )
    assert code == 0
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert re.search(r"test accuracy \d+\.\d% \(chance 10%\)", out)

    # Interrupt a second identical run during its second epoch's evaluation (Ctrl-C).
    split = tmp_path / "split.npz"
    evaluations = []

    def interrupt_second(model, arrays):
        evaluations.append(1)
        if len(evaluations) == 2:
            raise KeyboardInterrupt
        return evaluate(model, arrays)

    evaluate = cli._evaluate
    monkeypatch.setattr(cli, "_evaluate", interrupt_second)
    argv = ["train", "--model", "bn_mlp", "--epochs", "2", *TINY, "--checkpoint", split]
    code, _, err = _run(capsys, argv)
    assert code == 130 and "interrupted" in err
    assert load_checkpoint(split).epoch == 1
    monkeypatch.undo()
    # Resuming takes the settings from the checkpoint and finishes the run bit for bit.
    code, out, _ = _run(capsys, ["train", "--resume", "--checkpoint", split])
    assert code == 0 and "resuming after epoch 1" in out and "epoch 1/2" not in out
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert (a.epoch, a.step) == (b.epoch, b.step) == (2, 6)
    for key, value in a.model_state.items():
        assert np.array_equal(value, b.model_state[key]), key
    # Everything else too: momentum buffers, schedule, loader and RNG states, bit for bit.
    with np.load(straight) as one, np.load(split) as two:
        assert one.files == two.files
        for name in one.files:
            assert one[name].dtype == two[name].dtype, name
            assert np.array_equal(one[name], two[name]), name

    # eval reports the accuracy an independent evaluation of the saved model finds.
    code, out, _ = _run(capsys, ["eval", "--checkpoint", straight])
    assert code == 0
    images, labels = shapes2d(2000, seed=1)
    model = a.model.eval()
    predicted = np.concatenate(
        [model(images[i : i + 500].reshape(-1, 784)).argmax(axis=1) for i in range(0, 2000, 500)]
    )
    expected = np.mean(predicted == labels)
    assert f"test accuracy {expected:.2%}" in out


def test_train_default_model_on_shapes(tmp_path, capsys):
    code, out, _ = _run(capsys, ["train", "--epochs", "1", *TINY, "--schedule", "step"])
    assert code == 0
    assert "training lenet_bn on shapes (96 images, 10 classes)" in out
    assert "images/s" in out


@pytest.mark.skipif(not hasattr(tinynet, "fold_bn"), reason="tinynet.fold_bn not available")
def test_fold_reports_and_saves(tmp_path, capsys):
    path = tmp_path / "c.npz"
    argv = ["train", "--model", "bn_mlp", "--epochs", "1", *TINY, "--checkpoint", path]
    assert main(argv) == 0
    folded = tmp_path / "folded.npz"
    code, out, _ = _run(capsys, ["fold", "--checkpoint", path, "--out", folded])
    assert code == 0
    assert "folded 3 BatchNorm layers" in out and re.search(r"speed-up \d+\.\d\dx", out)
    reported = float(re.search(r"largest output difference (\S+);", out).group(1))
    # The same difference, measured independently on the saved models.
    original, result = load_checkpoint(path).model.eval(), load_checkpoint(folded).model
    assert not any("BatchNorm" in type(m).__name__ for m in result.modules())
    x = shapes2d(2000, seed=1)[0][:500].reshape(500, -1)
    difference = np.max(np.abs(original(x).astype(np.float64) - result(x)))
    assert difference < 1e-4 and reported == pytest.approx(difference, rel=0.01, abs=1e-12)
    accuracy = re.search(r"test accuracy (\S+) -> (\S+)", out).groups()
    code, out, _ = _run(capsys, ["eval", "--checkpoint", folded])
    assert code == 0 and f"test accuracy {accuracy[1]}" in out


@pytest.mark.parametrize(
    ("argv", "shape", "mode", "rows"),
    [
        (["--model", "bn_mlp", "--batch-size", "8"], "(8, 784)", "train", 10),
        (["--model", "cnn3d_bn", "--batch-size", "2", "--fold", "--eval"], "(2, 1, 16, 16, 16)",
         "eval", 10),
    ],
)  # fmt: skip
def test_profile_prints_a_row_per_layer(capsys, argv, shape, mode, rows):
    code, out, _ = _run(capsys, ["profile", "--steps", "1", *argv])
    lines = out.strip().splitlines()
    assert code == 0 and f"input {shape} float32, {mode} mode" in lines[0]
    assert len(lines) == 2 + rows + 2 and lines[-1].startswith("step")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "0"], "expected a positive integer, got '0'"),
        (["train", "--lr", "-1"], "expected a finite number >= 0"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--resume"], "--resume needs --checkpoint PATH"),
        (["train", "--model", "cnn3d_bn"], "model cnn3d_bn needs --data shapes3d"),
        (["train", "--data", "shapes3d", "--model", "lenet"], "model lenet needs 2-D images"),
        (["eval"], "the following arguments are required: --checkpoint"),
        (["eval", "--checkpoint", "{tmp}/missing.npz"], "no checkpoint at"),
        (["train", "--resume", "--checkpoint", "{tmp}/missing.npz"], "no checkpoint at"),
        (["eval", "--checkpoint", "{tmp}/junk.npz"], "not a readable tinynet checkpoint"),
        (["train", "--threads", "100000"], "set_num_threads expected 1 <= n"),
        (["train", "--seed", "-1"], "expected an integer >= 0, got '-1'"),
        (["train", "--lr", "nan"], "expected a finite number >= 0"),
        (["train", "--batch-size", "1"], "need at least 2 images per training batch"),
        (["train", "--checkpoint", "{tmp}"], "is a folder; give a file name"),
        (["eval", "--checkpoint", "{tmp}/cut.npz"], "not a readable tinynet checkpoint"),
        (["train", "--resume", "--checkpoint", "{tmp}/cut.npz"], "not a readable tinynet"),
        (["eval", "--checkpoint", "{tmp}/lenet.npz"], "does not say what data"),
        (["eval", "--checkpoint", "{tmp}/lenet.npz", "--data", "shapes3d"], "does not fit"),
        (["eval", "--checkpoint", "{tmp}/trained.npz", "--data", "shapes3d"], "needs 2-D images"),
        (["profile", "--batch-size", "1"], "lenet_bn has BatchNorm layers"),
        (["profile", "--steps", "0"], "expected a positive integer, got '0'"),
    ],
)
def test_user_mistakes_are_one_line_and_status_2(tmp_path, capsys, argv, message):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    # A checkpoint cut short, one without training settings, and one of a 2-D model.
    tinynet.manual_seed(0)
    model = tinynet.models.lenet_bn()
    tinynet.save_checkpoint(tmp_path / "lenet.npz", model)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "lenet.npz").read_bytes()[:5000])
    settings = dict(cli._resolve({}))
    tinynet.save_checkpoint(tmp_path / "trained.npz", model, extra={"settings": settings})
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code, _, err = _run(capsys, argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err


def test_python_dash_m_gives_one_line_without_traceback(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    result = subprocess.run(
        [sys.executable, "-m", "tinynet", "eval", "--checkpoint", str(tmp_path / "junk.npz")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(tinynet.__file__).parents[1])},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "junk.npz" in result.stderr


def test_progress_bar_shows_loss_accuracy_and_speed(capsys):
    argv = ["train", "--model", "bn_mlp", "--epochs", "1", *TINY, "--progress"]
    code, out, err = _run(capsys, argv)
    assert code == 0
    assert "epoch 1/1" in err and "3/3" in err
    assert re.search(r"loss=\d+\.\d{3}, acc=\d+\.\d%, img/s=\d+", err), err
    # Without --progress and without a terminal the bar stays silent.
    code, _, err = _run(capsys, argv[:-1])
    assert code == 0 and err == ""


def test_a_checkpoint_that_cannot_be_written_is_one_line_status_1(tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", disk_full)
    argv = ["train", "--model", "bn_mlp", "--epochs", "1", *TINY, "--checkpoint", tmp_path / "c"]
    code, _, err = _run(capsys, argv)
    assert code == 1 and err.count("\n") == 1
    assert "cannot write the checkpoint" in err and "No space left on device" in err


def test_a_last_batch_of_one_is_left_out_for_batchnorm(capsys):
    # 97 = 3 · 32 + 1: BatchNorm cannot normalise a batch of one image.
    code, out, _ = _run(capsys, ["train", "--model", "bn_mlp", "--epochs", "1", "--limit", "97",
                                 "--batch-size", "32"])  # fmt: skip
    assert code == 0 and "(97 images" in out


def test_resume_refuses_changed_settings(tmp_path, capsys):
    path = tmp_path / "c.npz"
    assert main(["train", "--model", "bn_mlp", "--epochs", "1", *TINY, "--checkpoint", path]) == 0
    capsys.readouterr()
    code, _, err = _run(capsys, ["train", "--resume", "--checkpoint", path, "--lr", "0.5"])
    assert code == 2 and "--lr 0.5 differs from its 0.05" in err
    code, _, err = _run(capsys, ["train", "--resume", "--checkpoint", path, "--epochs", "3"])
    assert code == 2 and "cosine schedule of" in err and "planned for 1 epochs" in err


def test_missing_data_is_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(mnist_module, "urlopen", offline)
    monkeypatch.setenv("TINYNET_DATA", str(tmp_path))
    code, _, err = _run(capsys, ["train", "--data", "fashion-mnist", "--epochs", "1"])
    assert code == 2 and err.count("\n") == 1
    assert "could not download" in err and str(tmp_path / "fashion-mnist") in err


def test_help_and_no_command(capsys):
    code, out, _ = _run(capsys, ["train", "--help"])
    assert code == 0 and "--checkpoint PATH" in out
    code, out, _ = _run(capsys, [])
    assert code == 2 and "train" in out and "bench" in out


def test_bench_passes_its_arguments_through(monkeypatch):
    calls = []
    fake = types.ModuleType("tinynet.benchmark")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "tinynet.benchmark", fake)
    monkeypatch.setattr(tinynet, "benchmark", fake, raising=False)
    assert main(["bench", "--quick", "--model", "lenet_bn"]) == 3
    assert calls == [["--quick", "--model", "lenet_bn"]]


def test_fold_with_fuse_relu_saves_a_model_that_loads_and_agrees(tmp_path, capsys):
    path, fused = tmp_path / "c.npz", tmp_path / "fused.npz"
    assert main(["train", "--epochs", "1", *TINY, "--checkpoint", path]) == 0  # lenet_bn
    code, out, _ = _run(capsys, ["fold", "--checkpoint", path, "--fuse-relu", "--out", fused])
    assert code == 0 and "folded 3 BatchNorm layers and fused 3 ReLUs" in out
    original, result = load_checkpoint(path).model.eval(), load_checkpoint(fused).model.eval()
    assert sum(isinstance(m, tinynet.nn.FusedReLU) for m in result.modules()) == 3
    x = shapes2d(64, seed=1)[0].reshape(64, 1, 28, 28)
    assert np.max(np.abs(original(x).astype(np.float64) - result(x))) < 1e-4
