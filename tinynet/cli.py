"""The ``tinynet`` command: train, evaluate, fold BatchNorm, benchmark.

    tinynet train                     # a BN CNN on the built-in shapes, one to two minutes
    tinynet train --data mnist --epochs 3 --checkpoint runs/mnist.npz
    tinynet train --checkpoint runs/mnist.npz --resume --epochs 5
    tinynet eval --checkpoint runs/mnist.npz
    tinynet fold --checkpoint runs/mnist.npz --out runs/mnist-folded.npz
    tinynet bench --help

A mistake on the user's side (a bad option, a missing or damaged checkpoint or data file) prints
one line on stderr and exits with status 2; a checkpoint that cannot be written (disk full, no
permission) is one line and status 1. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import models

DATA_SETS = ("shapes", "shapes3d", "mnist", "fashion-mnist")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "exp", "cosine")

# The defaults are sized for ``tinynet train`` alone: one to two minutes on two cores, about 90%
# test accuracy. Settings that depend on other choices (model, learning rate, samples) are
# filled in by _resolve.
DEFAULTS = {
    "model": None,  # lenet_bn, or cnn3d_bn for shapes3d
    "data": "shapes",
    "epochs": 3,
    "batch_size": 64,
    "lr": None,  # 0.05 for SGD, 0.001 for Adam/AdamW
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "seed": 0,
    "limit": None,
}
# Training samples generated for the built-in data sets when --limit is not given.
GENERATED_TRAIN = {"shapes": 12000, "shapes3d": 4000}
GENERATED_TEST = {"shapes": 2000, "shapes3d": 1000}
EVAL_BATCH = 500


class UsageError(Exception):
    """A mistake in how tinynet was called: reported in one line, exit status 2 (or ``status``)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        args = _build_parser().parse_args(argv)
        if args.command is None:
            _build_parser().print_help()
            return 2
        return args.run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinynet", description="Train and run small CNNs on the CPU.")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(title="commands", parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (default: lenet_bn on built-in shapes)")
    train.set_defaults(command="train", run=_train)
    train.add_argument("--model", choices=list(models.MODELS), help="preset (default lenet_bn)")
    train.add_argument("--data", choices=DATA_SETS, help="data set (default shapes)")
    train.add_argument("--epochs", type=_positive_int, help="epochs in total (default 3)")
    train.add_argument("--batch-size", type=_positive_int, help="mini-batch size (default 64)")
    train.add_argument("--lr", type=_positive_float, help="learning rate (SGD 0.05, Adam 1e-3)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="default sgd (with momentum)")
    train.add_argument("--momentum", type=_non_negative_float, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=_non_negative_float, help="default 0")
    train.add_argument("--schedule", choices=SCHEDULES, help="per-epoch schedule (cosine)")
    train.add_argument("--limit", type=_positive_int, help="use only N training samples")
    train.add_argument(
        "--seed", type=_non_negative_int, help="seed for initialisation and shuffling (0)"
    )
    _add_common(train)
    train.add_argument("--checkpoint", metavar="PATH", help="save a checkpoint every epoch")
    train.add_argument(
        "--precompile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on a first run, compile the kernels in parallel processes (default: on)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --checkpoint with its settings, bit for bit",
    )

    evaluate = sub.add_parser("eval", help="test accuracy of a checkpoint")
    evaluate.set_defaults(command="eval", run=_eval)
    evaluate.add_argument("--checkpoint", metavar="PATH", required=True)
    evaluate.add_argument("--data", choices=DATA_SETS, help="default: the data it trained on")
    _add_common(evaluate)

    fold = sub.add_parser("fold", help="fold BatchNorm into the layers before it; compare")
    fold.set_defaults(command="fold", run=_fold)
    fold.add_argument("--checkpoint", metavar="PATH", required=True)
    fold.add_argument("--out", metavar="PATH", help="save the folded model here")
    fold.add_argument("--data", choices=DATA_SETS, help="default: the data it trained on")
    fold.add_argument(
        "--fuse-relu",
        action="store_true",
        help="also compute each ReLU inside the layer before it (tinynet.fuse_relu)",
    )
    _add_common(fold)

    prof = sub.add_parser("profile", help="time each layer of a preset's training step")
    prof.set_defaults(command="profile", run=_profile)
    prof.add_argument("--model", choices=list(models.MODELS), default="lenet_bn")
    prof.add_argument("--batch-size", type=_positive_int, default=64, help="default 64")
    prof.add_argument("--steps", type=_positive_int, default=20, help="timed steps (20)")
    prof.add_argument("--eval", action="store_true", help="eval-mode forwards only")
    prof.add_argument("--fold", action="store_true", help="profile tinynet.fold_bn(model)")
    prof.add_argument("--threads", type=_positive_int, help="threads for kernels and BLAS")

    # Listed for --help; main() hands everything after "bench" to tinynet.benchmark.
    sub.add_parser("bench", help="benchmark against PyTorch (tinynet bench --help)", add_help=False)
    return parser


def _add_common(parser) -> None:
    parser.add_argument("--threads", type=_positive_int, help="threads for kernels and BLAS")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


# -- train ----------------------------------------------------------------------------------------


def _train(args) -> int:
    from . import config as tn_config
    from .data import DataLoader
    from .kernel_cache import precompile
    from .nn import CrossEntropyLoss
    from .random import manual_seed

    _set_threads(args.threads)
    checkpoint, settings = _train_settings(args)
    data = _load_data(settings["data"], settings["limit"], settings["model"])
    manual_seed(settings["seed"])
    if checkpoint is not None:
        model = checkpoint.model
    else:
        model = models.get(settings["model"], num_classes=len(data["classes"]))
    optimizer = _make_optimizer(settings, model)
    scheduler = _make_scheduler(settings, optimizer)
    batch_size = settings["batch_size"]
    samples = len(data["train"][1])
    has_bn = _count_batchnorms(model) > 0
    if has_bn and min(batch_size, samples) < 2:
        raise UsageError(
            f"{settings['model']} has BatchNorm layers, which need at least 2 images per "
            f"training batch; use --batch-size 2 or more"
        )
    # A last batch of one image has no batch statistics for BatchNorm: leave it out (the
    # shuffle puts a different image there every epoch).
    drop_last = has_bn and samples % batch_size == 1
    loader = DataLoader(data["train"], batch_size=batch_size, shuffle=True, drop_last=drop_last)
    start_epoch, step = 0, 0
    if checkpoint is not None:
        try:
            checkpoint.restore(optimizer, scheduler, loader)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"cannot resume from {args.checkpoint}: {exc}") from None
        start_epoch, step = checkpoint.epoch, checkpoint.step

    epochs = settings["epochs"]
    print(
        f"training {settings['model']} on {settings['data']} ({len(data['train'][1])} images, "
        f"{len(data['classes'])} classes) for {epochs} epochs: {settings['optimizer']} "
        f"lr {settings['lr']:g}, {settings['schedule']} schedule, batch {settings['batch_size']}, "
        f"{tn_config.get_num_threads()} threads"
    )
    if start_epoch:
        print(f"resuming after epoch {start_epoch} from {args.checkpoint}")
    if args.precompile:
        # A first run compiles its kernels; a later one finds them in Numba's cache.
        shape = (min(batch_size, samples), *data["train"][0].shape[1:])
        report = precompile(model, shape, optimizer=settings["optimizer"])
        if report.workers:
            print(
                f"compiled the kernels in {report.workers} processes in {report.seconds:.0f} s "
                f"(first run only: cached from now on)"
                + (f"; failed: {'; '.join(report.errors)}" if report.errors else ""),
                flush=True,
            )
    criterion = CrossEntropyLoss()
    started = time.perf_counter()
    test_accuracy = None
    for epoch in range(start_epoch, epochs):
        model.train()
        progress = _epoch_progress(len(loader), f"epoch {epoch + 1}/{epochs}", args.progress)
        for x, y in loader:
            output = model(x)
            loss = criterion(output, y)
            optimizer.zero_grad()
            model.backward(criterion.backward(), input_grad=False)
            optimizer.step()
            step += 1
            progress.update(loss, output, y)
        progress.close()
        if scheduler is not None:
            scheduler.step()
        _, test_accuracy = _evaluate(model, data["test"])
        print(
            f"epoch {epoch + 1}/{epochs}: train loss {progress.loss:.4f}, "
            f"train accuracy {progress.accuracy:.1%}, test accuracy {test_accuracy:.1%} "
            f"({progress.images_per_second:.0f} images/s, {progress.elapsed:.1f} s)",
            flush=True,
        )
        if args.checkpoint:
            # After the epoch: the loader is between epochs, the RNG where the next one starts.
            _save(
                args.checkpoint,
                model,
                optimizer,
                scheduler,
                extra={"settings": settings},
                loader=loader,
                epoch=epoch + 1,
                step=step,
            )
    if test_accuracy is None:  # resumed a finished run: nothing trained, still report
        _, test_accuracy = _evaluate(model, data["test"])
    print(
        f"test accuracy {test_accuracy:.1%} (chance {1 / len(data['classes']):.0%}) after "
        f"{epochs} epochs, {time.perf_counter() - started:.0f} s of training"
        + (f"; checkpoint in {args.checkpoint}" if args.checkpoint else "")
    )
    return 0


