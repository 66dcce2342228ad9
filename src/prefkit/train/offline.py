"""The offline training loop: one `fit` for every offline loss of the catalogue, on accelerate.

Read top to bottom: load data and model, choose the reference, then per optimizer step: micro-batches ->
policy log-probs -> reference log-probs -> `prefkit.losses.evaluate` -> backward; clip, step, log, evaluate,
checkpoint. Methods differ only by the loss name and its hyper-parameters.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from prefkit import losses
from prefkit.data import prepare
from prefkit.eval.curves import write_run_report
from prefkit.errors import PrefkitError, RunStopped
from prefkit.modeling.load import check_weights, load_model, load_tokenizer
from prefkit.modeling.logprobs import batch_logps
from prefkit.modeling import reference as references
from prefkit.train import checkpoint
from prefkit.train.batches import BatchOrder, BatchStatistics, collate, loss_inputs, mismatched
from prefkit.train.config import TrainConfig
from prefkit.train.guard import NonFiniteGuard
from prefkit.train.rundir import open_run
from prefkit.train.signals import StopRequests
from prefkit.train.model_card import save_final
from prefkit.train.tracking import Tracker


class PolicyLogps(nn.Module):
    """The policy as the loop sees it: a collated batch -> summed completion logps, lengths. Wrapping the
    log-prob engine in the module keeps the forward inside DDP, so gradients are synchronised."""

    def __init__(self, model, chunk_size: int, packing: bool):
        super().__init__()
        self.model, self.chunk_size, self.packing = model, chunk_size, packing

    def forward(self, batch):
        out = batch_logps(self.model, batch, self.chunk_size, self.packing)
        return out.logps, out.lengths


def resolve_reference(config: TrainConfig, specs: list[losses.LossSpec]) -> str:
    if config.reference != "auto":
        return config.reference
    needed = any(s.reference == "yes" for s in specs) or bool(config.loss_params.get("reference_based"))
    if not needed:
        return "none"
    if config.lora:
        return "adapter"
    return "copy" if config.ref_sync_steps else "precomputed"


def fit(config: TrainConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None) -> Path:
    """Train `config.model` on `config.data` with `config.loss`; returns the directory of the final model.
    A model object, tokenizer or `datasets.Dataset` given here (prefkit.Trainer) is used instead of loading one
    from the config's names."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # Several processes and no GPU: accelerate only goes multi-CPU (gloo) when told to use the CPU.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=multi_cpu)
    main = accelerator.is_main_process
    output_dir = open_run(config, "train", main)  # before anything loads: an earlier run is never clobbered
    check_weights(config.model)  # a damaged weights file is named now, not after the data is prepared
    set_seed(config.seed)
    names = [config.loss] if isinstance(config.loss, str) else list(config.loss)
    specs = [losses.get(n) for n in names]
    paired = specs[0].family != "unpaired"
    needs_kl = any("kl" in s.inputs for s in specs)

    if tokenizer is None:
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code,
                                   chat_template=config.chat_template)
    train, evaluation = _data(config, tokenizer, output_dir if main else None, names, paired,
                              (train_dataset, eval_dataset))
    order = BatchOrder(len(train.examples), config.batch_size, accelerator.num_processes,
                       accelerator.process_index, config.seed)
    steps_per_epoch = max(1, order.per_epoch // config.grad_accum)
    total_steps = config.total_steps(steps_per_epoch)  # checks the warmup against it, before the model loads

    model = load_model(config.model if model is None else model, dtype=config.dtype, trust_remote_code=config.trust_remote_code, lora=config.lora,
                       load_in_4bit=config.load_in_4bit, gradient_checkpointing=config.gradient_checkpointing,
                       fuse=config.fuse_modules)
    model.to(accelerator.device)
    mode = resolve_reference(config, specs)
    build = _REFERENCES[mode]
    reference = build(model, train, config, tokenizer, accelerator, paired, needs_kl)
    eval_reference = build(model, evaluation, config, tokenizer, accelerator, paired, needs_kl) if (
        evaluation and mode == "precomputed") else reference  # computed now, while the weights are the reference

    policy = PolicyLogps(model, config.logprob_chunk_size, config.packing)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay, fused=accelerator.device.type in ("cpu", "cuda"))
    scheduler = config.scheduler(optimizer, total_steps)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    # a moving reference is state too: resume must restore it
    saved = Saved(accelerator, output_dir, policy, optimizer, scheduler, config.keep_checkpoints,
                  {"reference": reference.model} if config.ref_sync_steps else {})

    state = checkpoint.TrainerState()
    previous = checkpoint.checkpoints(output_dir) if config.resume else []
    if previous:
        state = saved.load(previous[-1])
        accelerator.print(f"resumed from {previous[-1]} at step {state.step}")
    tracker = _tracker(config, output_dir, main, reference, state.step)

    statistics = BatchStatistics()
    vars(statistics).update(state.statistics)  # BCO's and β-DPO's running means continue where they were
    guard = NonFiniteGuard(config.max_nonfinite_steps, state.skipped_steps)
    step_of = Micro(accelerator, config, policy, reference, train, tokenizer, names, statistics, paired, needs_kl,
                    order)
    progress = _progress(total_steps, state.step, enabled=main and config.progress)
    window = Window()
    with StopRequests() as stop:
        while state.step < total_steps:
            metrics = step_of.gradients(state.step, window)
            grad_norm = float(accelerator.clip_grad_norm_(step_of.params, config.max_grad_norm or math.inf))
            bad, stopping = _agree(accelerator, not math.isfinite(metrics["loss"] + grad_norm), stop.requested)
            if guard.allows(state.step + 1, math.nan if bad else metrics["loss"], grad_norm, saved.last()):
                optimizer.step()
                window.add({**metrics, "grad_norm": grad_norm, "learning_rate": scheduler.get_last_lr()[0]})
            scheduler.step()  # a skipped step still uses up its place in the schedule, as AMP's skipped steps do
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.skipped_steps, state.statistics = guard.skipped, vars(statistics)
            if config.ref_sync_steps and state.step % config.ref_sync_steps == 0:
                reference.sync(accelerator.unwrap_model(policy).model, config.ref_mixup_alpha)
            progress.update(1)

            last = state.step == total_steps
            if state.step % config.logging_steps == 0 or last:
                logged = window.flush(accelerator, epoch=state.step * config.grad_accum / order.per_epoch,
                                      skipped_steps=guard.skipped)
                tracker.log(state.step, logged)
                if "loss" in logged:
                    progress.set_postfix(loss=f"{logged['loss']:.4f}")
            if evaluation and config.eval_steps and (state.step % config.eval_steps == 0 or last):
                tracker.log(state.step, _evaluate(policy, eval_reference, evaluation, tokenizer, config, names,
                                                  statistics, paired, needs_kl, accelerator))
            if config.save_steps and state.step % config.save_steps == 0 or stopping and not last:
                where = saved.save(state)
                if stopping:
                    progress.close()
                    tracker.close()
                    raise stop.stopped(f"checkpoint {where} at step {state.step} of {total_steps}")
    progress.close()
    tracker.close()
    return _save_final(accelerator, accelerator.unwrap_model(policy).model, tokenizer, config, train, output_dir,
                       state.step, saved.last())


