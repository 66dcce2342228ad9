"""`prefkit judge train`: fit a Bradley-Terry reward model or a general preference model (heads.py) on pairwise
preference data, with the run machinery of `prefkit train` (run directories, atomic checkpoints and exact resume,
the non-finite guard, stop signals, trackers; prefkit.train) and its data pipeline (prefkit.data.prepare).

Read top to bottom: claim the run directory, prepare the data, load the backbone as a sequence classifier with
the judge's head, then per optimizer step: micro-batches -> preference logits s(x, chosen, rejected) ->
cross-entropy to the pair's label (1, or σ(margin) for a soft label) -> backward; clip, step, log, evaluate
(accuracy, log-loss, ECE, reliability plot), checkpoint. The final judge is a Hugging Face folder with a model
card, loadable as `reward:PATH` (bt) or `gpm:PATH` (gpm).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from prefkit.data import prepare
from prefkit.data.collate import collate_pairs, pad_sequences
from prefkit.errors import PrefkitError, RunStopped
from prefkit.io import write_json
from prefkit.judges.calibration import pair_metrics, plot_reliability, reliability
from prefkit.judges.heads import HeadSettings, antisymmetric_sigmoid, preference_logits, soft_labels
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.modeling.load import DTYPES, add_lora, check_weights, from_pretrained, load_tokenizer
from prefkit.train import checkpoint
from prefkit.train.batches import BatchOrder
from prefkit.train.guard import NonFiniteGuard
from prefkit.train.rundir import open_run
from prefkit.train.signals import StopRequests
from prefkit.train.tracking import Tracker

COMMAND = "judge train"


class PairLogits(nn.Module):
    """The judge as the loop sees it: a batch of pairs -> s(x, chosen, rejected) [B]. The forward stays inside
    the module so that DDP synchronises its gradients."""

    def __init__(self, model, settings: HeadSettings):
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, batch: dict) -> torch.Tensor:
        outputs = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        chosen, rejected = outputs.float().chunk(2)
        prompt = None
        if "prompt_ids" in batch:  # the gate reads the prompt alone
            prompt = self.model(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"]).logits.float()
        return preference_logits(chosen, rejected, prompt, self.settings)


def load_backbone(config: JudgeTrainConfig, tokenizer):
    """The backbone as an `AutoModelForSequenceClassification` whose head has the judge's outputs (a causal LM
    checkpoint gets a fresh head on its last token), the settings in its config, LoRA if asked."""
    from transformers import AutoModelForSequenceClassification

    settings = config.head()
    model = from_pretrained(AutoModelForSequenceClassification, config.model, "a transformers backbone",
                            num_labels=settings.num_labels, dtype=DTYPES[config.dtype],
                            trust_remote_code=config.trust_remote_code)
    settings.store(model.config)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head finds each row's last token by it
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return add_lora(model, config.lora, task_type="SEQ_CLS") if config.lora else model


def pair_batch(examples: list, indices, pad_token_id: int, settings: HeadSettings, device) -> dict:
    """collate_pairs' batch (chosen rows, then rejected rows), the pairs' labels, and the prompts alone for the
    gate."""
    chosen = [examples[i] for i in indices]
    batch = collate_pairs(chosen, pad_token_id)
    batch["labels"] = soft_labels(batch, len(chosen))
    if settings.needs_prompt:
        prompts = pad_sequences([(e.prompt_ids, []) for e in chosen], pad_token_id)
        batch["prompt_ids"], batch["prompt_mask"] = prompts["input_ids"], prompts["attention_mask"]
    return {k: v.to(device) for k, v in batch.items()}


def pair_loss(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The pairwise log-loss: cross-entropy between σ(s) and the label, weighted by the rows' `weight`."""
    losses = F.binary_cross_entropy_with_logits(logits, batch["labels"].to(logits.dtype), reduction="none")
    return (losses * batch["weights"].to(logits.dtype)).mean()


