"""The training engine that both loops drive (`prefkit train`'s offline loop and `prefkit selfplay`'s fits).

One optimizer step: backward over the micro-batches on accelerate (mixed precision, gradient accumulation with
gradients synchronised on the last micro-batch only, DDP / FSDP / DeepSpeed as configured), clip, agree across
processes on whether to skip or stop, the non-finite guard, AdamW (fused where the device has it) and the
learning-rate schedule of transformers' `get_scheduler`. The loops say what a batch is and what its loss is;
the engine never looks inside either. Also here: the logging window and the run's checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

Tensor = torch.Tensor

from prefkit.modeling.logprobs import TokenSums, batch_logps
from prefkit.modeling.probe import plan
from prefkit.train import checkpoint
from prefkit.train.guard import NonFiniteGuard
from prefkit.train.heap import give_back_free_pages


class PolicyLogps(nn.Module):
    """The policy as the loops see it: a collated batch -> summed completion logps, lengths, and the per-token
    sums of TRL's token metrics (`TokenSums`, see `token_metrics`; None when `token_metrics` is off). Wrapping the
    log-prob engine in the module keeps the forward inside DDP, so gradients are synchronised."""

    def __init__(self, model, chunk_size: int, packing: bool, token_metrics: bool = True):
        super().__init__()
        self.model, self.chunk_size, self.packing, self.token_metrics = model, chunk_size, packing, token_metrics
        # the log-prob engine's probe of the model (prefkit.modeling.probe) runs a backward pass: run it now, before
        # accelerate prepares this module, since inside FSDP2's sharded forward that backward reshards the weights
        plan(model)

    def forward(self, batch):
        out = batch_logps(self.model, batch, self.chunk_size, self.packing, statistics=self.token_metrics)
        return out.logps, out.lengths, out.tokens

    @property
    def _no_split_modules(self):
        """The model's block classes (a transformers model's own list): accelerate's FSDP TRANSFORMER_BASED_WRAP
        reads them from the module it prepares, this wrapper, and without them would shard the whole model as one
        unit, gathered whole for every forward."""
        return getattr(self.model, "_no_split_modules", None)


def token_metrics(tokens: TokenSums | None, lengths: Tensor, labels: Tensor | None, *,
                  accuracy: bool = True) -> dict[str, float]:
    """TRL 1.16's token metrics of one batch (DPOTrainer's and KTOTrainer's `_compute_loss`), each a mean over
    completion tokens: `entropy` over every row's; with row `labels` (True: chosen / desirable, False: rejected),
    `logits/chosen` and `logits/rejected` (the logits' mean over the vocabulary) over the chosen and the rejected
    rows' tokens, and with `accuracy` `mean_token_accuracy` (the share of tokens that are the argmax) over the
    chosen ones. A name with no tokens to average is left out, as KTOTrainer does."""
    if tokens is None:
        return {}
    means = {"entropy": (tokens.entropy, torch.ones_like(lengths))}
    if labels is not None:
        chosen = labels.to(lengths.dtype)
        means.update({"logits/chosen": (tokens.mean_logits, chosen),
                      "logits/rejected": (tokens.mean_logits, 1 - chosen)})
        if accuracy:
            means["mean_token_accuracy"] = (tokens.top1, chosen)
    sums = torch.stack([torch.stack([(values * rows).sum(), (lengths * rows).sum()])
                        for values, rows in means.values()])
    return {name: total / count for name, (total, count) in zip(means, sums.tolist()) if count > 0}  # one sync


def chosen_rows(batch) -> Tensor | None:
    """`token_metrics`' labels of a `prefkit.data.Batch`: its single completions' labels (K = 1), else True on
    each example's first completion (the chosen one of a pair, the best of a ranked list) and False on the others."""
    if batch.num_completions == 1:
        return batch.labels
    rows = batch.input_ids.shape[0]
    return torch.arange(rows, device=batch.input_ids.device) < rows // batch.num_completions


def make_accelerator(mixed_precision: str, trackers: list[str] = (), project_dir: str | None = None):
    """accelerate's Accelerator, logging to `trackers` (prefkit.train.tracking); with several processes and no
    GPU it only goes multi-CPU (gloo) when told to use the CPU. In one process, a run may follow another with
    other precision settings (a notebook, the demo): accelerate keeps its state process-wide, so it is cleared
    first, as transformers' Trainer does between runs."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=distributed and not torch.cuda.is_available(),
                       log_with=list(trackers) or None, project_dir=project_dir)


def make_scheduler(config, optimizer, total_steps: int):
    """transformers' scheduler named by the config's `schedule` (prefkit's `constant` keeps the warm-up), with its
    warm-up and, where the config has them, `schedule_kwargs` (TRL's lr_scheduler_kwargs)."""
    from transformers import get_scheduler

    from prefkit.train.config import SCHEDULE_NAMES, warmup_steps

    return get_scheduler(SCHEDULE_NAMES.get(config.schedule, config.schedule), optimizer,
                         num_warmup_steps=warmup_steps(config, total_steps), num_training_steps=total_steps,
                         scheduler_specific_kwargs=getattr(config, "schedule_kwargs", None) or None)


@dataclass
class Update:
    """What one optimizer step did: the micro-batches' mean metrics, the gradient norm and the learning rate it
    stepped with, whether the weights changed (the guard may skip a non-finite step), whether a stop was
    requested on any process, and the number of tokens it trained on."""

    metrics: dict[str, float]
    grad_norm: float
    learning_rate: float
    applied: bool
    stopping: bool
    tokens: int


class Engine:
    """AdamW and the schedule over a prepared `PolicyLogps`, stepped by `step`. `config` is either loop's
    configuration: both name these settings the same (learning_rate, weight_decay, schedule, warmup_steps,
    max_grad_norm, max_nonfinite_steps). `optimizer`: an AdamW prepared with `policy` before (`make_optimizer`;
    self-play's fits share one, since accelerate's FSDP2 prepares a model and its optimizer only together),
    restarted here as a fresh AdamW: its state cleared; without it the engine makes and prepares its own."""

    def __init__(self, accelerator, policy: nn.Module, config, total_steps: int, skipped_steps: int = 0, *,
                 optimizer=None):
        self.accelerator, self.config = accelerator, config
        adamw = make_optimizer(policy, config, accelerator) if optimizer is None else _unwrapped(optimizer)
        # on torch's AdamW itself, before accelerate wraps it (DeepSpeed's wrapper is no torch optimizer)
        self.scheduler = make_scheduler(config, adamw, total_steps)
        if optimizer is None:
            self.policy, self.optimizer = accelerator.prepare(policy, adamw)
        else:
            adamw.state.clear()  # its moments and step counts: the next step starts as a fresh AdamW's
            self.policy, self.optimizer = policy, optimizer
        self.guard = NonFiniteGuard(config.max_nonfinite_steps, skipped_steps)

    @property
    def params(self) -> list:
        return [p for p in self.policy.parameters() if p.requires_grad]

    @property
    def model(self):
        """The Hugging Face model being trained, unwrapped from DDP and friends."""
        return self.accelerator.unwrap_model(self.policy).model

    def step(self, number: int, micro_batches: Iterable[dict], count: int, loss_of: Callable, *,
             stop_requested: bool = False, last_good: str = "none") -> Update:
        """Optimizer step `number` (1-based) over `count` micro-batches; `loss_of(policy, batch)` returns the
        batch's mean loss and its metrics."""
        accelerator = self.accelerator
        metrics: dict[str, float] = {}
        tokens = 0
        for i, batch in enumerate(micro_batches):
            sync = i == count - 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(self.policy)), accelerator.autocast():
                loss, values = loss_of(self.policy, batch)
                self._give_back_free_pages()  # the forward pass's freed temporaries, before backward allocates
                accelerator.backward(loss / count)
            for key, value in values.items():
                metrics[key] = metrics.get(key, 0.0) + value / count
            tokens += int(batch.attention_mask.sum())
        clip = self.config.max_grad_norm or math.inf
        grad_norm = float(accelerator.clip_grad_norm_(self.params, clip))
        loss = metrics.get("loss", math.nan)
        bad, stopping = agree(accelerator, not math.isfinite(loss + grad_norm), stop_requested)
        applied = self.guard.allows(number, math.nan if bad else loss, grad_norm, last_good)
        learning_rate = self.learning_rate
        if applied:
            self.optimizer.step()
        self.scheduler.step()  # a skipped step still uses up its place in the schedule, as AMP's skipped steps do
        self.optimizer.zero_grad(set_to_none=True)
        self._give_back_free_pages()
        return Update(metrics, grad_norm, learning_rate, applied, stopping, tokens)

    def _give_back_free_pages(self) -> None:
        """On a CPU, the C heap's free pages go back to the system (prefkit.train.heap: it otherwise grows step
        by step); a GPU's memory is torch's own caching allocator's, and the host heap stays small."""
        if self.accelerator.device.type == "cpu":
            give_back_free_pages()

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        return self.scheduler.get_last_lr()[0]


def make_optimizer(policy: nn.Module, config, accelerator) -> torch.optim.AdamW:
    """AdamW over the policy's trainable weights (fused where the device has it), to prepare with the policy."""
    params = [p for p in policy.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                             fused=accelerator.device.type in ("cpu", "cuda"))


def _unwrapped(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (the schedule and the state live on it)."""
    return getattr(optimizer, "optimizer", optimizer)


class Window:
    """Metrics of the updates since the last log line, averaged when it is written, with the latest value of
    the settings that change from step to step (learning rate, gradient norm: TRL logs the current ones);
    tokens/s over the training time only (`pause` takes evaluation out of it)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.latest: dict[str, float] = {}
        self.updates, self.tokens, self.start, self.paused = 0, 0, time.perf_counter(), 0.0

    def add(self, metrics: dict[str, float], **latest: float) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.latest.update(latest)
        self.updates += 1

    @contextlib.contextmanager
    def pause(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - start

    def flush(self, accelerator, **extra) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start - self.paused, 1e-9)
        averages = {k: v / self.updates for k, v in self.sums.items()}
        logged = reduce_mean(accelerator, {**averages, **self.latest})
        tokens = accelerator.reduce(torch.tensor(float(self.tokens), device=accelerator.device)).item()
        logged.update(tokens_per_second=tokens / elapsed, **extra)
        self.__init__()
        return logged


class Checkpoints:
    """The run's checkpoints: what to save with the policy, where, and how many to keep."""

    def __init__(self, accelerator, output_dir: Path, engine: Engine, keep: int, extra: dict):
        self.accelerator, self.output_dir, self.keep, self.extra = accelerator, output_dir, keep, extra
        self.parts = (engine.policy, engine.optimizer, engine.scheduler)

    def save(self, state) -> Path:
        return checkpoint.save(self.accelerator, self.output_dir, state, self.keep, *self.parts, extra=self.extra)

    def load(self, path: Path):
        return checkpoint.load(self.accelerator, path, *self.parts, extra=self.extra)

    def last(self) -> str:
        done = checkpoint.checkpoints(self.output_dir)
        return str(done[-1]) if done else "none"


def agree(accelerator, *flags: bool) -> list[bool]:
    """Each flag true on any process is true on all, so every process skips or stops at the same step."""
    if accelerator.num_processes == 1:
        return list(flags)
    values = accelerator.reduce(torch.tensor([float(f) for f in flags], device=accelerator.device), "sum")
    return [bool(v > 0) for v in values.tolist()]


def reduce_sum(accelerator, count: int) -> float:
    """A per-process count summed over the processes."""
    if accelerator.num_processes == 1:
        return float(count)
    return accelerator.reduce(torch.tensor(float(count), device=accelerator.device), "sum").item()


def gather_objects(accelerator, value) -> list:
    """Every process's `value` (any picklable object), in rank order, on every process."""
    if accelerator.num_processes == 1:
        return [value]
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def reduce_mean(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """The mean of each metric over the processes."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = accelerator.reduce(torch.tensor([metrics[k] for k in keys], device=accelerator.device), "mean")
    return dict(zip(keys, values.tolist()))
