"""Running totals for a training epoch, shown in a tqdm progress bar (loss, accuracy, images/s).

The bar goes to stderr and hides itself when stderr is not a terminal (logs, CI, tests); the
totals are kept either way so the command line can print one summary line per epoch.
"""

from __future__ import annotations

import time

import numpy as np


class EpochProgress:
    """Accumulate loss and accuracy over an epoch's batches, updating a progress bar.

    ``update(loss, output, target)`` after each batch; ``loss`` is the batch mean.
    """

    def __init__(self, total_batches: int, description: str, enabled: bool | None = None):
        from tqdm import tqdm

        # disable=None lets tqdm hide the bar when stderr is not a terminal.
        self.bar = tqdm(
            total=total_batches,
            desc=description,
            unit="batch",
            leave=False,
            disable=None if enabled is None else not enabled,
            dynamic_ncols=True,
        )
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0
        self.start = time.perf_counter()

    def update(self, loss: float, output: np.ndarray, target: np.ndarray) -> None:
        n = len(target)
        self.loss_sum += loss * n
        self.correct += int(np.count_nonzero(output.argmax(axis=1) == target))
        self.seen += n
        # Refresh the text with the bar (tqdm throttles redraws), not on every call.
        self.bar.set_postfix(self._postfix(), refresh=False)
        self.bar.update(1)

    def _postfix(self) -> dict:
        return {
            "loss": f"{self.loss:.3f}",
            "acc": f"{self.accuracy:.1%}",
            "img/s": f"{self.images_per_second:.0f}",
        }

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def images_per_second(self) -> float:
        return self.seen / max(self.elapsed, 1e-9)

    def close(self) -> None:
        # One last redraw with the epoch's totals: a short epoch may end between throttled ones.
        self.bar.set_postfix(self._postfix())
        self.bar.close()
