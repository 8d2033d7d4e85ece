"""The BatchNorm paper's Figure 1, on MNIST: a sigmoid MLP trained with and without BatchNorm.

Ioffe & Szegedy (2015), section 4.1: a fully connected network with three hidden layers of 100
sigmoid units, weights initialised to small random Gaussian values, trained with plain SGD on
mini-batches of 60 examples. The second network is the same with a BatchNorm before each sigmoid
(and no bias in the linear layer before it: BN's β takes that role). Both start from the same
weights and use the same learning rate. The paper reports two things, which this script
measures and plots:

(a) test accuracy against training step: the BN network learns faster and reaches higher
    accuracy;
(b, c) the distribution of the input to one sigmoid of the last hidden layer over the test set,
    as its 15th, 50th and 85th percentiles, during training: without BN it drifts (its mean and
    spread change, "internal covariate shift"), with BN it stays much steadier.

    python examples/bn_paper_mnist.py                  # 50,000 steps, as in the paper
    python examples/bn_paper_mnist.py --steps 5000     # a faster look

Without the MNIST files it falls back, saying so, to tinynet's generated shapes2d images.
"""

from __future__ import annotations

import numpy as np
from _common import (
    default_out,
    image_data,
    make_parser,
    print_table,
    save_plot,
    setup,
    train,
)

import tinynet
from tinynet import nn

PERCENTILES = (15, 50, 85)


def build(bn: bool, weights: list[np.ndarray]) -> nn.Sequential:
    """The paper's 784-100-100-100-10 sigmoid MLP with the given weights and zero biases."""
    model = tinynet.models.bn_mlp(bn=bn)
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    for layer, weight in zip(linears, weights):
        layer.weight.data[...] = weight
        if layer.bias is not None:
            layer.bias.data[...] = 0
    return model


