"""Supervised fine-tuning on the shared engine: the next-token loss on the completion tokens of (prompt,
completion) pairs. The bundled task's reference policy is pre-trained with it (prefkit.tasks.reference_model), on
the optimizer step of `prefkit train`, `prefkit selfplay` and `prefkit judge train` (prefkit.train.engine):
fused AdamW, clipping, the non-finite guard and transformers' linear schedule with warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class SupervisedConfig:
    """The engine's settings for a supervised run, named as in TrainConfig."""

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 75
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    schedule: str = "linear"
    max_nonfinite_steps: int = 5
    seed: int = 0


def supervised_fit(model, sequences: list[tuple[list[int], list[int]]], pad_token_id: int, config: SupervisedConfig,
                   progress: Callable[[int, float], None] | None = None):
    """Fit `model` to `sequences` ((prompt ids, completion ids)) for `config.steps` steps; each step's batch is
    drawn with replacement by a generator seeded with `config.seed`, so the result is deterministic. The loss is
    the mean negative log-likelihood per completion token. `progress(step, loss)` is called after each step
    (0-based). Returns the model, in eval mode."""
    from prefkit.data.examples import Example, collate
    from prefkit.train.engine import Engine, PolicyLogps, make_accelerator

    examples = [Example.single(prompt, completion, True, row) for row, (prompt, completion) in enumerate(sequences)]
    accelerator = make_accelerator("no")
    policy = PolicyLogps(model, chunk_size=1024, packing=False, token_metrics=False)
    engine = Engine(accelerator, policy, config, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for step in range(config.steps):
        picks = torch.randint(len(examples), (config.batch_size,), generator=generator).tolist()
        batch = collate([examples[i] for i in picks], pad_token_id).to(accelerator.device)
        update = engine.step(step + 1, [batch], 1, _token_nll)
        if progress is not None:
            progress(step, update.metrics["loss"])
    return engine.model.eval()


def _token_nll(policy, batch) -> tuple[torch.Tensor, dict[str, float]]:
    logps, lengths, _ = policy(batch)
    loss = -logps.sum() / lengths.sum()
    return loss, {"loss": loss.item()}