def _train_settings(args):
    """The checkpoint to resume (or None) and the run's settings, checked."""
    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    if args.checkpoint:
        target = Path(args.checkpoint).expanduser().absolute()
        if target.is_dir():
            raise UsageError(f"--checkpoint {args.checkpoint} is a folder; give a file name")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create {target.parent} for --checkpoint ({exc.strerror})"
            ) from None
    if not args.resume:
        return None, _resolve(given)
    if not args.checkpoint:
        raise UsageError("tinynet train: --resume needs --checkpoint PATH")
    checkpoint = _load_checkpoint(args.checkpoint)
    settings = _settings_of(checkpoint)
    for key, value in given.items():
        if key != "epochs" and settings.get(key) != value:
            raise UsageError(
                f"tinynet train: --resume continues {args.checkpoint} with its settings; "
                f"--{key.replace('_', '-')} {value} differs from its {settings.get(key)}"
            )
    epochs = given.get("epochs", settings["epochs"])
    if epochs != settings["epochs"] and settings["schedule"] != "none":
        raise UsageError(
            f"tinynet train: the {settings['schedule']} schedule of {args.checkpoint} is "
            f"planned for {settings['epochs']} epochs; resume without --epochs (only runs "
            f"with --schedule none can be extended)"
        )
    settings["epochs"] = epochs
    return checkpoint, settings


