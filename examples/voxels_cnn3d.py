"""A 3-D CNN with Conv3d and BatchNorm3d on tinynet's generated voxel data set.

``tinynet.data.shapes3d`` draws 16x16x16 volumes of five solids (sphere, cube, cylinder, torus,
cone) in random orientation, position and size, with random brightness, contrast and noise.
``tinynet.models.cnn3d_bn`` classifies them: two Conv3d + BatchNorm3d + ReLU + MaxPool3d stages,
then a hidden linear layer with BatchNorm1d. As the paper prescribes for convolutions,
BatchNorm3d normalises each channel over the batch *and* every voxel position together, so a
feature is normalised the same way wherever it appears in the volume.

The script trains with and without BatchNorm (``--no-compare`` for BN only), prints the test
accuracy per epoch, and checks that ``tinynet.fold_bn`` leaves the predictions unchanged.

    python examples/voxels_cnn3d.py
    python examples/voxels_cnn3d.py --epochs 8 --train-size 8000
"""

from __future__ import annotations

import numpy as np
from _common import (
    accuracy,
    default_out,
    make_parser,
    predict,
    print_table,
    save_plot,
    setup,
    train,
)

import tinynet
from tinynet import optim


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n")[0], epochs=4, out=default_out("voxels_cnn3d"))
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate")
    parser.add_argument("--no-compare", action="store_true", help="train the BN model only")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_size, args.test_size = 1, 256, 128
    setup(args)

    x_train, y_train = tinynet.data.shapes3d(args.train_size, seed=1)
    x_test, y_test = tinynet.data.shapes3d(args.test_size, seed=2)
    classes = tinynet.data.SHAPES3D_CLASSES
    print(
        f"shapes3d: {len(x_train)} training, {len(x_test)} test volumes {x_train.shape[2:]}, "
        f"{len(classes)} classes ({', '.join(classes)})"
    )

    variants = [("with BN", True)] + ([] if args.no_compare else [("without BN", False)])
    runs = {}
    for name, bn in variants:
        tinynet.manual_seed(args.seed)
        model = tinynet.models.cnn3d_bn(len(classes), bn=bn)
        loader = tinynet.data.DataLoader(
            (x_train, y_train), batch_size=args.batch_size, shuffle=True, seed=args.seed
        )
        steps = args.epochs * len(loader)
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        # A first run compiles the kernels: in parallel processes, before the timed epochs.
        tinynet.precompile(model, (min(args.batch_size, len(x_train)), *x_train.shape[1:]))
        scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        record = {"epoch_accuracy": [], "seconds": 0.0, "diverged": False}
        for epoch in range(1, args.epochs + 1):
            result = train(model, loader, optimizer, steps=len(loader), scheduler=scheduler)
            record["seconds"] += result["seconds"]
            record["epoch_accuracy"].append(accuracy(model, x_test, y_test, batch_size=250))
            print(
                f"{name}, epoch {epoch}: loss {np.mean(result['losses']):.4f}, test accuracy "
                f"{record['epoch_accuracy'][-1]:.4f} ({result['seconds']:.1f} s)"
            )
            if result["diverged"]:
                record["diverged"] = True
                print(f"{name}: training diverged")
                break
        record["accuracy"] = record["epoch_accuracy"][-1]
        if bn:
            model.eval()
            folded = tinynet.fold_bn(model)
            same = predict(folded, x_test, 250).argmax(1) == predict(model, x_test, 250).argmax(1)
            record["folded_agreement"] = float(same.mean())
            record["folded_accuracy"] = accuracy(folded, x_test, y_test, batch_size=250)
            print(
                f"fold_bn: test accuracy {record['folded_accuracy']:.4f}, same prediction as "
                f"the BatchNorm model for {same.mean():.2%} of the test volumes"
            )
        runs[name] = record

    print()
    print_table(
        ["model", "test accuracy", "train seconds"],
        [[name, r["accuracy"], f"{r['seconds']:.1f}"] for name, r in runs.items()],
    )

    # The confusion matrix of the (folded) BN model: which solids it mixes up.
    predicted = predict(folded, x_test, 250).argmax(1)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (y_test, predicted), 1)

    def draw(plt):
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for name, record in runs.items():
            epochs = range(1, len(record["epoch_accuracy"]) + 1)
            left.plot(epochs, record["epoch_accuracy"], "o-", label=name)
        left.set(title="test accuracy, cnn3d on shapes3d", xlabel="epoch", ylim=(0, 1))
        left.legend()
        left.grid(alpha=0.3)
        right.imshow(confusion, cmap="Blues")
        right.set_xticks(range(len(classes)), classes, rotation=45)
        right.set_yticks(range(len(classes)), classes)
        for (i, j), count in np.ndenumerate(confusion):
            right.text(j, i, count, ha="center", va="center", fontsize=8)
        right.set(title="confusion (BN model, folded)", xlabel="predicted", ylabel="true")
        return figure

    plot = save_plot(draw, args.out)
    return {
        "runs": runs,
        "accuracy": runs["with BN"]["accuracy"],
        "confusion": confusion,
        "plot": plot,
    }


if __name__ == "__main__":
    main()
