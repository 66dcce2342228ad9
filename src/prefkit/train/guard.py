"""The non-finite guard: a step whose loss or gradient norm is NaN or infinite changes no weight.

One bad step (an fp16 overflow, one pathological batch) is skipped, counted and logged; `limit` bad steps in a
row mean the run has diverged, and it stops with one line naming the steps instead of training on (and saving)
NaN weights. Checkpoints refuse non-finite weights too (prefkit.train.checkpoint), so the last good one is
never rotated away by bad ones.
"""

from __future__ import annotations

import math

from prefkit.errors import RunStopped


class NonFiniteGuard:
    def __init__(self, limit: int, skipped: int = 0):
        self.limit, self.skipped, self.in_a_row = limit, skipped, 0

    def allows(self, step: int, loss: float, grad_norm: float, last_good: str = "none") -> bool:
        """Whether step `step` (1-based) may update the weights; raises once `limit` steps in a row could not."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            first = step - self.in_a_row + 1
            raise RunStopped(f"training diverged: non-finite loss or gradient norm at steps {first}-{step} "
                             f"(loss {loss}, gradient norm {grad_norm}); weights left as at step {first - 1}, "
                             f"last checkpoint: {last_good}. Lower learning_rate or set max_grad_norm")
        return False
