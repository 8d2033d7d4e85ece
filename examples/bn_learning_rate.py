"""BatchNorm allows much higher learning rates: a CNN at 1x, 5x and 30x a base rate, with and
without BatchNorm (the paper's BN-x5 and BN-x30).

Ioffe & Szegedy (2015), section 4.2.2, trained Inception with BatchNorm at 5 and 30 times the
original learning rate ("BN-x5", "BN-x30"); without BatchNorm such rates make training diverge.
The reason (section 3.3): with BatchNorm a layer's output does not change when its weights are
scaled, BN(aWu) = BN(Wu), and the gradient shrinks as the weights grow,
∂BN(aWu)/∂(aW) = (1/a)·∂BN(Wu)/∂W, so a large step cannot blow the activations up.

This script trains ``tinynet.models.lenet`` and ``lenet_bn`` (the same CNN with and without
BatchNorm, from the same seed) with SGD + momentum at each multiple of ``--base-lr`` for the same
number of steps, then prints test accuracy; a run whose loss becomes NaN or huge is stopped and
flagged "diverged". Plots the training loss of every run.

    python examples/bn_learning_rate.py                 # 800 steps per run, 6 runs
    python examples/bn_learning_rate.py --multipliers 1 5 30 100

Without the MNIST files it falls back, saying so, to tinynet's generated shapes2d images.
"""

from __future__ import annotations

import numpy as np
from _common import (
    accuracy,
    default_out,
    image_data,
    make_parser,
    print_table,
    save_plot,
    setup,
    train,
)

import tinynet
from tinynet import optim


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n")[0], steps=800, out=default_out("bn_learning_rate"))
    parser.add_argument("--base-lr", type=float, default=0.01, help="the 1x learning rate")
    parser.add_argument("--multipliers", type=float, nargs="+", default=[1, 5, 30])
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 20)
    setup(args)

    x_train, y_train, x_test, y_test, data_name = image_data(args)
    if args.quick:
        x_train, y_train, x_test, y_test = (
            x_train[:2000],
            y_train[:2000],
            x_test[:500],
            y_test[:500],
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    print(
        f"{data_name}: {len(x_train)} training, {len(x_test)} test images; {args.steps} steps "
        f"of {args.batch_size}, SGD momentum {args.momentum}, base lr {args.base_lr}"
    )

    runs = []
    for multiplier in args.multipliers:
        for bn in (False, True):
            name = ("BN" if bn else "plain") + f"-x{multiplier:g}"
            # The same seed for every run: the same initial weights for a given architecture
            # and the same sequence of mini-batches for all.
            tinynet.manual_seed(args.seed)
            model = (tinynet.models.lenet_bn if bn else tinynet.models.lenet)(num_classes)
            loader = tinynet.data.DataLoader(
                (x_train, y_train), batch_size=args.batch_size, shuffle=True, seed=args.seed
            )
            lr = args.base_lr * multiplier
            optimizer = optim.SGD(model.parameters(), lr=lr, momentum=args.momentum)
            result = train(model, loader, optimizer, steps=args.steps)
            test_accuracy = accuracy(model, x_test, y_test)
            runs.append(
                {
                    "name": name,
                    "bn": bn,
                    "multiplier": multiplier,
                    "lr": lr,
                    "accuracy": test_accuracy,
                    "diverged": result["diverged"],
                    "losses": result["losses"],
                    "final_loss": float(np.mean(result["losses"][-20:])),
                    "seconds": result["seconds"],
                }
            )
            state = f"DIVERGED at step {len(result['losses'])}" if result["diverged"] else "ok"
            print(f"{name:>10}: lr {lr:g}, test accuracy {test_accuracy:.4f}, {state}")

    print()
    rows = []
    for multiplier in args.multipliers:
        row = [f"x{multiplier:g}", f"{args.base_lr * multiplier:g}"]
        for bn in (False, True):
            run = next(r for r in runs if r["multiplier"] == multiplier and r["bn"] == bn)
            row.append(f"{run['accuracy']:.4f}" + (" (diverged)" if run["diverged"] else ""))
        rows.append(row)
    print_table(["multiplier", "lr", "without BN", "with BN"], rows)

    def draw(plt):
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, multiplier in enumerate(args.multipliers):
            for run in (r for r in runs if r["multiplier"] == multiplier):
                losses = np.asarray(run["losses"], dtype=float)
                window = max(1, min(len(losses), args.steps // 40))
                smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
                left.plot(
                    np.arange(len(smooth)) + window,
                    smooth,
                    color=colors[index % len(colors)],
                    linestyle="-" if run["bn"] else "--",
                    label=run["name"] + (" (diverged)" if run["diverged"] else ""),
                )
        left.set(title="training loss (moving average)", xlabel="step", yscale="log")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        positions = np.arange(len(args.multipliers))
        for offset, bn in ((-0.2, False), (0.2, True)):
            values = [
                next(r for r in runs if r["multiplier"] == m and r["bn"] == bn)["accuracy"]
                for m in args.multipliers
            ]
            right.bar(
                positions + offset, values, width=0.4, label="with BN" if bn else "without BN"
            )
        right.set_xticks(positions, [f"x{m:g}" for m in args.multipliers])
        right.set(title=f"test accuracy after {args.steps} steps", ylim=(0, 1),
                  xlabel=f"learning rate (x {args.base_lr:g})")  # fmt: skip
        right.legend()
        right.grid(alpha=0.3, axis="y")
        figure.suptitle(f"BatchNorm and the learning rate, {data_name} (tinynet)")
        return figure

    plot = save_plot(draw, args.out)
    return {"data": data_name, "runs": runs, "plot": plot}


if __name__ == "__main__":
    main()
