"""Files that survive a crash mid-write, and state saved without pickle.

Every file prefkit writes goes to a temporary name beside its target and is renamed into place when complete,
so a reader sees the old file or the new one, never half of one. Training state (optimizer moments, RNG
states, schedulers) is nested Python holding tensors: `save_state` splits it into a safetensors file (the
tensors) and a JSON file (everything else), so loading it can never execute code, unlike `torch.load` of a
pickle (docs/training.md, "Checkpoints").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)` and rename the result to `path`; on any failure the temporary file is removed and
    `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value))


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