def _resolve(given: dict) -> dict:
    """Fill in defaults, including those that depend on other settings."""
    settings = {**DEFAULTS, **given}
    if settings["model"] is None:
        settings["model"] = "cnn3d_bn" if settings["data"] == "shapes3d" else "lenet_bn"
    if settings["lr"] is None:
        settings["lr"] = 0.05 if settings["optimizer"] == "sgd" else 1e-3
    if settings["optimizer"] != "sgd" and "momentum" not in given:
        settings["momentum"] = None
    if settings["optimizer"] == "adamw" and "weight_decay" not in given:
        settings["weight_decay"] = 1e-2
    return settings


def _settings_of(checkpoint) -> dict:
    extra = checkpoint.extra
    if not isinstance(extra, dict) or not isinstance(extra.get("settings"), dict):
        raise UsageError(f"{checkpoint.path} was not written by tinynet train (no settings)")
    settings = dict(extra["settings"])
    if set(settings) != set(DEFAULTS):
        raise UsageError(f"{checkpoint.path}: unexpected training settings {sorted(settings)}")
    return settings


def _make_optimizer(settings: dict, model):
    from . import optim

    params = list(model.parameters())
    lr, decay = settings["lr"], settings["weight_decay"]
    if settings["optimizer"] == "sgd":
        return optim.SGD(params, lr=lr, momentum=settings["momentum"], weight_decay=decay)
    if settings["optimizer"] == "adam":
        return optim.Adam(params, lr=lr, weight_decay=decay)
    return optim.AdamW(params, lr=lr, weight_decay=decay)


def _make_scheduler(settings: dict, optimizer):
    from . import optim

    epochs = settings["epochs"]
    schedule = settings["schedule"]
    if schedule == "step":
        # Divide the rate by 10 twice: after a third and after two thirds of the epochs.
        return optim.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if schedule == "exp":
        return optim.ExponentialLR(optimizer, gamma=0.1 ** (1 / max(1, epochs)))
    if schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def _save(path, model, *args, **kwargs) -> None:
    from .checkpoint import save_checkpoint

    try:
        save_checkpoint(path, model, *args, **kwargs)
    except OSError as exc:
        # Not the user's typing but their disk: one line all the same, status 1.
        raise UsageError(f"cannot write the checkpoint {path}: {exc}", status=1) from None


