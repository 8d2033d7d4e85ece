"""The ``tinynet`` command, run in-process through ``main([...])`` with tiny settings."""

from __future__ import annotations

import re
import sys
import types
import urllib.error

import numpy as np
import pytest

import tinynet
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
    assert main(["train", "--epochs", "1", *TINY, "--checkpoint", path]) == 0
    folded = tmp_path / "folded.npz"
    code, out, _ = _run(capsys, ["fold", "--checkpoint", path, "--out", folded])
    assert code == 0
    assert "speed-up" in out and "largest output difference" in out
    difference = float(re.search(r"largest output difference (\S+);", out).group(1))
    assert difference < 1e-3
    checkpoint = load_checkpoint(folded)
    assert not any("BatchNorm" in type(m).__name__ for m in checkpoint.model.modules())
    code, out, _ = _run(capsys, ["eval", "--checkpoint", folded])
    assert code == 0 and "test accuracy" in out


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
    ],
)
def test_user_mistakes_are_one_line_and_status_2(tmp_path, capsys, argv, message):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code, _, err = _run(capsys, argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err


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