def _data(config: TrainConfig, tokenizer, run_dir: Path | None, names: list, paired: bool, given=(None, None)):
    """(training data, evaluation data or None), tokenized, from the config's sources or the datasets `given`;
    the training data must be of the kind the loss reads. Skipped bad rows are recorded in `run_dir`."""
    options = dict(max_length=config.max_length, truncation=config.truncation, on_bad_rows=config.on_bad_rows)
    source, eval_source = (config.data if given[0] is None else given[0],
                           config.eval_data if given[1] is None else given[1])
    train = prepare(source, tokenizer, split=config.split, run_dir=run_dir, **options)
    if (train.kind == "preference") != paired:
        raise PrefkitError(f"loss {names} needs {'preference pairs' if paired else 'unpaired rows'}, but "
                           f"{train.source} holds {train.kind} data")
    evaluation = prepare(eval_source, tokenizer, split=config.eval_split, **options) if eval_source is not None \
        else None
    return train, evaluation


def _tracker(config: TrainConfig, output_dir: Path, main: bool, reference, step: int) -> Tracker:
    tracker = Tracker(output_dir, config.report_to, asdict(config), enabled=main)
    if main and isinstance(reference, references.Precomputed):
        tracker.log(step, {"reference/cache_hit": float(reference.cache_hit)})
        print(f"reference log-probs: {'cache hit' if reference.cache_hit else 'computed and cached'} "
              f"({reference.path})")
    return tracker


