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

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from prefkit.data import prepare
from prefkit.data.examples import Batch, collate, pad_sequences
from prefkit.errors import PrefkitError, RunStopped
from prefkit.io import write_json
from prefkit.judges.calibration import pair_metrics, plot_reliability, reliability
from prefkit.judges.heads import HeadSettings, antisymmetric_sigmoid, preference_logits, soft_labels
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.modeling.load import DTYPES, add_lora, check_weights, from_pretrained, load_tokenizer
from prefkit.train import checkpoint
from prefkit.train.batches import BatchOrder
from prefkit.train.console import Console
from prefkit.train.engine import Checkpoints, Engine, Window, make_accelerator
from prefkit.train.rundir import open_run
from prefkit.train.signals import StopRequests
from prefkit.train.tracking import Tracker, external_trackers

COMMAND = "judge train"
SHOWN = {"loss": "loss", "accuracy": "acc", "learning_rate": "lr", "eval/accuracy": "eval acc",
         "eval/log_loss": "eval log-loss", "eval/ece": "eval ECE"}  # the console's metric line


class PairLogits(nn.Module):
    """The judge as the loop sees it: a batch of pairs -> s(x, chosen, rejected) [B]. The forward stays inside
    the module so that DDP synchronises its gradients."""

    def __init__(self, model, settings: HeadSettings):
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, batch: "JudgeBatch") -> torch.Tensor:
        pairs = batch.pairs
        outputs = self.model(input_ids=pairs.input_ids, attention_mask=pairs.attention_mask).logits
        chosen, rejected = outputs.float().chunk(2)
        prompt = None
        if batch.prompts is not None:  # the gate reads the prompt alone
            prompt = self.model(**batch.prompts).logits.float()
        return preference_logits(chosen, rejected, prompt, self.settings)


def load_backbone(config: JudgeTrainConfig, tokenizer, style: str | None = None):
    """The backbone as an `AutoModelForSequenceClassification` whose head has the judge's outputs (a causal LM
    checkpoint gets a fresh head on its last token), the settings (with the data's `style`) in its config, LoRA if
    asked."""
    from transformers import AutoModelForSequenceClassification

    settings = config.head(style)
    model = from_pretrained(AutoModelForSequenceClassification, config.model, "a transformers backbone",
                            num_labels=settings.num_labels, dtype=DTYPES[config.dtype],
                            trust_remote_code=config.trust_remote_code)
    settings.store(model.config)
    model.config.pad_token_id = tokenizer.pad_token_id  # the head finds each row's last token by it
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return add_lora(model, config.lora, task_type="SEQ_CLS") if config.lora else model


@dataclass
class JudgeBatch:
    """What the judge trains on: the pairs' batch (chosen rows, then rejected rows), their labels
    P(chosen ≻ rejected), and the prompts alone (input_ids, attention_mask) when the gate reads them."""

    pairs: Batch
    labels: torch.Tensor
    prompts: dict | None = None

    @property
    def attention_mask(self) -> torch.Tensor:  # the tokens the engine counts
        return self.pairs.attention_mask


def pair_batch(examples: list, indices, pad_token_id: int, settings: HeadSettings, device) -> JudgeBatch:
    """The pairs `examples[i]` for i in `indices`, their labels, and the prompts alone for the gate, on `device`."""
    chosen = [examples[i] for i in indices]
    pairs = collate(chosen, pad_token_id).to(device)
    prompts = pad_sequences([(e.prompt_ids, []) for e in chosen], pad_token_id, device) if settings.needs_prompt \
        else None
    return JudgeBatch(pairs, soft_labels(pairs), None if prompts is None else
                      {"input_ids": prompts["input_ids"], "attention_mask": prompts["attention_mask"]})


def pair_loss(logits: torch.Tensor, batch: JudgeBatch) -> torch.Tensor:
    """The pairwise log-loss: cross-entropy between σ(s) and the label, weighted by the rows' `weight`."""
    losses = F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype), reduction="none")
    return (losses * batch.pairs.weights.to(logits.dtype)).mean()


