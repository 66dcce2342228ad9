"""Reference policies for offline losses: precomputed and cached on disk, a frozen copy (with TR-DPO sync),
the PEFT base model with the adapter disabled, or none. Each answers one question: the reference log-probs
of the completions of a `prefkit.data.Batch`, in its row order (completion k of example b at row k·B + b)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch

from prefkit.io import atomic_write
from prefkit.modeling.logprobs import batch_logps

Tensor = torch.Tensor


class NoReference:
    """Reference-free losses (SimPO, CPO, ORPO, StaPO's default)."""

    def logps(self, batch) -> Tensor | None:
        return None


class FrozenCopy:
    """A second copy of the initial weights, frozen. `sync` mixes the policy in (TR-DPO, arXiv 2404.09656)."""

    def __init__(self, model, chunk_size: int, packing: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.chunk_size, self.packing = chunk_size, packing

    @torch.no_grad()
    def logps(self, batch) -> Tensor:
        return batch_logps(self.model, batch, self.chunk_size, self.packing).logps

    @torch.no_grad()
    def sync(self, policy, alpha: float) -> None:
        for ref, new in zip(self.model.parameters(), policy.parameters()):
            ref.mul_(1 - alpha).add_(new.detach(), alpha=alpha)


class DisabledAdapter:
    """With LoRA, the reference is the base model: the adapter switched off, no second copy in memory."""

    def __init__(self, peft_model, chunk_size: int, packing: bool = True):
        self.peft_model = peft_model
        self.chunk_size, self.packing = chunk_size, packing

    @torch.no_grad()
    def logps(self, batch) -> Tensor:
        with self.peft_model.disable_adapter():
            return batch_logps(self.peft_model, batch, self.chunk_size, self.packing).logps


class Precomputed:
    """Reference log-probs of every example, computed once before training: a [N, K] table (one row per example,
    its K completions in order) looked up by example index."""

    def __init__(self, table: Tensor, cache_hit: bool, path: Path | None):
        self.table, self.cache_hit, self.path = table, cache_hit, path

    def logps(self, batch) -> Tensor:
        rows = self.table[batch.index.cpu()]  # [B, K] -> completion-major, as the batch's rows
        return rows.t().reshape(-1).to(batch.input_ids.device)


def model_fingerprint(name_or_path: str) -> str:
    """Identifies the weights: file names, sizes and mtimes of a local directory, or the hub id."""
    path = Path(name_or_path)
    if not path.is_dir():
        return f"hub:{name_or_path}"
    files = sorted(p for p in path.iterdir() if p.is_file())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def cache_path(cache_dir: str | None, *parts: str) -> Path:
    root = Path(cache_dir or os.environ.get("PREFKIT_CACHE") or Path.home() / ".cache" / "prefkit")
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return root / "reference" / f"{key}.safetensors"


def load_cached(path: Path) -> Tensor | None:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["logps"] if path.is_file() else None
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None


def save_cached(path: Path, table: Tensor) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({"logps": table.contiguous()}, str(tmp)))
