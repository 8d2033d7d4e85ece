"""A survey of convolution speed on random configurations: tinynet against PyTorch.

The benchmark's workloads (workloads.py) are fixed shapes from small CNNs. Tuning against
them alone could hide a path that is slow elsewhere, so the survey draws convolutions at
random over what users build: 2-D and 3-D, 1 to 128 channels, kernels 1 to 7, stride 1 or 2,
dilation, padding, depthwise and grouped layers, batch 1 to 64, odd sizes. It times
tinynet's forward and forward + backward against PyTorch's at the same thread count, by
timing.py's rules (interleaved samples, medians, compilation excluded), checks that both
compute the same output, and lists the rows worst first with the path tinynet took (the
names ``tinynet.profile`` uses): a slow path shows with the configurations it is slow on.
The same seed draws the same configurations.

    tinynet bench --survey 40 --seed 1
"""

from __future__ import annotations

import numpy as np

# Keep each call short enough for a survey of dozens of rows: at most this many
# multiply-adds in a forward (redrawn otherwise).
_MAX_MACS = 2e8


def _draw(rng) -> dict:
    """One random convolution: the layer's arguments, the batch and the input size."""
    while True:
        dims = int(rng.choice([2, 2, 2, 3]))
        if dims == 2:
            batch = int(rng.choice([1, 2, 8, 32, 64]))
            size = int(rng.choice([7, 8, 12, 14, 16, 28, 32, 56]))
            cin, cout = (int(rng.choice([1, 3, 8, 16, 32, 64, 128])) for _ in range(2))
            kernel = int(rng.choice([1, 3, 3, 3, 5, 7]))
        else:
            batch = int(rng.choice([1, 2, 4, 8]))
            size = int(rng.choice([6, 8, 12, 16, 24]))
            cin, cout = (int(rng.choice([1, 4, 8, 16, 32])) for _ in range(2))
            kernel = int(rng.choice([1, 3, 3, 3, 5]))
        stride = int(rng.choice([1, 1, 1, 2]))
        dilation = int(rng.choice([1, 1, 1, 1, 2]))
        padding = int(rng.choice([0, kernel // 2, kernel // 2])) * dilation
        groups = 1
        if cin >= 4 and rng.random() < 0.2:  # depthwise, with a channel multiplier of 1 or 2
            groups = cin
            cout = cin * int(rng.choice([1, 1, 2]))
        elif cin >= 8 and cout >= 8 and rng.random() < 0.1:
            groups = int(rng.choice([2, 4]))
        out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if out < 1:
            continue
        macs = batch * cout * out**dims * (cin // groups) * kernel**dims
        if macs <= _MAX_MACS:
            return dict(
                dims=dims,
                batch=batch,
                size=size,
                in_channels=cin,
                out_channels=cout,
                kernel_size=kernel,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
            )


def _describe(c: dict) -> str:
    extras = f" s{c['stride']}" if c["stride"] != 1 else ""
    extras += f" p{c['padding']}" if c["padding"] else ""
    extras += f" d{c['dilation']}" if c["dilation"] != 1 else ""
    extras += f" g{c['groups']}" if c["groups"] != 1 else ""
    shape = ",".join([str(c["size"])] * c["dims"])
    return (
        f"conv{c['dims']}d {c['in_channels']}->{c['out_channels']} k{c['kernel_size']}{extras}"
        f" ({c['batch']},{c['in_channels']},{shape})"
    )


def survey(count: int, seed: int, reps: int, min_sample: float, settle: float, torch, log):
    """Time ``count`` random convolutions (seeded by ``seed``) in tinynet and PyTorch; a list
    of rows: the configuration, tinynet's path, both sides' medians (seconds) for the forward
    and forward + backward, their ratios (tinynet / PyTorch) and the outputs' difference."""
    import tinynet

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        config = _draw(rng)
        log(f"[{i + 1}/{count}] {_describe(config)}")
        rows.append(_measure(config, rng, torch, reps, min_sample, settle))
    tinynet.manual_seed(0)  # leave the global stream as a fresh process has it
    return rows


def _measure(c: dict, rng, torch, reps: int, min_sample: float, settle: float) -> dict:
    """One survey row: configuration ``c`` built in both frameworks with the same weights."""
    from tinynet.nn import Conv2d, Conv3d

    from ..profiler import algorithm
    from .timing import time_interleaved

    args = {key: c[key] for key in ("stride", "padding", "dilation", "groups")}
    shape = (c["batch"], c["in_channels"]) + (c["size"],) * c["dims"]
    ours = (Conv2d if c["dims"] == 2 else Conv3d)(
        c["in_channels"], c["out_channels"], c["kernel_size"], **args
    )
    theirs = (torch.nn.Conv2d if c["dims"] == 2 else torch.nn.Conv3d)(
        c["in_channels"], c["out_channels"], c["kernel_size"], **args
    )
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    x = rng.standard_normal(shape).astype(np.float32)
    y = ours.forward(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    x_t = torch.from_numpy(x).requires_grad_()
    grad_t = torch.from_numpy(grad)
    with torch.inference_mode():
        expected = theirs(torch.from_numpy(x)).numpy()
    difference = float(np.max(np.abs(y - expected)) / (np.max(np.abs(expected)) + 1e-30))

    def torch_forward():
        with torch.inference_mode():
            theirs(x_t)

    def torch_train():
        x_t.grad = None
        theirs.zero_grad()
        theirs(x_t).backward(grad_t)

    def our_train():
        ours.forward(x)
        ours.backward(grad)

    times = time_interleaved(
        {
            "tinynet forward": lambda: ours.forward(x),
            "torch forward": torch_forward,
            "tinynet train": our_train,
            "torch train": torch_train,
        },
        reps,
        min_sample_s=min_sample,
        settle_s=settle,
    )
    row = {"config": _describe(c), "algorithm": algorithm(ours, shape), "difference": difference}
    for key, value in times.items():
        row[key.replace(" ", "_") + "_s"] = value.get("median_s", float("nan"))
    row["forward_ratio"] = row["tinynet_forward_s"] / row["torch_forward_s"]
    row["train_ratio"] = row["tinynet_train_s"] / row["torch_train_s"]
    return row


def format_survey(rows: list[dict], markdown: bool = False) -> str:
    """The survey's rows, worst (largest tinynet / PyTorch ratio, forward or training step)
    first, and a summary line."""
    rows = sorted(rows, key=lambda r: -max(r["forward_ratio"], r["train_ratio"]))
    head = ("configuration", "tinynet path", "fwd ms", "torch", "fwd ratio")
    head += ("fwd+bwd ms", "torch", "fwd+bwd ratio", "max diff")
    lines = []
    for r in rows:
        lines.append(
            (
                r["config"],
                r["algorithm"],
                f"{r['tinynet_forward_s'] * 1e3:.3g}",
                f"{r['torch_forward_s'] * 1e3:.3g}",
                f"{r['forward_ratio']:.2f}",
                f"{r['tinynet_train_s'] * 1e3:.3g}",
                f"{r['torch_train_s'] * 1e3:.3g}",
                f"{r['train_ratio']:.2f}",
                f"{r['difference']:.1e}",
            )
        )
    forward = np.array([r["forward_ratio"] for r in rows])
    train = np.array([r["train_ratio"] for r in rows])
    summary = (
        f"{len(rows)} configurations; tinynet / PyTorch, median (geometric mean): forward "
        f"{np.median(forward):.2f} ({np.exp(np.mean(np.log(forward))):.2f}), forward + backward "
        f"{np.median(train):.2f} ({np.exp(np.mean(np.log(train))):.2f}); slower than PyTorch "
        f"by over 10%: {int(np.sum(forward > 1.1))} forwards, {int(np.sum(train > 1.1))} "
        "forward + backward"
    )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out) + "\n\n" + summary + "\n"
    widths = [max(len(str(x)) for x in column) for column in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:{'<' if k < 2 else '>'}{w}}}" for k, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines] + [summary])