def sigmoid_input(model: nn.Sequential, x: np.ndarray, unit: int) -> np.ndarray:
    """The input to sigmoid ``unit`` of the last hidden layer, for every row of ``x``.

    That is the output of whatever sits before the last Sigmoid: the Linear layer without BN,
    the BatchNorm (with its population statistics, the model being in eval mode) with BN.
    """
    layers = list(model)
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Sigmoid))
    h = x
    for layer in layers[:last]:
        h = layer(h)
    return h[:, unit]


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n")[0], steps=50000, out=default_out("bn_paper_mnist"))
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (both nets)")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--init-std", type=float, default=0.1, help="std of the Gaussian init")
    parser.add_argument("--unit", type=int, default=0, help="which last-layer sigmoid to watch")
    parser.add_argument("--checkpoints", type=int, default=50, help="evaluations over the run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.checkpoints = min(args.steps, 300), 3
    setup(args)

    x_train, y_train, x_test, y_test, data_name = image_data(args)
    if args.quick:
        x_train, y_train, x_test, y_test = (
            x_train[:3000],
            y_train[:3000],
            x_test[:1000],
            y_test[:1000],
        )
    # The MLP sees each image as a vector of 784 pixels.
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    if x_test.dtype == np.uint8:
        x_test = x_test.astype(np.float32) / np.float32(255)

    # One set of initial weights, shared by both nets ("the same initialisation").
    rng = np.random.default_rng(args.seed)
    shapes = [(100, 784), (100, 100), (100, 100), (10, 100)]
    weights = [rng.normal(0, args.init_std, shape).astype(np.float32) for shape in shapes]
    every = max(1, args.steps // args.checkpoints)

    print(
        f"{data_name}: {len(x_train)} training, {len(x_test)} test images; {args.steps} SGD "
        f"steps of {args.batch_size}, lr {args.lr}, N(0, {args.init_std}^2) init"
    )
    runs = {}
    for name, bn in (("without BN", False), ("with BN", True)):
        model = build(bn, weights)
        # Both nets see the same mini-batches in the same order.
        loader = tinynet.data.DataLoader(
            (x_train, y_train), batch_size=args.batch_size, shuffle=True, seed=args.seed
        )
        optimizer = tinynet.optim.SGD(model.parameters(), lr=args.lr)
        record = {"step": [], "accuracy": [], "percentiles": []}

        def checkpoint(step, model=model, record=record):
            model.eval()
            scores = model(x_test)
            record["step"].append(step)
            record["accuracy"].append(float((scores.argmax(axis=1) == y_test).mean()))
            inputs = sigmoid_input(model, x_test, args.unit)
            record["percentiles"].append(np.percentile(inputs, PERCENTILES).tolist())

        result = train(model, loader, optimizer, steps=args.steps, every=every,
                       on_checkpoint=checkpoint)  # fmt: skip
        record["seconds"] = result["seconds"]
        record["diverged"] = result["diverged"]
        runs[name] = record
        print(f"{name}: trained in {result['seconds']:.1f} s, final test accuracy "
              f"{record['accuracy'][-1]:.4f}")  # fmt: skip

    plain, bnrun = runs["without BN"], runs["with BN"]
    rows = []
    for i, step in enumerate(plain["step"]):
        if i % max(1, len(plain["step"]) // 10) == 0 or i == len(plain["step"]) - 1:
            rows.append(
                [step, plain["accuracy"][i], bnrun["accuracy"][i]]
                + [f"{v:+.2f}" for v in plain["percentiles"][i]]
                + [f"{v:+.2f}" for v in bnrun["percentiles"][i]]
            )
    print()
    print_table(
        ["step", "acc", "acc BN"]
        + [f"p{p}" for p in PERCENTILES]
        + [f"p{p} BN" for p in PERCENTILES],
        rows,
    )

    summary = {}
    for name, record in runs.items():
        acc = np.array(record["accuracy"])
        pct = np.array(record["percentiles"])
        # Steadiness: how far the median input moves over training, measured from the first
        # checkpoint after step 0 (the start is the same random net for both), compared with
        # the typical 15-85 spread of the distribution.
        median = pct[1:, 1]
        drift = float(median.max() - median.min())
        spread = float(np.mean(pct[1:, 2] - pct[1:, 0]))
        summary[name] = {
            "final_accuracy": float(acc[-1]),
            "best_accuracy": float(acc.max()),
            "mean_accuracy": float(acc[1:].mean()),
            "median_drift": drift,
            "mean_spread": spread,
        }
    target = 0.95 if data_name == "MNIST" else 0.8
    for name, record in runs.items():
        reached = [s for s, a in zip(record["step"], record["accuracy"]) if a >= target]
        summary[name]["steps_to_target"] = reached[0] if reached else None
    print()
    print_table(
        ["net", "final acc", "best acc", f"steps to {target:.0%}", "median drift", "15-85 spread"],
        [
            [
                name,
                s["final_accuracy"],
                s["best_accuracy"],
                s["steps_to_target"] if s["steps_to_target"] is not None else "never",
                f"{s['median_drift']:.2f}",
                f"{s['mean_spread']:.2f}",
            ]
            for name, s in summary.items()
        ],
    )

    def draw(plt):
        figure, axes = plt.subplots(1, 3, figsize=(14, 4))
        for name, record in runs.items():
            axes[0].plot(record["step"][1:], record["accuracy"][1:], label=name)
        axes[0].set(title="(a) test accuracy", xlabel="training step", ylabel="accuracy")
        axes[0].legend()
        axes[0].grid(alpha=0.3)
        low = min(np.min(r["percentiles"]) for r in runs.values())
        high = max(np.max(r["percentiles"]) for r in runs.values())
        for ax, (name, record), tag in zip(axes[1:], runs.items(), "bc"):
            pct = np.array(record["percentiles"])
            for column, p in enumerate(PERCENTILES):
                ax.plot(record["step"], pct[:, column], label=f"{p}th percentile")
            ax.set(
                title=f"({tag}) input to a last-layer sigmoid, {name}",
                xlabel="training step",
                ylim=(low - 0.5, high + 0.5),
            )
            ax.legend()
            ax.grid(alpha=0.3)
        figure.suptitle(f"BatchNorm paper, Figure 1, on {data_name} (tinynet)")
        return figure

    plot = save_plot(draw, args.out)
    return {"data": data_name, "runs": runs, "summary": summary, "target": target, "plot": plot}


if __name__ == "__main__":
    main()
