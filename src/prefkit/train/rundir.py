"""Run directories: one run per directory, continued only with the settings that made it.

Before anything loads, `open_run` checks that the output directory can be written and decides what to do with
an earlier run found there: continue it (`--resume`, refused when the settings that determine the run have
changed, naming the keys), remove it and start afresh (`--overwrite`), or stop with a message naming the
directory, touching nothing. The settings are fingerprinted in `run.json` as the reference cache fingerprints
its inputs: every config key that changes what the run computes, plus the identity of the model and data
files. A resumed self-play run therefore never reuses samples, judgements or log-prob tables made under other
settings (docs/training.md, "Run directories").
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from prefkit.errors import PrefkitError
from prefkit.io import read_json, write_json

RUN_FILE = "run.json"
# What a prefkit run writes at the top of its directory; `--overwrite` removes these and nothing else.
RUN_ENTRIES = ("run.json", "metrics.jsonl", "checkpoints", "final", "final.tmp", "merged", "merged.tmp",
               "skipped_rows.jsonl",
               "tensorboard", "wandb", "state.json", "magnet", "magnet.tmp", "plots", "report.html", "report.md")
RUN_PATTERNS = ("iter-*", "eval-*.json")
# Keys that change only how a run is watched or stored, never what it computes.
BOOKKEEPING = {"resume", "overwrite", "progress", "report_to", "project", "run_name", "logging_steps",
               "logging_first_step", "eval_prefix", "eval_steps",
               "save_steps", "keep_checkpoints", "keep_policies", "cache_dir", "iterations", "judge_chunk_size",
               "max_nonfinite_steps", "output_dir", "push_to_hub", "hub_model_id", "hub_private_repo", "merge_lora"}


def open_run(config, command: str, main: bool = True) -> Path:
    """Check and claim `config.output_dir` for a run of `command` (train / selfplay); returns it."""
    out = Path(config.output_dir)
    _check_writable(out)
    if not main:  # the main process decides; the others would race with its writes
        return out
    settings = fingerprint(config, command)
    earlier = earlier_run(out)
    if earlier and config.resume:
        _check_same_settings(out, settings, _plain(asdict(type(config)())))
    elif earlier and config.overwrite:
        remove_run(out)
    elif earlier:
        raise PrefkitError(f"{out} holds an earlier run ({earlier}); continue it with --resume, or start afresh "
                           "with --overwrite (removes that run's files), or choose another --output-dir")
    write_json(out / RUN_FILE, settings)
    return out


def fingerprint(config, command: str) -> dict:
    from prefkit.modeling.reference import model_fingerprint

    values = {k: v for k, v in asdict(config).items() if k not in BOOKKEEPING}
    files = {key: model_fingerprint(str(values[key])) for key in ("model", "data", "prompts")
             if isinstance(values.get(key), str) and values[key]}
    if isinstance(values.get("data"), list):  # a mixture: each of its sources
        files.update({f"data[{i}]": model_fingerprint(str(entry.get("path"))) for i, entry in enumerate(values["data"])})
    return {"command": command, "settings": _plain(values), "files": files}


def earlier_run(out: Path) -> str | None:
    """The first entry of an earlier prefkit run in `out`, or None. A run that stopped before its first result
    (bad data, say) left only its fingerprint and skipped rows: starting again over those loses nothing."""
    if not out.is_dir():
        return None
    for name in RUN_ENTRIES:
        if name not in ("run.json", "skipped_rows.jsonl") and (out / name).exists():
            return name
    for pattern in RUN_PATTERNS:
        found = sorted(out.glob(pattern))
        if found:
            return found[0].name
    return None


def remove_run(out: Path) -> None:
    for entry in [out / name for name in RUN_ENTRIES] + [p for pattern in RUN_PATTERNS for p in out.glob(pattern)]:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _check_same_settings(out: Path, settings: dict, defaults: dict) -> None:
    """Refuse --resume when a setting changed; a key the earlier run did not record (a prefkit that had no such
    setting yet) counts as unchanged while it has its default."""
    path = out / RUN_FILE
    if not path.is_file():  # written by a prefkit that kept no fingerprint: nothing to compare
        return
    try:
        before = read_json(path)
    except ValueError:
        raise PrefkitError(f"{path}: not readable JSON; cannot check that --resume continues the same run") from None
    if before.get("command") != settings["command"]:
        raise PrefkitError(f"{out} holds a `prefkit {before.get('command')}` run, not `prefkit {settings['command']}`")
    changed = [k for k in sorted(set(before["settings"]) | set(settings["settings"]))
               if before["settings"].get(k, defaults.get(k)) != settings["settings"].get(k)]
    changed += [f"{k} (its files changed)" for k in sorted(settings["files"])
                if before.get("files", {}).get(k) != settings["files"][k] and k not in changed]
    if changed:
        shown = "; ".join(f"{k}: {before['settings'].get(k)!r} -> {settings['settings'].get(k)!r}"
                          if k in settings["settings"] else k for k in changed)
        raise PrefkitError(f"--resume: the settings of the run in {out} differ: {shown}. Resume with the same "
                           "settings, or start afresh with --overwrite")


def _check_writable(out: Path) -> None:
    """Create `out` (and its parents) or say in one line why it cannot be a run directory."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise PrefkitError(f"output_dir {out}: {parent} is a file, not a directory")
        if parent.exists():
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PrefkitError(f"output_dir {out}: cannot create it ({error.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PrefkitError(f"output_dir {out}: {os.strerror(errno.EACCES).lower()}")


def _plain(value):
    """Config values as JSON would give them back (tuples as lists), so a fingerprint compares equal to itself."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
