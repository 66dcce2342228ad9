"""Where metrics go: `metrics.jsonl` in the run directory always (the reports and the model card read it), and
the experiment trackers accelerate supports (tensorboard, wandb, trackio, mlflow, comet_ml, clearml, dvclive,
swanlab, aim) when asked for in `report_to` and installed. Only the main process writes.

`report_to` takes transformers' values: a name, a list of names, "all" (every installed tracker) or "none";
"jsonl" names the file that is always written. `project` and `run_name` name the run where the tracker has
such names (TrainingArguments' keys).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefkit.errors import PrefkitError

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "clearml", "dvclive", "swanlab", "aim")
BACKENDS = ("jsonl", "none", "all", *TRACKERS)
_PACKAGE = {"tensorboard": "tensorboard", "comet_ml": "comet-ml"}  # where the pip name differs from the tracker's


def external_trackers(report_to: list[str]) -> list[str]:
    """The accelerate trackers `report_to` asks for, each checked to be installed (a one-line error if not)."""
    from accelerate.utils import imports

    available = {name: getattr(imports, f"is_{name}_available")() for name in TRACKERS}
    if "all" in report_to:
        return [name for name in TRACKERS if available[name]]
    wanted = [name for name in report_to if name in TRACKERS]
    for name in wanted:
        if not available[name]:
            raise PrefkitError(f"report_to: {name} needs `pip install {_PACKAGE.get(name, name)}`")
    return wanted


class Tracker:
    def __init__(self, accelerator, output_dir: Path, config: dict, *, enabled: bool, trackers: list[str] = (),
                 project: str = "prefkit", run_name: str | None = None):
        self.enabled, self.path, self.accelerator = enabled, Path(output_dir) / "metrics.jsonl", accelerator
        self.external = bool(trackers) and accelerator is not None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.external:
            named = {"name": run_name} if run_name else {}
            accelerator.init_trackers(project, config=_flat(config),
                                      init_kwargs={"wandb": {**named, "dir": str(output_dir)}, "trackio": named,
                                                   "mlflow": {"run_name": run_name} if run_name else {}})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:  # one complete line per record
            file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.external:
            self.accelerator.log(metrics, step=step)

    def close(self) -> None:
        if self.enabled and self.external:
            self.accelerator.end_training()


def _flat(config: dict) -> dict:
    """The config as trackers take it: numbers, strings and booleans; anything else as its string."""
    return {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in config.items()}


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
