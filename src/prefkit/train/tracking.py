"""Where metrics go: a JSONL file in the run directory always, tensorboard and wandb when installed and asked
for, and a progress bar with ETA. Only the main process writes."""

from __future__ import annotations

import json
from pathlib import Path

from prefkit.errors import PrefkitError

BACKENDS = ("jsonl", "tensorboard", "wandb")


class Tracker:
    def __init__(self, output_dir: Path, report_to: list[str], config: dict, enabled: bool):
        unknown = set(report_to) - set(BACKENDS)
        if unknown:
            raise PrefkitError(f"config: report_to has '{sorted(unknown)[0]}' (choose from {', '.join(BACKENDS)})")
        self.enabled, self.path = enabled, output_dir / "metrics.jsonl"
        self.tensorboard = self.wandb = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise PrefkitError("report_to: tensorboard needs `pip install tensorboard`") from None
            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError:
                raise PrefkitError("report_to: wandb needs `pip install wandb`") from None
            self.wandb = wandb.init(project="prefkit", config=config, dir=str(output_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:  # one complete line per record, flushed at close
            file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tensorboard:
            for key, value in metrics.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