def _save_final(accelerator, trained, tokenizer, config, train, output_dir: Path, step: int, last: str) -> Path:
    """The final model in Hugging Face format with its card; never from non-finite weights."""
    if not checkpoint.all_finite(trained):
        raise RunStopped(f"the weights are not finite after step {step}; final model not written "
                         f"(last checkpoint: {last})")
    final = output_dir / "final"
    if accelerator.is_main_process:
        save_final(trained, tokenizer, final, config, train, metrics=_last_metrics(output_dir))
        write_run_report(output_dir, "train", config)
    accelerator.wait_for_everyone()
    return final


@dataclass
class Micro:
    """What one optimizer step's micro-batches need: the policy and its reference, the data and its order, the
    loss names and the running batch statistics they update."""

    accelerator: object
    config: TrainConfig
    policy: nn.Module
    reference: object
    train: object
    tokenizer: object
    names: list
    statistics: BatchStatistics
    paired: bool
    needs_kl: bool
    order: BatchOrder

    @property
    def params(self) -> list:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def gradients(self, step: int, window: "Window") -> dict[str, float]:
        """Backward over the `grad_accum` micro-batches of optimizer step `step` (gradients synchronised across
        processes on the last one only); returns their mean metrics and counts their tokens into `window`."""
        config, accelerator = self.config, self.accelerator
        metrics: dict[str, float] = {}
        for micro in range(config.grad_accum):
            indices = self.order.indices(step * config.grad_accum + micro)
            batch = collate(self.train.examples, indices, self.tokenizer.pad_token_id, self.paired, accelerator.device)
            sync = micro == config.grad_accum - 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(self.policy)), accelerator.autocast():
                loss, values = _batch_loss(self.policy, self.reference, batch, self.train.examples, indices,
                                           self.tokenizer, config, self.names, self.statistics, self.paired,
                                           self.needs_kl)
                accelerator.backward(loss / config.grad_accum)
            for key, value in values.items():
                metrics[key] = metrics.get(key, 0.0) + value / config.grad_accum
            window.tokens += int(batch["attention_mask"].sum())
        return metrics


class Window:
    """Metrics of the updates since the last log line, averaged when it is written; tokens/s over its time."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.updates, self.tokens, self.start = 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.updates += 1

    def flush(self, accelerator, **extra) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        logged = _reduce(accelerator, {k: v / self.updates for k, v in self.sums.items()})
        tokens = accelerator.reduce(torch.tensor(float(self.tokens), device=accelerator.device)).item()
        logged.update(tokens_per_second=tokens / elapsed, **extra)
        self.__init__()
        return logged


class Saved:
    """The run's checkpoints: what to save with the policy, where, and how many to keep."""

    def __init__(self, accelerator, output_dir, policy, optimizer, scheduler, keep, extra):
        self.accelerator, self.output_dir, self.keep = accelerator, output_dir, keep
        self.parts = (policy, optimizer, scheduler)
        self.extra = extra

    def save(self, state) -> Path:
        return checkpoint.save(self.accelerator, self.output_dir, state, self.keep, *self.parts, extra=self.extra)

    def load(self, path: Path):
        return checkpoint.load(self.accelerator, path, *self.parts, extra=self.extra)

    def last(self) -> str:
        done = checkpoint.checkpoints(self.output_dir)
        return str(done[-1]) if done else "none"


