"""What every example shares: options, data, a training loop, evaluation and plotting.

Each example is a script (``python examples/mnist_cnn.py --help``) whose ``main(argv)`` parses
its options, runs, prints what it found and returns the numbers as a dict (the tests call
``main(["--quick"])``). Kept deliberately plain: the point of the examples is the experiment,
and this file is the boilerplate they would otherwise repeat.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    import tinynet
except ImportError:  # running from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import tinynet

from tinynet import nn

REPO = Path(__file__).resolve().parent.parent

# -- options --------------------------------------------------------------------------------------


def make_parser(description: str, *, steps: int | None = None, epochs: int | None = None,
                out: str | None = None, threads: int = 2) -> argparse.ArgumentParser:  # fmt: skip
    """The options every example has; pass the example's defaults.

    ``--steps`` (optimizer steps) or ``--epochs`` (passes over the training set) appear when the
    example gives a default for them. ``--quick`` asks for a tiny configuration (seconds), used
    by the tests; each example says what it shrinks.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    if epochs is not None:
        parser.add_argument("--epochs", type=int, default=epochs, help="passes over the data")
    parser.add_argument("--threads", type=int, default=threads, help="Numba and BLAS threads")
    parser.add_argument("--seed", type=int, default=0, help="seed for tinynet.manual_seed")
    parser.add_argument(
        "--data-root",
        default=None,
        help="folder holding mnist/ with the IDX .gz files (default: $TINYNET_DATA, then "
        "~/.cache/tinynet); without the files the example uses generated data instead",
    )
    parser.add_argument(
        "--out",
        default=out,
        help="where to save the PNG plot (needs matplotlib); 'none' to skip it",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny configuration (seconds)")
    return parser


def setup(args) -> None:
    """Threads and seed, before any model is built; prints the configuration."""
    import numba

    # Numba cannot start more threads than it found cores for; ask for at most that.
    threads = max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS))
    tinynet.set_num_threads(threads)
    tinynet.manual_seed(args.seed)
    print(f"tinynet {tinynet.__version__}: {threads} thread(s), seed {args.seed}")


# -- data -----------------------------------------------------------------------------------------


def load_mnist(data_root=None):
    """MNIST as ``(train, test)`` ``ImageDataset`` pairs, or None (with a message) if absent.

    Never downloads: the examples must run offline, so a missing file means "use the generated
    data instead", said clearly, rather than a network timeout.
    """
    from tinynet.data import mnist

    try:
        train = mnist.MNIST(data_root, train=True, download=False)
        test = mnist.MNIST(data_root, train=False, download=False)
    except FileNotFoundError as exc:
        print(f"MNIST not found ({exc}).")
        return None
    return train, test


def image_data(args, *, n_train_shapes: int = 12000, n_test_shapes: int = 2000):
    """Training and test images for the 2-D examples: MNIST when present, else ``shapes2d``.

    Returns ``(x_train, y_train, x_test, y_test, name)``; images are uint8 for MNIST (the
    DataLoader scales each batch to [0, 1]) and float32 for the generated set.
    """
    found = load_mnist(args.data_root)
    if found is not None:
        train, test = found
        return train.images, train.labels, test.images, test.labels, "MNIST"
    print(
        "Falling back to tinynet's generated shapes2d images (10 classes, 28x28); the "
        "numbers will not be comparable with MNIST's."
    )
    if getattr(args, "quick", False):
        n_train_shapes, n_test_shapes = 2000, 500
    x_train, y_train = tinynet.data.shapes2d(n_train_shapes, seed=1)
    x_test, y_test = tinynet.data.shapes2d(n_test_shapes, seed=2)
    return x_train, y_train, x_test, y_test, "shapes2d"


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 images → float32 in [0, 1] (as the DataLoader does per batch); floats unchanged."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    return images


# -- training and evaluation ----------------------------------------------------------------------


def train_step(model, loss_fn, optimizer, x, y) -> float:
    """One optimizer step on one mini-batch; returns the loss."""
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward(), input_grad=False)  # no gradient for the data
    optimizer.step()
    return loss


def batches_forever(loader):
    """The loader's batches, epoch after epoch (each epoch reshuffled)."""
    while True:
        yield from loader


def train(model, loader, optimizer, *, steps: int, scheduler=None, every: int = 0,
          on_checkpoint=None, diverge_at: float = 1e3) -> dict:  # fmt: skip
    """Train ``model`` for ``steps`` steps; returns ``{"losses", "seconds", "diverged"}``.

    ``scheduler.step()`` runs after every optimizer step (schedules here are per step).
    ``on_checkpoint(step)`` is called before the first step and every ``every`` steps after it
    (and after the last), with the model in training mode again afterwards. Training stops
    early, flagged ``diverged``, when the loss stops being finite or exceeds ``diverge_at``.
    """
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    diverged = False
    seconds = 0.0
    model.train()
    if on_checkpoint is not None and every:
        on_checkpoint(0)
        model.train()
    batches = batches_forever(loader)
    for step in range(1, steps + 1):
        x, y = next(batches)
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            loss = train_step(model, loss_fn, optimizer, x, y)
        if scheduler is not None:
            scheduler.step()
        seconds += time.perf_counter() - start
        losses.append(loss)
        if not math.isfinite(loss) or loss > diverge_at:
            diverged = True
            break
        if on_checkpoint is not None and every and (step % every == 0 or step == steps):
            on_checkpoint(step)
            model.train()
    return {"losses": losses, "seconds": seconds, "diverged": diverged}


def predict(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class scores for every row of ``x``, in batches (the model's mode is left as it is)."""
    outputs = []
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, len(x), batch_size):
            outputs.append(model(as_float(x[start : start + batch_size])))
    return np.concatenate(outputs)


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Test accuracy in eval mode (population statistics); restores the previous mode."""
    was_training = model.training
    model.eval()
    try:
        scores = predict(model, x, batch_size)
    finally:
        model.train(was_training)
    # A diverged model's NaN scores count as wrong answers, not as class 0.
    correct = (scores.argmax(axis=1) == y) & np.isfinite(scores).all(axis=1)
    return float(correct.mean())


def timed(fn, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# -- reporting ------------------------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def save_plot(draw, out) -> str | None:
    """Call ``draw(plt)`` to make a figure and save it to ``out`` as PNG.

    Returns the path written, or None when ``out`` is None/'none' or matplotlib is not
    installed (then a one-line note says so and the example carries on).
    """
    if out is None or str(out).lower() == "none":
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib).")
        return None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = draw(plt)
    figure.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(f"plot saved to {out}")
    return str(out)


def default_out(name: str) -> str:
    """docs/img/<name>.png in the checkout, where docs/results.md links the plots."""
    return str(REPO / "docs" / "img" / f"{name}.png")


def machine() -> str:
    """One line about where the numbers were measured."""
    import platform

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"{tinynet.get_num_threads()} thread(s) used, Python {platform.python_version()}, "
        f"NumPy {np.__version__}"
    )
