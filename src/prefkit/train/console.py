"""What a run prints: a start-up summary, then one metric line per logging step with the ETA. On a terminal a
progress bar redraws between those lines; when the output goes to a file there is no bar, only the lines, so a
log of a long run stays a log. Only the main process prints.
"""

from __future__ import annotations

import datetime
import sys
import time

# metric key -> the short name of the metric line, in the order shown; other keys are left to the trackers
SHOWN = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "acc", "learning_rate": "lr",
         "grad_norm": "grad", "tokens_per_second": "tok/s", "eval/loss": "eval loss",
         "eval/rewards/accuracies": "eval acc", "eval_loss": "eval loss", "eval_rewards/accuracies": "eval acc"}


class Console:
    def __init__(self, total: int, done: int = 0, *, enabled: bool = True, name: str = "train", unit: str = "step",
                 shown: dict[str, str] = SHOWN, stream=None):
        self.total, self.done, self.enabled, self.name, self.unit = total, done, enabled, name, unit
        self.shown = shown
        self.stream = stream or sys.stderr
        self.start, self.start_done = time.perf_counter(), done
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit=unit, dynamic_ncols=True, file=self.stream)

    def summary(self, items: dict) -> None:
        """One block before the first step: what will run (examples, steps, batch, parameters, ...)."""
        width = max(map(len, items), default=0)
        self.write("\n".join(f"{self.name}: {k:<{width}}  {_shown(v)}" for k, v in items.items()))

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        """The line of one logging step: the headline metrics and the ETA."""
        parts = [f"{short} {_shown(metrics[key])}" for key, short in self.shown.items() if key in metrics]
        self.write(f"{self.name} {self.unit} {step}/{self.total} | " + " | ".join(parts + [f"ETA {self.eta()}"]))

    def eta(self) -> str:
        done = self.done - self.start_done
        if done <= 0:
            return "?"
        left = (time.perf_counter() - self.start) / done * (self.total - self.done)
        return str(datetime.timedelta(seconds=round(left)))

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
