"""Running (momentum) estimates versus exact population statistics (the paper's Algorithm 2).

At inference a BatchNorm normalises with population statistics instead of the batch's. Ioffe &
Szegedy's Algorithm 2 computes them once training is over, with the weights frozen, as averages
over training mini-batches: E[x] = E_B[μ_B], Var[x] = m/(m−1)·E_B[σ²_B]. Frameworks instead
keep a running average updated at every training step,
``running = (1 − momentum)·running + momentum·batch``: cheap, but it mixes statistics of
*earlier* weights (those of the last ~1/momentum steps) and so lags behind the network it is
used with. The lag matters when the weights still move fast: early in training, at a high
learning rate, with small noisy batches.

This script trains ``lenet_bn`` in a few configurations and evaluates each on the test set three
ways: with the running estimates, with exact statistics from ``tinynet.recalibrate_bn`` (over
the whole training set, weights unchanged), and, for reference, in training mode (statistics of
each test batch).

    python examples/population_stats.py
    python examples/population_stats.py --configs 50x8 200x8 1000x64   # steps x batch size

Without the MNIST files it falls back, saying so, to tinynet's generated shapes2d images.
"""

from __future__ import annotations

import numpy as np
from _common import (
    accuracy,
    default_out,
    image_data,
    make_parser,
    predict,
    print_table,
    save_plot,
    setup,
    train,
)

import tinynet
from tinynet import nn, optim

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def parse_config(text: str) -> tuple[int, int]:
    steps, batch = text.lower().split("x")
    return int(steps), int(batch)


def batch_statistics_accuracy(model, x, y, batch_size: int = 500) -> float:
    """Accuracy with each test batch normalised by its own statistics (training-mode BN).

    Dropout is switched off (only the BatchNorms run in training mode), and the running
    estimates are restored afterwards, since a training-mode forward updates them.
    """
    norms = [m for m in model.modules() if isinstance(m, BATCHNORMS)]
    saved = model.state_dict()
    model.eval()
    for bn in norms:
        bn.train()
    try:
        scores = predict(model, x, batch_size)
    finally:
        model.load_state_dict(saved)
        model.eval()
    return float((scores.argmax(axis=1) == y).mean())


def bn_gap(model, reference) -> float:
    """Largest relative difference between two models' BatchNorm running means and variances."""
    gaps = []
    for (name, value), (_, exact) in zip(model.named_buffers(), reference.named_buffers()):
        if name.endswith(("running_mean", "running_var")):
            scale = np.maximum(np.abs(exact), 1e-3)
            gaps.append(float(np.max(np.abs(value - exact) / scale)))
    return max(gaps)


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n")[0], out=default_out("population_stats"))
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["30x8", "100x8", "300x8", "100x64", "1000x64"],
        help="training runs as STEPSxBATCH",
    )
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.1, help="BatchNorm momentum")
    args = parser.parse_args(argv)
    if args.quick:
        args.configs = ["5x8", "10x32"]
    setup(args)

    x_train, y_train, x_test, y_test, data_name = image_data(args)
    if args.quick:
        x_train, y_train, x_test, y_test = (
            x_train[:1000],
            y_train[:1000],
            x_test[:500],
            y_test[:500],
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    print(
        f"{data_name}: {len(x_train)} training, {len(x_test)} test images; lenet_bn, SGD lr "
        f"{args.lr} momentum 0.9, BatchNorm momentum {args.momentum}"
    )

    results = []
    for config in args.configs:
        steps, batch_size = parse_config(config)
        tinynet.manual_seed(args.seed)
        model = tinynet.models.lenet_bn(num_classes)
        for layer in model.modules():
            if isinstance(layer, BATCHNORMS):
                layer.momentum = args.momentum
        loader = tinynet.data.DataLoader(
            (x_train, y_train), batch_size=batch_size, shuffle=True, seed=args.seed
        )
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        train(model, loader, optimizer, steps=steps)

        running = accuracy(model, x_test, y_test)
        batch_stats = batch_statistics_accuracy(model, x_test, y_test)
        # Algorithm 2 on a copy: every training image once, weights frozen.
        exact_model = tinynet.models.lenet_bn(num_classes)
        exact_model.load_state_dict(model.state_dict())
        population = tinynet.data.DataLoader((x_train, y_train), batch_size=500)
        tinynet.recalibrate_bn(exact_model, population)
        exact = accuracy(exact_model, x_test, y_test)
        gap = bn_gap(model, exact_model)
        results.append(
            {
                "config": config,
                "steps": steps,
                "batch_size": batch_size,
                "running": running,
                "exact": exact,
                "batch_stats": batch_stats,
                "stat_gap": gap,
            }
        )
        print(
            f"{steps:>5} steps of {batch_size:>3}: running {running:.4f}, exact {exact:.4f}, "
            f"batch statistics {batch_stats:.4f}; running vs exact statistics differ by up "
            f"to {gap:.0%}"
        )

    print()
    print_table(
        ["steps", "batch", "running estimates", "exact (Alg. 2)", "test-batch stats", "stat gap"],
        [
            [
                r["steps"],
                r["batch_size"],
                r["running"],
                r["exact"],
                r["batch_stats"],
                f"{r['stat_gap']:.0%}",
            ]  # fmt: skip
            for r in results
        ],
    )

    def draw(plt):
        figure, ax = plt.subplots(figsize=(8, 4))
        positions = np.arange(len(results))
        for offset, key, label in (
            (-0.27, "running", "running estimates (momentum)"),
            (0.0, "exact", "exact population statistics (Algorithm 2)"),
            (0.27, "batch_stats", "statistics of each test batch"),
        ):
            ax.bar(positions + offset, [r[key] for r in results], width=0.27, label=label)
        ax.set_xticks(positions, [f"{r['steps']} steps\nbatch {r['batch_size']}" for r in results])
        ax.set(ylabel="test accuracy", ylim=(0, 1), title=f"BatchNorm at inference, {data_name}")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3, axis="y")
        return figure

    plot = save_plot(draw, args.out)
    return {"data": data_name, "results": results, "plot": plot}


if __name__ == "__main__":
    main()
