"""Bounded disk for self-play runs: which iteration policies stay on disk.

Every iteration writes its policy to `iter-NNNN/policy/` (a full model: 14 GB for a 7B one in bfloat16), so a
long run would fill the disk. Resume reads two of them: the last completed
iteration's (π_t, where training continues) and the magnet's (the iteration that last refreshed it, named in
`state.json`); the initial model is read from `model`. `keep_policies: K` keeps the last K policies and the
magnet's, and removes the others; the samples, judged matrices, log-prob tables and eval answers stay (they
are small, and they are what makes a resumed iteration exact).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ITERATION = re.compile(r"iter-(\d{4,})$")


def policies_to_keep(state: dict, keep: int | None) -> set[int] | None:
    """The iterations whose policies must stay after `state["completed"]` iterations (None: all of them)."""
    if keep is None:
        return None
    done = state["completed"]
    return set(range(max(1, done - keep + 1), done + 1)) | {state["magnet"]}


def prune_policies(out: Path, state: dict, keep: int | None) -> list[int]:
    """Remove the iteration policies that neither resume nor `keep_policies` needs; returns their iterations.
    Called after state.json is written, so the iterations it names are never the ones removed. A policy is
    first renamed aside, so a kill during the removal leaves no half-deleted `policy/` behind."""
    wanted = policies_to_keep(state, keep)
    if wanted is None:
        return []
    removed = []
    for folder in sorted(out.glob("iter-*")):
        match = ITERATION.match(folder.name)
        if match is None or int(match.group(1)) in wanted or int(match.group(1)) > state["completed"]:
            continue
        aside = folder / "policy.removing"
        for path in (aside, folder / "policy", folder / "policy.tmp"):  # aside first: left by a killed removal
            if path.exists():
                if path != aside:
                    path.rename(aside)
                shutil.rmtree(aside)
                removed.append(int(match.group(1)))
    return sorted(set(removed))