def _epoch_progress(batches: int, description: str, enabled):
    from .progress import EpochProgress

    return EpochProgress(batches, description, enabled)


# -- data -----------------------------------------------------------------------------------------


def _load_data(name: str, limit: int | None, model: str | None, train: bool = True) -> dict:
    """Train (unless ``train`` is false) and test arrays for ``name``, shaped for ``model``."""
    from . import data

    kind = models.MODELS[model][1] if model else None
    if kind is not None and (kind == "volume") != (name == "shapes3d"):
        wanted = "--data shapes3d" if kind == "volume" else "2-D images (not --data shapes3d)"
        raise UsageError(f"model {model} needs {wanted}")
    if name in GENERATED_TRAIN:
        generate = data.shapes3d if name == "shapes3d" else data.shapes2d
        classes = data.SHAPES3D_CLASSES if name == "shapes3d" else data.SHAPES2D_CLASSES
        # Fixed seeds: the data set is the same whatever --seed trains with.
        count = min(limit or GENERATED_TRAIN[name], GENERATED_TRAIN[name])
        train = generate(count, seed=0) if train else None
        test = generate(GENERATED_TEST[name], seed=1)
    else:
        reader = data.MNIST if name == "mnist" else data.FashionMNIST
        try:
            test_set = reader(train=False)
            train_set = reader(train=True) if train else None
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        train = (train_set.images[:limit], train_set.labels[:limit]) if train else None
        test = (test_set.images, test_set.labels)
        classes = test_set.classes
    if kind == "flat":
        train, test = _flat(train), _flat(test)
    return {"train": train, "test": test, "classes": classes}


def _flat(arrays):
    """(N, 1, 28, 28) images as (N, 784) for the MLPs: a view, not a copy."""
    if arrays is None:
        return None
    return arrays[0].reshape(len(arrays[0]), -1), arrays[1]


def _evaluate(model, arrays) -> tuple[float, float]:
    """Mean loss and accuracy over ``arrays`` in eval mode; the model's mode is restored."""
    from .data import DataLoader
    from .nn import CrossEntropyLoss

    was_training = model.training
    model.eval()
    criterion = CrossEntropyLoss()
    loss_sum, correct = 0.0, 0
    for x, y in DataLoader(arrays, batch_size=EVAL_BATCH):
        output = model(x)
        loss_sum += criterion(output, y) * len(y)
        correct += int(np.count_nonzero(output.argmax(axis=1) == y))
    model.train(was_training)
    n = len(arrays[1])
    return loss_sum / n, correct / n


# -- eval and fold --------------------------------------------------------------------------------


def _eval(args) -> int:
    _set_threads(args.threads)
    checkpoint = _load_checkpoint(args.checkpoint)
    model, data_name, data = _checkpoint_data(checkpoint, args)
    started = time.perf_counter()
    loss, accuracy = _evaluate(model, data["test"])
    seconds = time.perf_counter() - started
    n = len(data["test"][1])
    print(
        f"{args.checkpoint}: test accuracy {accuracy:.2%}, loss {loss:.4f} on {n} {data_name} "
        f"test images ({n / seconds:.0f} images/s)"
    )
    return 0


