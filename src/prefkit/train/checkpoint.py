"""Checkpoints that survive a crash mid-write and load without pickle.

A checkpoint is a directory `checkpoints/step-NNNNNNNN/` written under a temporary name and renamed into place
only when complete. It holds what training changed, in safetensors and JSON only (`prefkit.io.save_state`):
the trainable weights (`model.safetensors`, named as in the model), the optimizer and scheduler states, each
process's RNG states, the trainer's position in the data and its running batch statistics, and any extra
modules the loop registers (TR-DPO's moving reference). The frozen weights come from the model named in the
config, whose identity the run's fingerprint checks (`prefkit.train.rundir`). The last K checkpoints are kept;
a checkpoint is never written from non-finite weights, so rotation can only drop older good ones.

Under FSDP2 (accelerate's `fsdp_version: 2`, torch's `fully_shard`) each process holds a shard of every weight
and of its AdamW moments: they are gathered into full tensors (torch.distributed.checkpoint's state-dict API,
which every process calls) and written by the main process as above, so a checkpoint or final model from a
sharded run is the same full, unsharded set of files as one from one process; loading hands each process its
shard back. Full state rather than accelerate's sharded files: one format for every launch, readable without a
process group, at the cost of gathering the weights on the main process's CPU at each save.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from prefkit.errors import PrefkitError, RunStopped
from prefkit.io import atomic_write, load_state, read_json, save_state, write_json
from prefkit.modeling.load import sharded

PREFIX = "step-"


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # whole tensors, moved to the CPU as they are gathered, kept on the main process only
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # completion + prompt tokens seen (this process)
    skipped_steps: int = 0  # updates skipped by the non-finite guard
    statistics: dict = field(default_factory=dict)  # running batch statistics (BCO, β-DPO)


def checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    done = [p for p in root.glob(f"{PREFIX}*") if (p / "trainer_state.json").is_file() and "." not in p.name]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def full_weights(module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full weights (`state_dict()`'s names) of a module FSDP2 shards, on the CPU of the main process (empty
    on the others); None when it is not sharded. Every process must call it: the shards are gathered."""
    if not sharded(module):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full_options())


def _saved_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of `module`: its trainable weights, full (every process calls this)."""
    trainable, full = trainable_state(module), full_weights(module)
    if full is None:
        return {k: v.detach().cpu().contiguous() for k, v in trainable.items()}
    return {k: v.contiguous() for k, v in full.items() if k in trainable}


def _optimizer_state(module: torch.nn.Module, optimizer) -> dict:
    """The optimizer's state; under FSDP2 its moments gathered full and keyed by weight name (collective)."""
    if not sharded(module):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, getattr(optimizer, "optimizer", optimizer), options=_full_options())


def _load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy full `weights` (a subset of the module's) into it; under FSDP2 each process keeps its shard."""
    if sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in weights:
                parameter.copy_(weights[name])


def _load_optimizer(module: torch.nn.Module, optimizer, state: dict) -> None:
    if not sharded(module):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, getattr(optimizer, "optimizer", optimizer), state,
                             options=StateDictOptions(full_state_dict=True))


def policy_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The trained weights in checkpoint `folder`, named as in the Hugging Face model (`state_dict()`'s keys;
    the checkpoint names them as attributes of the offline loop's PolicyLogps wrapper, `model.`...)."""
    return {k.removeprefix("model."): v for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}


def all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters() if p.is_floating_point())


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(accelerator, output_dir: Path, state: TrainerState, keep: int, policy, optimizer, scheduler,
         extra: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write checkpoint `step-{state.step}` and drop all but the last `keep`. Refuses non-finite weights."""
    final = Path(output_dir) / "checkpoints" / f"{PREFIX}{state.step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    model = accelerator.unwrap_model(policy)
    if not all_finite(model):
        raise RunStopped(f"step {state.step}: the weights are not finite; no checkpoint written "
                           f"(last good: {_last_name(output_dir)})")
    main = accelerator.is_main_process
    if main and tmp.exists():
        shutil.rmtree(tmp)  # debris of an interrupted save
    weights, optimizer_state = _saved_weights(model), _optimizer_state(model, optimizer)  # gathered when sharded
    accelerator.wait_for_everyone()
    try:
        if main:
            tmp.mkdir(parents=True)
            atomic_write(tmp / "model.safetensors", lambda file: save_file(weights, str(file)))
            save_state(tmp, "optimizer", optimizer_state)
            save_state(tmp, "scheduler", scheduler.state_dict())
            for name, module in (extra or {}).items():
                save_state(tmp, name, module.state_dict())
        accelerator.wait_for_everyone()
        save_state(tmp, f"rng-{accelerator.process_index}", _rng_state())  # each process its own streams
        accelerator.wait_for_everyone()
        if main:
            write_json(tmp / "trainer_state.json", asdict(state))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    except OSError as error:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise PrefkitError(f"could not write checkpoint {final}: {error.strerror or error} "
                           f"(last good: {_last_name(output_dir)})") from None
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path, policy, optimizer, scheduler,
         extra: dict[str, torch.nn.Module] | None = None) -> TrainerState:
    """Restore what `save` wrote; every file is safetensors or JSON, so nothing in it can run code."""
    # safetensors takes "cpu" but not the "cpu:0" of accelerate's multi-process CPU runs
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    try:
        model = accelerator.unwrap_model(policy)
        weights = load_file(str(path / "model.safetensors"), device=device)
        missing = set(trainable_state(model)) - set(weights)
        if missing:
            raise PrefkitError(f"{path}: checkpoint lacks weights for {sorted(missing)[0]} (not this model's)")
        _load_weights(model, weights)
        _load_optimizer(model, optimizer, load_state(path, "optimizer", device=device))
        scheduler.load_state_dict(load_state(path, "scheduler"))
        for name, module in (extra or {}).items():
            module.load_state_dict(load_state(path, name, device=device))
        _set_rng_state(load_state(path, f"rng-{accelerator.process_index}"))
        return TrainerState(**read_json(path / "trainer_state.json"))
    except PrefkitError:
        raise
    except Exception as error:  # safetensors, JSON and state-dict errors alike: the file is not what we wrote
        raise PrefkitError(f"{path}: cannot load this checkpoint ({error}); remove it to resume from an "
                           "earlier one") from None


def _last_name(output_dir: Path) -> str:
    done = checkpoints(output_dir)
    return str(done[-1]) if done else "none"
