"""The on-disk state of a `preference_matrix` run, so that a judge failing (or a machine dying) at prompt k loses
nothing: the matrices of the prompts judged so far, written whole or not at all (temporary file + os.replace), with
a digest of the prompts and responses they belong to so a later call resumes only on the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from prefkit.io import atomic_write


def digest(prompts: list, responses: list[list]) -> str:
    """A fingerprint of the inputs (strings or message lists), stable across processes and machines."""
    text = json.dumps([prompts, responses], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load(path: Path, inputs: str, judge: str, k: int) -> list[np.ndarray]:
    """The matrices already judged for these inputs, in prompt order; none (with a warning) when the checkpoint is
    unreadable or belongs to other inputs."""
    if not path.exists():
        return []
    try:
        with np.load(path, allow_pickle=False) as saved:
            matrices, saved_inputs, saved_judge = saved["matrices"], str(saved["inputs"]), str(saved["judge"])
    except Exception as error:  # a foreign or damaged file: judging again is always safe
        warnings.warn(f"judge checkpoint {path} could not be read ({error}); judging every prompt again",
                      RuntimeWarning, stacklevel=3)
        return []
    if saved_inputs != inputs or matrices.shape[1:] != (k, k):
        warnings.warn(f"judge checkpoint {path} holds matrices for other prompts or responses; judging every prompt "
                      "again (and overwriting it)", RuntimeWarning, stacklevel=3)
        return []
    if saved_judge != judge:
        warnings.warn(f"judge checkpoint {path} was written by judge {saved_judge}; the remaining prompts are judged "
                      f"by {judge}", RuntimeWarning, stacklevel=3)
    return list(matrices)


def save(path: Path, matrices: list[np.ndarray], inputs: str, judge: str, k: int) -> None:
    """Replace the checkpoint by `matrices` (the first len(matrices) prompts), atomically."""
    stacked = np.stack(matrices) if matrices else np.zeros((0, k, k))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # a file object, so numpy does not append ".npz" to the name
            np.savez(file, matrices=stacked, inputs=np.array(inputs), judge=np.array(judge))

    atomic_write(path, write)