def _fold(args) -> int:
    import tinynet

    fold_bn = getattr(tinynet, "fold_bn", None)
    if fold_bn is None:
        raise UsageError("tinynet fold is not available: this tinynet has no fold_bn yet", 1)
    _set_threads(args.threads)
    checkpoint = _load_checkpoint(args.checkpoint)
    model, data_name, data = _checkpoint_data(checkpoint, args)
    model.eval()
    x = data["test"][0][:EVAL_BATCH]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255
    try:
        folded = fold_bn(model, input_shape=x.shape)  # the shape tells 2-D BatchNorm1d inputs
    except ValueError as exc:
        raise UsageError(f"cannot fold {args.checkpoint}: {exc}") from None
    fused = ""
    if args.fuse_relu:
        relus = _count(folded, tinynet.nn.ReLU)
        folded = tinynet.fuse_relu(folded)
        fused = f" and fused {relus - _count(folded, tinynet.nn.ReLU)} ReLUs"
    reference = model(x)
    result = folded(x)
    difference = float(np.max(np.abs(reference.astype(np.float64) - result)))
    time_model = _median_time(model, x)
    time_folded = _median_time(folded, x)
    removed = _count_batchnorms(model) - _count_batchnorms(folded)
    _, accuracy = _evaluate(model, data["test"])
    _, folded_accuracy = _evaluate(folded, data["test"])
    print(
        f"folded {removed} BatchNorm layers{fused} of {args.checkpoint}\n"
        f"eval time for {len(x)} {data_name} images: {time_model * 1e3:.1f} ms -> "
        f"{time_folded * 1e3:.1f} ms (speed-up {time_model / time_folded:.2f}x)\n"
        f"largest output difference {difference:.3g}; test accuracy {accuracy:.2%} -> "
        f"{folded_accuracy:.2%}"
    )
    if args.out:
        extra = checkpoint.extra if isinstance(checkpoint.extra, dict) else {}
        _save(args.out, folded, extra={**extra, "folded_from": str(args.checkpoint)})
        print(f"saved the folded model to {args.out}")
    return 0


def _median_time(model, x, repeats: int = 7) -> float:
    model(x)  # warm-up: compilation and first-touch allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def _count_batchnorms(model) -> int:
    return sum(type(m).__name__.startswith("BatchNorm") for m in model.modules())


def _count(model, cls) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


def _load_checkpoint(path):
    from .checkpoint import load_checkpoint

    try:
        checkpoint = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if checkpoint.model is None:
        raise UsageError(f"{path} holds weights but no architecture spec; load it in Python")
    return checkpoint


def _checkpoint_data(checkpoint, args):
    """The checkpoint's model and the test data it is evaluated on (its own or --data)."""
    extra = checkpoint.extra if isinstance(checkpoint.extra, dict) else {}
    settings = extra.get("settings") if isinstance(extra.get("settings"), dict) else {}
    name = args.data or settings.get("data")
    if name not in DATA_SETS:
        raise UsageError(f"{args.checkpoint} does not say what data it was trained on; use --data")
    model_name = settings.get("model") if settings.get("model") in models.MODELS else None
    data = _load_data(name, None, model_name, train=False)
    model = checkpoint.model.eval()
    first = next((m for m in model.modules() if not any(True for _ in m.children())), None)
    if model_name is None and name != "shapes3d" and type(first).__name__ == "Linear":
        data["test"] = _flat(data["test"])
    # One image through the model first: a model that does not fit the data (--data shapes3d
    # for a 2-D CNN) is the user's mistake, reported by the layer that refuses the input.
    from .data import DataLoader

    x, _ = next(iter(DataLoader(data["test"], batch_size=2)))
    try:
        model(x)
    except (ValueError, TypeError) as exc:
        message = f"the model in {args.checkpoint} does not fit {name} data: {exc}"
        raise UsageError(message) from None
    return model, name, data


# -- profile --------------------------------------------------------------------------------------

# The input of one sample of each kind of preset (models.MODELS): the built-in data's.
_SAMPLE_SHAPES = {"image": (1, 28, 28), "flat": (784,), "volume": (1, 16, 16, 16)}


def _profile(args) -> int:
    from .passes import fold_bn
    from .profiler import profile

    _set_threads(args.threads)
    model = models.get(args.model)
    if args.fold:
        model = fold_bn(model)
    if not args.eval and args.batch_size < 2 and _count_batchnorms(model):
        raise UsageError(f"{args.model} has BatchNorm layers: training needs --batch-size 2+")
    shape = (args.batch_size, *_SAMPLE_SHAPES[models.MODELS[args.model][1]])
    profile(model, shape, steps=args.steps, train=not args.eval)
    return 0


def _set_threads(threads) -> None:
    if threads is None:
        return
    from .config import set_num_threads

    try:
        set_num_threads(threads)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- bench ----------------------------------------------------------------------------------------


def _bench(argv: list[str]) -> int:
    try:
        from . import benchmark
    except ImportError as exc:
        raise UsageError(f"tinynet bench is not available ({exc})") from None
    result = benchmark.main(argv)
    return int(result or 0)