def _agree(accelerator, *flags: bool) -> list[bool]:
    """Each flag true on any process is true on all, so every process skips or stops at the same step."""
    if accelerator.num_processes == 1:
        return list(flags)
    values = accelerator.reduce(torch.tensor([float(f) for f in flags], device=accelerator.device), "sum")
    return [bool(v > 0) for v in values.tolist()]


def _batch_loss(policy, reference, batch, examples, indices, tokenizer, config, names, statistics, paired, needs_kl):
    logps, lengths = policy(batch)
    kl_pair = None
    if needs_kl:  # KTO's reference point: log-ratio on mismatched (prompt, completion) pairs, no gradient
        other = collate(mismatched(examples, indices), range(len(indices)), tokenizer.pad_token_id, False,
                        batch["input_ids"].device)
        other["index"] = batch["index"] + len(examples)
        with torch.no_grad():
            kl_pair = (policy(other)[0], reference.logps(other))
    inputs = loss_inputs(logps, lengths, reference.logps(batch), batch, paired, kl_pair)
    result = losses.evaluate(names if len(names) > 1 else names[0], weights=config.loss_weights,
                             **inputs, **statistics.inputs(), **config.loss_params)
    loss = (result.losses * batch["weights"]).mean()
    statistics.update(*_implicit_rewards(inputs, config.loss_params.get("beta", 0.1)))
    metrics = {"loss": loss.item(), **{k: v.item() for k, v in result.metrics.items()}}
    return loss, metrics


def _implicit_rewards(inputs: dict, beta: float):
    """β·(log π − log π_ref) of every completion in the batch (BCO's reward shift) and the DPO logit h of every
    pair (β-DPO's gap mean); None where the batch has no reference log-probs."""
    if "ref_logps" in inputs:  # unpaired
        return beta * (inputs["logps"] - inputs["ref_logps"]), None
    if "ref_chosen_logps" not in inputs:
        return None, None
    chosen = inputs["chosen_logps"] - inputs["ref_chosen_logps"]
    rejected = inputs["rejected_logps"] - inputs["ref_rejected_logps"]
    return beta * torch.cat([chosen, rejected]), chosen - rejected


@torch.no_grad()
def _evaluate(policy, reference, evaluation, tokenizer, config, names, statistics, paired, needs_kl, accelerator):
    size = config.eval_batch_size or config.batch_size
    order = BatchOrder(len(evaluation.examples), size, accelerator.num_processes, accelerator.process_index,
                       config.seed)
    totals: dict[str, float] = {}
    for m in range(order.per_epoch):
        indices = list(range(m * size, (m + 1) * size))  # fixed order for evaluation
        batch = collate(evaluation.examples, indices, tokenizer.pad_token_id, paired, accelerator.device)
        _, metrics = _batch_loss(policy, reference, batch, evaluation.examples, indices, tokenizer, config,
                                 names, BatchStatistics(), paired, needs_kl)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value / order.per_epoch
    return {f"eval/{k}": v for k, v in _reduce(accelerator, totals).items()}


def _reduce(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = accelerator.reduce(torch.tensor([metrics[k] for k in keys], device=accelerator.device), "mean")
    return dict(zip(keys, values.tolist()))


def _adapter_reference(model, data, config, *_):
    if not config.lora:
        raise PrefkitError("config: reference: adapter needs a LoRA adapter (set lora: {r: 16})")
    return references.DisabledAdapter(model, config.logprob_chunk_size, config.packing)


def _precomputed_reference(*args):
    from prefkit.train.precompute import precompute_reference

    return precompute_reference(*args)


# reference mode -> builder(model, data, config, tokenizer, accelerator, paired, needs_kl)
_REFERENCES = {
    "none": lambda *_: references.NoReference(),
    "copy": lambda model, data, config, *_: references.FrozenCopy(model, config.logprob_chunk_size,
                                                                   config.packing),
    "adapter": _adapter_reference,
    "precomputed": _precomputed_reference,
}


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def _last_metrics(output_dir: Path) -> dict:
    from prefkit.train.tracking import read_metrics

    records = [r for r in read_metrics(output_dir) if "loss" in r]
    return records[-1] if records else {}