def fit(config: JudgeTrainConfig) -> Path:
    """Train the judge `config` describes; returns the directory of the final model."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=multi_cpu)
    output_dir = open_run(config, COMMAND, accelerator.is_main_process)  # before anything loads
    check_weights(config.model)
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    train, evaluation = _data(config, tokenizer, output_dir if accelerator.is_main_process else None)
    order = BatchOrder(len(train.examples), config.batch_size, accelerator.num_processes,
                       accelerator.process_index, config.seed)
    total_steps = config.total_steps(max(1, order.per_epoch // config.grad_accum))

    judge = PairLogits(load_backbone(config, tokenizer), config.head()).to(accelerator.device)
    optimizer = torch.optim.AdamW([p for p in judge.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.schedule if config.schedule != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)
    judge, optimizer = accelerator.prepare(judge, optimizer)
    parts = (judge, optimizer, scheduler)
    state = checkpoint.TrainerState()
    previous = checkpoint.checkpoints(output_dir) if config.resume else []
    if previous:
        state = checkpoint.load(accelerator, previous[-1], *parts)
        accelerator.print(f"resumed from {previous[-1]} at step {state.step}")
    run = Run(accelerator, config, output_dir, parts, tokenizer.pad_token_id, evaluation)
    run.train(train.examples, order, state, total_steps)
    return _save_final(accelerator, accelerator.unwrap_model(judge).model, tokenizer, config, train, output_dir,
                       run.tracker, state.step)


def _data(config: JudgeTrainConfig, tokenizer, run_dir: Path | None):
    options = dict(max_length=config.max_length, truncation=config.truncation, on_bad_rows=config.on_bad_rows)
    train = prepare(config.data, tokenizer, split=config.split, run_dir=run_dir, **options)
    evaluation = prepare(config.eval_data, tokenizer, split=config.eval_split, **options) if config.eval_data \
        else None
    for data in (train, evaluation):
        if data is not None and data.kind != "preference":
            raise PrefkitError(f"a judge learns from preference pairs (prompt, chosen, rejected), but {data.source} "
                               f"holds {data.kind} data")
    return train, evaluation


class Run:
    """One training run's loop state: what it steps (judge, optimizer, scheduler), logs and evaluates."""

    def __init__(self, accelerator, config: JudgeTrainConfig, output_dir: Path, parts, pad_token_id: int,
                 evaluation):
        self.accelerator, self.config, self.output_dir, self.parts = accelerator, config, output_dir, parts
        self.pad_token_id, self.evaluation = pad_token_id, evaluation
        self.settings = config.head()
        self.tracker = Tracker(output_dir, config.report_to, asdict(config), enabled=accelerator.is_main_process)

    def train(self, examples: list, order: BatchOrder, state, total_steps: int) -> None:
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        judge, optimizer, scheduler = self.parts
        guard = NonFiniteGuard(config.max_nonfinite_steps, state.skipped_steps)
        progress = tqdm(total=total_steps, initial=state.step, desc="judge train", unit="step", dynamic_ncols=True,
                        disable=not (accelerator.is_main_process and config.progress))
        window: dict[str, float] = {}
        with StopRequests() as stop:
            while state.step < total_steps:
                metrics = self.gradients(examples, order, state.step)
                params = [p for p in judge.parameters() if p.requires_grad]
                grad_norm = float(accelerator.clip_grad_norm_(params, config.max_grad_norm or math.inf))
                loss, stopping = self.agree(metrics["loss"], stop.requested)
                if guard.allows(state.step + 1, loss, grad_norm, self.last()):
                    optimizer.step()
                    for key, value in {**metrics, "grad_norm": grad_norm,
                                       "learning_rate": scheduler.get_last_lr()[0]}.items():
                        window[key] = window.get(key, 0.0) + value
                    window["updates"] = window.get("updates", 0) + 1
                scheduler.step()  # a skipped step keeps its place in the schedule, as in `prefkit train`
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.skipped_steps = guard.skipped
                progress.update(1)
                self.bookkeeping(state, total_steps, window, progress)
                if stopping and state.step < total_steps:
                    where = checkpoint.save(accelerator, self.output_dir, state, config.keep_checkpoints, *self.parts)
                    progress.close()
                    self.tracker.close()
                    raise stop.stopped(f"checkpoint {where} at step {state.step} of {total_steps}")
        progress.close()

    def gradients(self, examples: list, order: BatchOrder, step: int) -> dict[str, float]:
        """Backward over the `grad_accum` micro-batches of optimizer step `step`; their mean loss and accuracy."""
        config, accelerator, judge = self.config, self.accelerator, self.parts[0]
        totals = {"loss": 0.0, "accuracy": 0.0}
        for micro in range(config.grad_accum):
            batch = pair_batch(examples, order.indices(step * config.grad_accum + micro), self.pad_token_id,
                               self.settings, accelerator.device)
            with accelerator.autocast():
                logits = judge(batch)
                loss = pair_loss(logits, batch)
            accelerator.backward(loss / config.grad_accum)
            totals["loss"] += loss.item() / config.grad_accum
            right = (logits > 0) == (batch["labels"] > 0.5)
            totals["accuracy"] += right.float().mean().item() / config.grad_accum
        return totals

    def agree(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The mean loss over processes (non-finite if any process's is) and whether any process must stop, so
        every process skips or stops at the same step."""
        if self.accelerator.num_processes == 1:
            return loss, stop
        values = self.accelerator.reduce(torch.tensor([loss, float(stop)], device=self.accelerator.device), "mean")
        return float(values[0]), bool(values[1] > 0)

    def bookkeeping(self, state, total_steps: int, window: dict, progress) -> None:
        """Log, evaluate and checkpoint when their steps come."""
        config, last = self.config, state.step == total_steps
        if state.step % config.logging_steps == 0 or last:
            updates = window.pop("updates", 0)
            logged = {k: v / updates for k, v in window.items()} if updates else {}
            self.tracker.log(state.step, {**logged, "skipped_steps": state.skipped_steps})
            window.clear()
            if "loss" in logged:
                progress.set_postfix(loss=f"{logged['loss']:.4f}")
        if self.evaluation is not None and (config.eval_steps and state.step % config.eval_steps == 0 or last):
            self.tracker.log(state.step, self.evaluate(state.step))
        if config.save_steps and state.step % config.save_steps == 0:
            checkpoint.save(self.accelerator, self.output_dir, state, config.keep_checkpoints, *self.parts)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """eval/accuracy, eval/log_loss, eval/ece on the whole eval split; eval-judge.json and the reliability plot
        plots/reliability.png (both written atomically) on the main process."""
        judge = self.accelerator.unwrap_model(self.parts[0])
        judge.eval()
        examples, size = self.evaluation.examples, self.config.batch_size
        probs, labels = [], []
        for start in range(0, len(examples), size):
            batch = pair_batch(examples, range(start, min(start + size, len(examples))), self.pad_token_id,
                               self.settings, self.accelerator.device)
            with self.accelerator.autocast():
                probs.append(antisymmetric_sigmoid(judge(batch).double()).cpu())
            labels.append(batch["labels"].double().cpu())
        judge.train()
        probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
        metrics = pair_metrics(probs, labels, self.config.calibration_bins)
        if self.accelerator.is_main_process:
            table = reliability(probs, labels, self.config.calibration_bins)
            write_json(self.output_dir / "eval-judge.json", {"step": step, "pairs": len(examples), **metrics,
                                                              "reliability": table})
            plot_reliability(table, self.output_dir / "plots" / "reliability.png",
                             f"{self.config.kind} judge, step {step}: ECE {metrics['ece']:.3f}")
        return {f"eval/{k}": v for k, v in metrics.items()}

    def last(self) -> str:
        done = checkpoint.checkpoints(self.output_dir)
        return str(done[-1]) if done else "none"


def _save_final(accelerator, model, tokenizer, config: JudgeTrainConfig, train, output_dir: Path, tracker,
                step: int) -> Path:
    """The final judge in Hugging Face format with its model card; never from non-finite weights."""
    from prefkit.judges.card import save_judge
    from prefkit.train.tracking import read_metrics

    tracker.close()
    if not checkpoint.all_finite(model):
        raise RunStopped(f"the weights are not finite after step {step}; final judge not written")
    final = output_dir / "final"
    if accelerator.is_main_process:
        if hasattr(model, "merge_and_unload"):  # LoRA: the judge is one plain model, loadable without peft
            model = model.merge_and_unload()
        evaluated = [r for r in read_metrics(output_dir) if any(k.startswith("eval/") for k in r)]
        save_judge(model, tokenizer, final, config, train, evaluated[-1] if evaluated else {})
    accelerator.wait_for_everyone()
    return final