def fit(config: JudgeTrainConfig) -> Path:
    """Train the judge `config` describes on the training engine (prefkit.train.engine); returns the directory of
    the final model."""
    from accelerate.utils import set_seed

    trackers = external_trackers(config.report_to)
    accelerator = make_accelerator(config.mixed_precision, trackers, config.output_dir)
    main = accelerator.is_main_process
    output_dir = open_run(config, COMMAND, main)  # before anything loads
    check_weights(config.model)
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    train, evaluation = _data(config, tokenizer, output_dir if main else None)
    order = BatchOrder(len(train.examples), config.batch_size, accelerator.num_processes,
                       accelerator.process_index, config.seed)
    total_steps = config.total_steps(max(1, order.per_epoch // config.grad_accum))

    backbone = load_backbone(config, tokenizer, train.format.style)
    engine = Engine(accelerator, PairLogits(backbone, config.head()), config, total_steps)
    saved = Checkpoints(accelerator, output_dir, engine, config.keep_checkpoints, {})
    state = checkpoint.TrainerState()
    previous = checkpoint.checkpoints(output_dir) if config.resume else []
    if previous:
        state = saved.load(previous[-1])
        engine.guard.skipped = state.skipped_steps
    tracker = Tracker(accelerator, output_dir, asdict(config), enabled=main, trackers=trackers,
                      project=config.project, run_name=config.run_name)
    run = Run(config, engine, saved, tracker, tokenizer.pad_token_id, evaluation, output_dir)
    run.train(train.examples, order, state, total_steps)
    return _save_final(accelerator, engine.model, tokenizer, config, train, output_dir, state.step)


def _data(config: JudgeTrainConfig, tokenizer, run_dir: Path | None):
    options = dict(max_length=config.max_length, truncation=config.truncation, on_bad_rows=config.on_bad_rows)
    train = prepare(config.data, tokenizer, split=config.split, run_dir=run_dir, **options)
    evaluation = prepare(config.eval_data, tokenizer, split=config.eval_split, **options) if config.eval_data \
        else None
    for data in (train, evaluation):
        if data is not None and data.examples[0].kind != "pair":
            raise PrefkitError(f"a judge learns from preference pairs (prompt, chosen, rejected), but {data.source} "
                               f"holds {data.kind} data")
    return train, evaluation


class Run:
    """One training run's loop: what it steps (the engine), logs, evaluates and checkpoints."""

    def __init__(self, config: JudgeTrainConfig, engine: Engine, saved: Checkpoints, tracker: Tracker,
                 pad_token_id: int, evaluation, output_dir: Path):
        self.config, self.engine, self.saved, self.tracker = config, engine, saved, tracker
        self.accelerator, self.output_dir = engine.accelerator, output_dir
        self.pad_token_id, self.evaluation, self.settings = pad_token_id, evaluation, config.head()

    def train(self, examples: list, order: BatchOrder, state, total_steps: int) -> None:
        config, accelerator = self.config, self.accelerator
        console = Console(total_steps, state.step, enabled=accelerator.is_main_process and config.progress,
                          name="judge train", shown=SHOWN)
        window = Window()
        with StopRequests() as stop:
            while state.step < total_steps:
                micro = [order.indices(state.step * config.grad_accum + m) for m in range(config.grad_accum)]
                batches = (pair_batch(examples, indices, self.pad_token_id, self.settings, accelerator.device)
                           for indices in micro)
                update = self.engine.step(state.step + 1, batches, config.grad_accum, self.loss_of,
                                          stop_requested=stop.requested, last_good=self.saved.last())
                if update.applied:
                    window.add(update.metrics, grad_norm=update.grad_norm, learning_rate=update.learning_rate)
                window.tokens += update.tokens
                state.step, state.skipped_steps = state.step + 1, self.engine.guard.skipped
                console.advance()
                self.bookkeeping(state, total_steps, window, console)
                if update.stopping and state.step < total_steps:
                    where = self.saved.save(state)
                    console.close()
                    self.tracker.close()
                    raise stop.stopped(f"checkpoint {where} at step {state.step} of {total_steps}")
        console.close()
        self.tracker.close()

    def loss_of(self, judge, batch: JudgeBatch):
        """The batch's mean log-loss and its pairwise accuracy."""
        logits = judge(batch)
        loss = pair_loss(logits, batch)
        accuracy = ((logits > 0) == (batch.labels > 0.5)).float().mean().item()
        return loss, {"loss": loss.item(), "accuracy": accuracy}

    def bookkeeping(self, state, total_steps: int, window: Window, console: Console) -> None:
        """Log, evaluate and checkpoint when their steps come."""
        config, last = self.config, state.step == total_steps
        if state.step % config.logging_steps == 0 or last:
            logged = window.flush(self.accelerator, skipped_steps=state.skipped_steps)
            self.tracker.log(state.step, logged)
            console.metrics(state.step, logged)
        if self.evaluation is not None and (config.eval_steps and state.step % config.eval_steps == 0 or last):
            with window.pause():
                evaluated = self.eval_metrics(state.step)
            self.tracker.log(state.step, evaluated)
            console.metrics(state.step, evaluated)
        if config.save_steps and state.step % config.save_steps == 0:
            self.saved.save(state)

    @torch.no_grad()
    def eval_metrics(self, step: int) -> dict[str, float]:
        """eval/accuracy, eval/log_loss, eval/ece on the whole eval split; eval-judge.json and the reliability plot
        plots/reliability.png (both written atomically) on the main process."""
        judge = self.accelerator.unwrap_model(self.engine.policy)
        judge.eval()
        examples, size = self.evaluation.examples, self.config.batch_size
        probs, labels = [], []
        for start in range(0, len(examples), size):
            batch = pair_batch(examples, range(start, min(start + size, len(examples))), self.pad_token_id,
                               self.settings, self.accelerator.device)
            with self.accelerator.autocast():
                probs.append(antisymmetric_sigmoid(judge(batch).double()).cpu())
            labels.append(batch.labels.double().cpu())
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


def _save_final(accelerator, model, tokenizer, config: JudgeTrainConfig, train, output_dir: Path,
                step: int) -> Path:
    """The final judge in Hugging Face format with its model card; never from non-finite weights."""
    from prefkit.judges.card import save_judge
    from prefkit.train.tracking import read_metrics

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
