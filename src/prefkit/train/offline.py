"""The offline training loop: one `fit` for every offline loss of the catalogue, on the shared engine.

Read top to bottom: `setup` loads data and model and chooses the reference; then per optimizer step
(`train_step`): micro-batches -> policy log-probs -> reference log-probs -> the objective (the loss and its
batch statistics, prefkit.losses.Objective) -> backward, clip, step (prefkit.train.engine); then `after_step`
logs, evaluates and checkpoints. Methods differ only by the loss name and its hyper-parameters: nothing here
names a loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prefkit import losses
from prefkit.data import Batch, prepare
from prefkit.eval.curves import write_run_report
from prefkit.errors import PrefkitError, RunStopped
from prefkit.io import progress
from prefkit.modeling.load import check_weights, load_model, load_tokenizer
from prefkit.modeling import reference as references
from prefkit.train import checkpoint
from prefkit.train.batches import BatchOrder, collate, loss_inputs, mismatched
from prefkit.train.config import TrainConfig
from prefkit.train.engine import (Checkpoints, Engine, PolicyLogps, Update, Window, make_accelerator, reduce_mean,
                                  reduce_sum, chosen_rows, token_metrics)
from prefkit.train.rundir import open_run
from prefkit.train.signals import StopRequests
from prefkit.train.model_card import save_final
from prefkit.train.console import Console
from prefkit.train.tracking import Tracker, external_trackers

FEEDS = {"pair": "pairs", "single": "labelled", "list": "lists"}  # Example.kind -> the loss kind it feeds (KINDS)


def resolve_reference(config: TrainConfig, objective: losses.Objective) -> str:
    if config.reference != "auto":
        return config.reference
    if not objective.reads_reference:
        return "none"
    if config.lora:
        return "adapter"
    return "copy" if config.ref_sync_steps else "precomputed"


@dataclass
class Run:
    """Everything the loop reads, built once by `setup` (torchtune's recipe state, without the framework)."""

    config: TrainConfig
    accelerator: object
    output_dir: Path
    objective: losses.Objective
    tokenizer: object
    train: object  # prepared training data (prefkit.data.prepare)
    evaluation: object | None
    order: BatchOrder
    total_steps: int
    engine: Engine
    reference: object  # prefkit.modeling.reference: logps(batch) of the reference policy, or None
    eval_reference: object
    checkpoints: Checkpoints
    state: checkpoint.TrainerState
    tracker: Tracker
    window: Window
    console: Console


def fit(config: TrainConfig, *, model=None, tokenizer=None, train_dataset=None, eval_dataset=None) -> Path:
    """Train `config.model` on `config.data` with `config.loss`; returns the directory of the final model.
    A model object, tokenizer or `datasets.Dataset` given here (prefkit.Trainer) is used instead of loading one
    from the config's names."""
    run = setup(config, model=model, tokenizer=tokenizer, datasets=(train_dataset, eval_dataset))
    with StopRequests() as stop:
        while run.state.step < run.total_steps:
            update = train_step(run, stop.requested)
            after_step(run, update)
            if update.stopping and run.state.step < run.total_steps:
                where = run.checkpoints.save(run.state)
                close(run)
                raise stop.stopped(f"checkpoint {where} at step {run.state.step} of {run.total_steps}")
    close(run)
    return _save_final(run)


def setup(config: TrainConfig, *, model=None, tokenizer=None, datasets=(None, None)) -> Run:
    """The run directory, data, model, reference, engine and trackers, in the order that fails cheapest first;
    `model`, `tokenizer` and `datasets` (train, eval), where given, replace what the config names."""
    from accelerate.utils import set_seed

    trackers = external_trackers(config.report_to)  # a tracker that is not installed is named now
    accelerator = make_accelerator(config.mixed_precision, trackers, config.output_dir)
    main = accelerator.is_main_process
    output_dir = open_run(config, "train", main)  # before anything loads: an earlier run is never clobbered
    check_weights(config.model)  # a damaged weights file is named now, not after the data is prepared
    set_seed(config.seed)
    objective = losses.Objective(config.loss, config.loss_weights, config.loss_params)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code,
                                   chat_template=config.chat_template)
    train, evaluation = _data(config, tokenizer, output_dir if main else None, objective, datasets)
    order = BatchOrder(len(train.examples), config.batch_size, accelerator.num_processes,
                       accelerator.process_index, config.seed)
    total_steps = config.total_steps(max(1, order.per_epoch // config.grad_accum))  # checks the warmup too

    model = load_model(config.model if model is None else model, dtype=config.dtype,
                       trust_remote_code=config.trust_remote_code, lora=config.lora, load_in_4bit=config.load_in_4bit,
                       gradient_checkpointing=config.gradient_checkpointing, fuse=config.fuse_modules,
                       cpu_matmul=config.cpu_matmul)
    model.to(accelerator.device)
    mode = resolve_reference(config, objective)
    build = lambda data: _reference(mode, model, data, config, accelerator, objective)  # noqa: E731
    reference = build(train)
    # computed now, while the weights are still the reference's
    eval_reference = build(evaluation) if evaluation and mode == "precomputed" else reference

    policy = PolicyLogps(model, config.logprob_chunk_size, config.packing, config.token_metrics)
    engine = Engine(accelerator, policy, config, total_steps)
    # a moving reference is state too: resume must restore it
    saved = Checkpoints(accelerator, output_dir, engine, config.keep_checkpoints,
                        {"reference": reference.model} if config.ref_sync_steps else {})
    state = _resume(config, output_dir, saved, engine, objective, accelerator)
    tracker = Tracker(accelerator, output_dir, asdict(config), enabled=main, trackers=trackers,
                      project=config.project, run_name=config.run_name)
    console = Console(total_steps, state.step, enabled=main and config.progress)
    run = Run(config, accelerator, output_dir, objective, tokenizer, train, evaluation, order, total_steps,
              engine, reference, eval_reference, saved, state, tracker, Window(), console)
    console.summary(_summary(run, mode))
    if isinstance(reference, references.Precomputed):
        tracker.log(state.step, {"reference/cache_hit": float(reference.cache_hit)})
    return run


def _summary(run: Run, reference_mode: str) -> dict:
    """What the start-up summary shows: what will be trained, on what, for how long."""
    config, processes = run.config, run.accelerator.num_processes
    params = list(run.engine.model.parameters())
    summary = {"loss": " + ".join(run.objective.names), "examples": len(run.train.examples)}
    if run.evaluation:
        summary["eval examples"] = len(run.evaluation.examples)
    summary.update({
        "steps": f"{run.total_steps:,} ({run.order.per_epoch // config.grad_accum:,} per epoch)",
        "batch": f"{config.batch_size} x {config.grad_accum} accumulation x {processes} processes = "
                 f"{config.batch_size * config.grad_accum * processes} per step",
        "parameters": f"{sum(p.numel() for p in params if p.requires_grad):,} trainable of "
                      f"{sum(p.numel() for p in params):,}",
        "reference": _reference_line(run.reference, reference_mode), "precision": f"{config.dtype} weights, "
        + ("no mixed precision" if config.mixed_precision == "no" else f"{config.mixed_precision} autocast"),
        "output": str(run.output_dir)})
    if run.state.step:
        summary["resumed at"] = f"step {run.state.step}"
    return summary


def _resume(config, output_dir, saved: Checkpoints, engine: Engine, objective, accelerator):
    state = checkpoint.TrainerState()
    previous = checkpoint.checkpoints(output_dir) if config.resume else []
    if previous:
        state = saved.load(previous[-1])
        accelerator.print(f"resumed from {previous[-1]} at step {state.step}")
    objective.load(state.statistics)  # BCO's and β-DPO's running statistics continue where they were
    engine.guard.skipped = state.skipped_steps
    return state


def _reference_line(reference, mode: str) -> str:
    if isinstance(reference, references.Precomputed):
        return f"precomputed, {'cache hit' if reference.cache_hit else 'computed and cached'} ({reference.path})"
    return mode


def train_step(run: Run, stop_requested: bool) -> Update:
    """One optimizer step over `grad_accum` micro-batches of the data's fixed order."""
    config, step = run.config, run.state.step
    micro = [run.order.indices(step * config.grad_accum + m) for m in range(config.grad_accum)]
    batches = (collate(run.train.examples, indices, run.tokenizer.pad_token_id, run.accelerator.device)
               for indices in micro)
    loss_of = lambda policy, batch: batch_loss(run, policy, batch, run.train.examples, run.reference)  # noqa: E731
    return run.engine.step(step + 1, batches, config.grad_accum, loss_of, stop_requested=stop_requested,
                           last_good=run.checkpoints.last())


def after_step(run: Run, update: Update) -> None:
    """Bookkeeping after step `state.step + 1`: state, the moving reference, the log line, evaluation, checkpoint."""
    config, state, engine = run.config, run.state, run.engine
    run.window.tokens += update.tokens
    state.tokens += update.tokens
    if update.applied:
        run.window.add(update.metrics, grad_norm=update.grad_norm, learning_rate=update.learning_rate)
    state.step += 1
    state.skipped_steps, state.statistics = engine.guard.skipped, run.objective.state()
    if config.ref_sync_steps and state.step % config.ref_sync_steps == 0:
        run.reference.sync(engine.model, config.ref_mixup_alpha)
    run.console.advance()
    last = state.step == run.total_steps
    if state.step % config.logging_steps == 0 or last or config.logging_first_step and state.step == 1:
        logged = run.window.flush(run.accelerator, epoch=state.step * config.grad_accum / run.order.per_epoch,
                                  skipped_steps=engine.guard.skipped,
                                  num_tokens=reduce_sum(run.accelerator, state.tokens))
        run.tracker.log(state.step, logged)
        run.console.metrics(state.step, logged)
    if run.evaluation and config.eval_steps and (state.step % config.eval_steps == 0 or last):
        with run.window.pause():
            evaluated = evaluate_loss(run)
        run.tracker.log(state.step, evaluated)
        run.console.metrics(state.step, evaluated)
    if config.save_steps and state.step % config.save_steps == 0 and not update.stopping:
        run.checkpoints.save(state)


def close(run: Run) -> None:
    run.console.close()
    run.tracker.close()


def _data(config: TrainConfig, tokenizer, run_dir: Path | None, objective: losses.Objective, given=(None, None)):
    """(training data, evaluation data or None), tokenized, from the config's sources or the datasets `given`;
    the training data must be of a kind that feeds the objective. Skipped bad rows are recorded in `run_dir`."""
    # scored lists stay whole for a listwise loss, else become pairs as `list_pairs` says
    options = dict(max_length=config.max_length, truncation=config.truncation, on_bad_rows=config.on_bad_rows,
                   list_pairs=None if "lists" in objective.kinds else config.list_pairs)
    source = config.data if given[0] is None else given[0]
    eval_source = config.eval_data if given[1] is None else given[1]
    train = prepare(source, tokenizer, split=config.split, run_dir=run_dir, **options)
    if FEEDS[train.examples[0].kind] not in objective.kinds:
        raise PrefkitError(f"loss {objective.names} needs {' or '.join(losses.KINDS[k] for k in objective.kinds)}, "
                           f"but {train.source} holds {train.kind} data")
    evaluation = prepare(eval_source, tokenizer, split=config.eval_split, **options) if eval_source is not None \
        else None
    return train, evaluation


def _save_final(run: Run) -> Path:
    """The final model in Hugging Face format with its card; never from non-finite weights."""
    trained = run.engine.model
    if not checkpoint.all_finite(trained):
        raise RunStopped(f"the weights are not finite after step {run.state.step}; final model not written "
                         f"(last checkpoint: {run.checkpoints.last()})")
    final = run.output_dir / "final"
    weights = checkpoint.full_weights(trained)  # under FSDP2, gathered from every process's shards; else None
    if run.accelerator.is_main_process:
        save_final(trained, run.tokenizer, final, run.config, run.train, metrics=_last_metrics(run.output_dir),
                   weights=weights)
        write_run_report(run.output_dir, "train", run.config)
    run.accelerator.wait_for_everyone()
    return final


def batch_loss(run: Run, policy, batch: Batch, examples: list, reference, training: bool = True):
    """(mean loss, metrics) of one collated batch: policy and reference log-probs -> the objective."""
    logps, lengths, tokens = policy(batch)
    inputs = loss_inputs(logps, lengths, reference.logps(batch), batch)
    if run.objective.needs_mismatched:  # KTO's reference point: mismatched (prompt, completion) pairs, no gradient
        indices = batch.index.tolist()
        other = collate(mismatched(examples, indices), range(len(indices)), run.tokenizer.pad_token_id,
                        batch.input_ids.device)
        other.index = batch.index + len(examples)
        with torch.no_grad():
            inputs.update(mismatched_logps=policy(other)[0], ref_mismatched_logps=reference.logps(other))
    result = run.objective(inputs, training=training)
    loss = (result.losses * batch.weights).mean()
    return loss, {"loss": loss.item(), **{k: v.item() for k, v in result.metrics.items()},
                  **token_metrics(tokens, lengths, chosen_rows(batch), accuracy=batch.num_completions > 1)}


@torch.no_grad()
def evaluate_loss(run: Run) -> dict[str, float]:
    """The objective's metrics over the evaluation data, in a fixed order, statistics frozen; as `eval/...`."""
    config, accelerator, data = run.config, run.accelerator, run.evaluation
    size = config.eval_batch_size or config.batch_size
    order = BatchOrder(len(data.examples), size, accelerator.num_processes, accelerator.process_index, config.seed)
    totals: dict[str, float] = {}
    for m in progress(range(order.per_epoch), total=order.per_epoch, desc="evaluate"):
        indices = list(range(m * size, (m + 1) * size))
        batch = collate(data.examples, indices, run.tokenizer.pad_token_id, accelerator.device)
        with accelerator.autocast():
            _, metrics = batch_loss(run, run.engine.policy, batch, data.examples, run.eval_reference, training=False)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value / order.per_epoch
    return {f"{config.eval_prefix}{k}": v for k, v in reduce_mean(accelerator, totals).items()}


def _reference(mode: str, model, data, config, accelerator, objective):
    """The reference policy of `mode` (prefkit.modeling.reference) for `data`."""
    if mode == "precomputed":
        from prefkit.train.precompute import precompute_reference

        return precompute_reference(model, data, config, accelerator, objective.needs_mismatched)
    if mode == "adapter" and not config.lora:
        raise PrefkitError("config: reference: adapter needs a LoRA adapter (set lora: {r: 16})")
    return REFERENCES[mode](model, config.logprob_chunk_size, config.packing)


REFERENCES = {  # reference mode -> the class that gives its log-probs (precomputed: see `_reference`)
    "none": lambda *_: references.NoReference(),
    "copy": references.FrozenCopy,
    "adapter": references.DisabledAdapter,
}


def _last_metrics(output_dir: Path) -> dict:
    from prefkit.train.tracking import read_metrics

    records = [r for r in read_metrics(output_dir) if "loss" in r]
    return records[-1] if records else {}
