"""Losses. ``loss = crit(output, target)`` returns a float; ``crit.backward()`` returns
d loss / d output, so a training step reads ``model.backward(crit.backward())``."""

from __future__ import annotations

import numpy as np

from ..kernels import loss as kernels
from .module import Module
from .validation import cast_input, require_forward

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """What the losses share: the reduction ('mean', 'sum', or 'none' for the per-element
    losses, as torch's), and a backward that returns the gradient the forward computed (the
    loss is the end of the graph: no grad_out is needed, though one may scale it)."""

    def __init__(self, reduction: str):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__} expected reduction in {_REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction
        self._grad = None
        self._loss_shape = None  # () for a reduced loss, the losses' shape for 'none'

    def _same_shape(self, input, target):
        """The input and the target as float arrays of the input's dtype and one shape."""
        x = cast_input(self, input)
        y = cast_input(self, target, x.dtype)
        if x.shape != y.shape:
            raise ValueError(
                f"{type(self).__name__} expected target of the input's shape {x.shape}, "
                f"got {y.shape}"
            )
        return x, y

    def _scale(self, count: int) -> float:
        """What the summed loss is multiplied by: 1/count for the mean (NaN for no elements,
        the mean of nothing, as torch gives), 1 for the sum (and for 'none')."""
        if self.reduction != "mean":
            return 1.0
        return 1.0 / count if count else float("nan")

    def _result(self, total, losses, dtype):
        """What forward returns: the reduced loss as a float, or with reduction='none' the
        per-element losses (in the input's dtype, as torch's)."""
        if self.reduction == "none":
            self._loss_shape = losses.shape
            return losses.astype(dtype)
        self._loss_shape = ()
        return float(total)

    def backward(self, grad_out=None):
        """d loss / d input. ``grad_out``, the gradient with respect to the loss, defaults to
        1 (for reduction='none', ones: the gradient of the losses' sum); given, it scales the
        gradient, per element for 'none' (as loss.backward(gradient) in torch)."""
        require_forward(self, self._grad)
        if grad_out is None:
            return self._grad
        g = cast_input(self, grad_out, self._grad.dtype)
        if g.shape != self._loss_shape:
            raise ValueError(
                f"{type(self).__name__} expected a gradient of the loss's shape "
                f"{self._loss_shape}, got {g.shape}"
            )
        if 0 < g.ndim < self._grad.ndim:  # cross-entropy's per-row losses: C on axis 1
            g = np.expand_dims(g, 1)
        return self._grad * g


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy on raw scores (logits), fused for stability, as
    torch.nn.CrossEntropyLoss.

    loss_n = −log softmax(x_n)[t_n], computed as logsumexp(x_n) − x_n[t_n] with the row maximum
    subtracted first, so no exponential overflows. With ``label_smoothing`` ε the target is
    (1 − ε)·one_hot + ε/C. ``weight`` (C,) scales each class's terms, and the mean is then
    taken with the weights of the rows' targets (Σ_n w_(t_n)·loss_n / Σ_n w_(t_n)); rows whose
    target is ``ignore_index`` count for nothing, in the mean's divisor too. Without weights
    the gradient is (softmax − target) / N. reduction='none' returns each row's loss (N,) (0
    for an ignored row), w_(t_n)·loss_n as torch's.

    Shape: input (N, C) float; target (N,) integer class indices in [0, C) (or ignore_index),
    or (N, C) float class probabilities (soft labels; the mean is then over N, as torch's);
    weight (C,), a buffer (in state_dict, as torch's). Or, as torch's, input (N, C, d1, ...)
    with target (N, d1, ...) or (N, C, d1, ...): a class per position (segmentation), every
    position a row of the above.
    """

    def __init__(
        self,
        weight=None,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__(reduction)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(
                f"CrossEntropyLoss expected label_smoothing in [0, 1], got {label_smoothing!r}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(
                f"CrossEntropyLoss expected ignore_index to be an int, got {ignore_index!r}"
            )
        if weight is not None:
            weight = cast_input(self, weight)
            if weight.ndim != 1 or weight.size == 0:
                raise ValueError(
                    f"CrossEntropyLoss expected weight of shape (C,), one per class, "
                    f"got shape {weight.shape}"
                )
            weight = weight.copy()
        self.register_buffer("weight", weight)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        x = cast_input(self, input)
        target = np.asarray(target)
        probabilities = target.shape == x.shape and target.dtype.kind == "f"
        if x.ndim == 1 and x.size and (target.ndim == 0 or probabilities):
            # Unbatched, as torch: scores (C,) with a class index () or probabilities (C,)
            # are a batch of one row; the gradient and a 'none' loss drop the batch again.
            result = self._rows(x[None], target[None])
            self._grad = self._grad[0]
            if self.reduction == "none":
                self._loss_shape = ()
                return result.reshape(())
            return result
        if x.ndim < 2:
            raise ValueError(
                "CrossEntropyLoss expected input (N, C) or (N, C, d1, ...) (or (C,) with a "
                "class index of shape () or class probabilities of shape (C,)), got input "
                f"{x.shape} and target {target.dtype} {target.shape}"
            )
        n, c = x.shape[:2]
        if c == 0:
            raise ValueError("CrossEntropyLoss expected at least one class, got input (N, 0)")
        if x.ndim == 2:
            return self._rows(x, target)
        # (N, C, d1, ...), as torch's (per-pixel classes): each position is one row of C
        # scores, its target the class index (or probabilities) there.
        positions = (n, *x.shape[2:])
        rows = np.moveaxis(x, 1, -1).reshape(-1, c)
        if target.dtype.kind == "f" and target.shape == x.shape:
            target = np.moveaxis(target, 1, -1).reshape(-1, c)
        elif target.shape == positions and target.dtype.kind in "iu":
            target = target.reshape(-1)
        else:
            raise ValueError(
                f"CrossEntropyLoss expected target of integer class indices with shape "
                f"{positions} or of class probabilities with shape {x.shape}, got "
                f"{target.dtype} array of shape {target.shape}"
            )
        result = self._rows(rows, target)
        grad = self._grad.reshape(*positions, c)
        self._grad = np.ascontiguousarray(np.moveaxis(grad, -1, 1))
        if self.reduction == "none":
            result = result.reshape(positions)
            self._loss_shape = positions
        return result

    def _rows(self, x, target):
        """forward for input (N, C): the loss (or the rows' losses), with the gradient kept."""
        n, c = x.shape
        weight = self._class_weights(c)
        grad = np.empty_like(x)
        mean = self.reduction == "mean"
        if target.shape == (n, c) and target.dtype.kind == "f":
            # Class probabilities (soft labels). As torch: ignore_index (a class) is refused
            # with them; a negative one can name no class and is let through.
            if self.ignore_index >= 0:
                raise ValueError(
                    "CrossEntropyLoss: ignore_index is not supported for class-probability "
                    f"targets (got ignore_index={self.ignore_index})"
                )
            y = target.astype(x.dtype, copy=False)
            losses = np.empty(n)
            loss = kernels.cross_entropy_probabilities(
                x, y, weight, self.label_smoothing, mean, grad, losses
            )
            self._grad = grad
            return self._result(loss, losses, x.dtype)
        if target.shape != (n,) or target.dtype.kind not in "iu":
            raise ValueError(
                f"CrossEntropyLoss expected target of integer class indices with shape ({n},) "
                f"or of class probabilities with shape ({n}, {c}), got {target.dtype} array of "
                f"shape {target.shape}"
            )
        target = target.astype(np.intp, copy=False)  # one compiled kernel for every int type
        counted = target[target != self.ignore_index]
        if counted.size and (counted.min() < 0 or counted.max() >= c):
            raise ValueError(
                f"CrossEntropyLoss expected target values in [0, {c}) or ignore_index "
                f"({self.ignore_index}), got min {counted.min()} and max {counted.max()}"
            )
        # The mean of no values is NaN, as in PyTorch (the kernel divides by Σ w = 0).
        losses = np.empty(n)
        loss = kernels.cross_entropy(
            x, target, weight, self.ignore_index, self.label_smoothing, mean, grad, losses
        )
        self._grad = grad
        return self._result(loss, losses, x.dtype)

    def _class_weights(self, c):
        """The class weights as float64 (C,): ones without ``weight``."""
        if self.weight is None:
            return np.ones(c)
        if self.weight.shape != (c,):
            raise ValueError(
                f"CrossEntropyLoss expected weight of shape ({c},), one per class of the "
                f"input (N, {c}), got shape {self.weight.shape}"
            )
        return self.weight.astype(np.float64)

    def extra_repr(self) -> str:
        text = f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"
        if self.ignore_index != -100:
            text = f"ignore_index={self.ignore_index}, " + text
        return ("weight=..., " if self.weight is not None else "") + text


class MSELoss(_Loss):
    """Mean squared error, mean over every element (or sum, or per element with
    reduction='none'); gradient 2(x − y)/numel."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        x, y = self._same_shape(input, target)
        diff = x - y
        scale = self._scale(x.size)
        self._grad = diff * x.dtype.type(2 * scale)
        losses = np.square(diff, dtype=np.float64)
        return self._result(losses.sum() * scale, losses, x.dtype)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on raw scores (logits), as torch.nn.BCEWithLogitsLoss: one
    independent yes/no per output element (binary or multi-label classification).

    ℓ = −w·[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] per element, with the target y in [0, 1],
    ``weight`` w (broadcast to the input's shape) and ``pos_weight`` p (one per class, along the
    last axis; > 1 raises recall). Computed without σ itself, which rounds to 0 or 1 for
    |x| > 17 in float32: log σ(x) = −softplus(−x) and log(1 − σ(x)) = −softplus(x), so

        ℓ = w·[(1 − y)·x + (1 + (p − 1)·y)·softplus(−x)],
        dℓ/dx = w·[(1 − y) − (1 + (p − 1)·y)·σ(−x)]   (σ(x) − y when w = p = 1),

    then the mean over every element, or the sum (or, reduction='none', each element's).
    """

    def __init__(self, weight=None, *, reduction: str = "mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", None if weight is None else cast_input(self, weight).copy())
        self.register_buffer(
            "pos_weight", None if pos_weight is None else cast_input(self, pos_weight).copy()
        )

    def forward(self, input, target):
        x, y = self._same_shape(input, target)
        # Loss terms in float64: softplus of float32 scores would round small terms away.
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        scale = self._scale(x.size)
        lw = 1.0 if self.pos_weight is None else 1.0 + (self._broadcast("pos_weight", x) - 1) * y64
        w = 1.0 if self.weight is None else self._broadcast("weight", x)
        softplus_neg = np.logaddexp(0.0, -x64)  # −log σ(x)
        losses = w * ((1.0 - y64) * x64 + lw * softplus_neg)
        sigma_neg = np.exp(-np.logaddexp(0.0, x64))  # σ(−x), without overflow
        self._grad = (w * ((1.0 - y64) - lw * sigma_neg) * scale).astype(x.dtype)
        return self._result(losses.sum() * scale, losses, x.dtype)

    def _broadcast(self, name, x):
        """The buffer ``name`` as float64, broadcast against the input (torch's rule: weight
        to the input's shape, pos_weight along its last axis)."""
        value = getattr(self, name).astype(np.float64)
        try:
            return np.broadcast_to(value, x.shape)
        except ValueError:
            raise ValueError(
                f"BCEWithLogitsLoss expected {name} broadcastable to the input's shape "
                f"{x.shape}, got shape {value.shape}"
            ) from None

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
