"""LeNet-BN on MNIST: 99% test accuracy in 3 epochs on a laptop CPU, then fold_bn for inference.

The reference CNN (``tinynet.models.lenet_bn``: two 3x3 convolutions with BatchNorm2d, ReLU and
max pooling, a hidden linear layer with BatchNorm1d, dropout) trained with SGD + Nesterov
momentum and a cosine learning-rate schedule, stepped after every batch. BatchNorm is what makes
the high initial learning rate safe (see bn_learning_rate.py).

After training, ``tinynet.fold_bn`` merges every BatchNorm into the convolution or linear layer
before it (w' = γ·w/√(σ²+ε), b' = γ·(b−μ)/√(σ²+ε) + β): the folded network computes the same
function in eval mode with fewer layers, and the script prints the accuracy of both and the
evaluation speed-up.

    python examples/mnist_cnn.py                 # 3 epochs
    python examples/mnist_cnn.py --optimizer adam

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
    save_plot,
    setup,
    timed,
    train,
)

import tinynet
from tinynet import optim


def main(argv=None) -> dict:
    parser = make_parser(__doc__.split("\n")[0], epochs=3, out=default_out("mnist_cnn"))
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (0.05 for SGD, 2e-3 for Adam)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--limit", type=int, default=None, help="use only this many training images"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.limit = 1, min(args.limit or 1024, 1024)
    setup(args)

    x_train, y_train, x_test, y_test, data_name = image_data(args)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    if args.quick:
        x_test, y_test = x_test[:500], y_test[:500]
    num_classes = int(max(y_train.max(), y_test.max())) + 1

    model = tinynet.models.lenet_bn(num_classes=num_classes)
    loader = tinynet.data.DataLoader((x_train, y_train), batch_size=args.batch_size, shuffle=True)
    steps = args.epochs * len(loader)
    if args.optimizer == "sgd":
        lr = args.lr or 0.05
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)  # fmt: skip
    else:
        lr = args.lr or 2e-3
        optimizer = optim.Adam(model.parameters(), lr=lr)
    # Per-step cosine decay from lr to 0: the last epoch fine-tunes at small steps.
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    print(
        f"{data_name}: {len(x_train)} training, {len(x_test)} test images; lenet_bn, "
        f"{args.optimizer} lr {lr} (cosine), batch {args.batch_size}, {args.epochs} epoch(s)"
    )
    # A first run compiles the kernels: in parallel processes, before the timed epochs.
    batch = min(args.batch_size, len(x_train))
    tinynet.precompile(model, (batch, *x_train.shape[1:]), optimizer=args.optimizer)
    epoch_accuracy = []
    losses = []
    seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        result = train(model, loader, optimizer, steps=len(loader), scheduler=scheduler)
        seconds += result["seconds"]
        losses += result["losses"]
        epoch_accuracy.append(accuracy(model, x_test, y_test))
        print(
            f"epoch {epoch}: loss {np.mean(result['losses']):.4f}, test accuracy "
            f"{epoch_accuracy[-1]:.4f}, {result['seconds']:.1f} s "
            f"({1e3 * result['seconds'] / len(loader):.1f} ms/step)"
        )
        if result["diverged"]:
            print("training diverged")
            break

    # Inference: fold every BatchNorm into the layer before it.
    model.eval()
    folded = tinynet.fold_bn(model)
    folded_accuracy = accuracy(folded, x_test, y_test)
    batch = x_test[:1000]
    scores = predict(model, batch)
    difference = float(np.max(np.abs(predict(folded, batch) - scores)) / np.max(np.abs(scores)))
    time_bn = timed(lambda: predict(model, batch))
    time_folded = timed(lambda: predict(folded, batch))
    # And each ReLU computed as the folded layer before it writes its output.
    fused = tinynet.fuse_relu(folded)
    time_fused = timed(lambda: predict(fused, batch))
    layers = (len(list(model)), len(list(folded)))
    print(
        f"\nfold_bn: {layers[0]} -> {layers[1]} layers; test accuracy {epoch_accuracy[-1]:.4f} "
        f"-> {folded_accuracy:.4f}; largest logit difference {difference:.1e} (relative)"
    )
    print(
        f"eval of {len(batch)} images: {1e3 * time_bn:.1f} ms with BatchNorm, "
        f"{1e3 * time_folded:.1f} ms folded: {time_bn / time_folded:.2f}x faster; "
        f"{1e3 * time_fused:.1f} ms with fuse_relu too: {time_bn / time_fused:.2f}x"
    )

    def draw(plt):
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        left.plot(np.arange(len(smooth)) + window, smooth)
        left.set(title="training loss (moving average)", xlabel="step", yscale="log")
        left.grid(alpha=0.3)
        right.plot(range(1, len(epoch_accuracy) + 1), epoch_accuracy, "o-")
        right.set(title=f"test accuracy on {data_name}", xlabel="epoch")
        right.set_xticks(range(1, len(epoch_accuracy) + 1))
        right.grid(alpha=0.3)
        figure.suptitle(
            f"lenet_bn, {args.optimizer}, fold_bn speed-up {time_bn / time_folded:.2f}x"
        )
        return figure

    plot = save_plot(draw, args.out)
    return {
        "data": data_name,
        "epoch_accuracy": epoch_accuracy,
        "accuracy": epoch_accuracy[-1],
        "folded_accuracy": folded_accuracy,
        "max_relative_difference": difference,
        "eval_seconds": time_bn,
        "eval_seconds_folded": time_folded,
        "speedup": time_bn / time_folded,
        "eval_seconds_fused": time_fused,
        "speedup_fused": time_bn / time_fused,
        "train_seconds": seconds,
        "plot": plot,
    }


if __name__ == "__main__":
    main()
