"""Checkpoints that survive a crash mid-write: everything goes to a temporary directory that is renamed into
place only when complete. A checkpoint holds weights (safetensors), optimizer, scheduler and RNG states (via
accelerate), and the trainer's own position in the data; the last K are kept."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

PREFIX = "step-"


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # completion + prompt tokens seen (this process)


def checkpoints(output_dir: Path) -> list[Path]:
    root = output_dir / "checkpoints"
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "trainer_state.json").is_file() and "." not in p.name]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def save(accelerator, output_dir: Path, state: TrainerState, keep: int) -> Path:
    final = output_dir / "checkpoints" / f"{PREFIX}{state.step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # debris of an interrupted save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path) -> TrainerState:
    accelerator.load_state(str(path))
    return TrainerState(**json.loads((path / "trainer_state.json").read_text()))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a completely written directory into place, replacing an older one only after it is complete."""
    backup = final.with_name(final.name + ".old")
    if backup.exists():
        shutil.rmtree(backup)
    if final.exists():
        os.replace(final, backup)
    os.replace(tmp, final)
    if backup.exists():
        shutil.rmtree(backup)
