"""Files that survive a crash mid-write, saved models, and state saved without pickle: the one module that
writes prefkit's files.

Every file prefkit writes goes to a temporary name beside its target and is renamed into place when complete,
so a reader sees the old file or the new one, never half of one; a model directory is written whole beside its
target and swapped in (`save_model`). Training state (optimizer moments, RNG
states, schedulers) is nested Python holding tensors: `save_state` splits it into a safetensors file (the
tensors) and a JSON file (everything else), so loading it can never execute code, unlike `torch.load` of a
pickle (docs/training.md, "Checkpoints").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary)` and rename the result to `path`; on any failure the temporary file is removed and
    `path` is untouched. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the result is an ordinary output file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, value: Any, indent: int | None = None) -> Path:
    """JSON, with NumPy scalars written as numbers."""
    return write_text(path, json.dumps(value, indent=indent, default=float))


def write_jsonl(rows, path: Path) -> Path:
    """One JSON object per line."""
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def progress(iterable, *, total: int, desc: str, unit: str = "batch"):
    """`iterable` with a progress bar on a terminal (stderr), and as it is when the output goes to a file, where a
    redrawn bar would fill a log with carriage returns."""
    import sys

    if not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def save_figure(figure, path: Path, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, atomically; the figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(figure)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' progress bars off for the duration (as they were before, after)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def save_model(model, tokenizer, directory: Path, extra: Callable[[Path], None] | None = None, **options) -> Path:
    """A model in Hugging Face format with its tokenizer (and whatever `extra(folder)` adds, e.g. a model card),
    written beside `directory` and moved into place only when complete; a failure (a full disk) leaves no
    half-written folder and the previous one intact. `options` go to `save_pretrained` (peft's
    `selected_adapters`)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # debris of an interrupted save
    try:
        with quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True, **options)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, directory)
    return directory


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


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


# ---- nested state without pickle: tensors to safetensors, the rest to JSON ----------------------------------

def save_state(directory: Path, name: str, state: Any) -> None:
    """Write `state` (dicts with any keys, lists, tuples, numbers, strings, None, tensors) as
    `name.safetensors` + `name.json` in `directory`."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    skeleton = _encode(state, tensors)
    directory = Path(directory)
    atomic_write(directory / f"{name}.safetensors",
                 lambda tmp: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp)))
    write_json(directory / f"{name}.json", skeleton)


def load_state(directory: Path, name: str, device="cpu") -> Any:
    from safetensors.torch import load_file

    directory = Path(directory)
    tensors = load_file(str(directory / f"{name}.safetensors"), device=str(device))
    return _decode(read_json(directory / f"{name}.json"), tensors)


def _encode(value: Any, tensors: dict) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value
        return {"tensor": key}
    if isinstance(value, dict):  # keys may be ints (optimizer state): keep them typed
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list": [_encode(v, tensors) for v in value]}
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars (RNG states)
        return {"numpy": value.tolist(), "dtype": str(value.dtype)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot save a {type(value).__name__} without pickle")


def _decode(node: Any, tensors: dict) -> Any:
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "dict" in node:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in node["dict"]}
    if "list" in node:
        return [_decode(v, tensors) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, tensors) for v in node["tuple"])
    if "numpy" in node:
        import numpy as np

        return np.asarray(node["numpy"], dtype=node["dtype"])
    return node["value"]
