"""The self-play configuration: one dataclass, validated before anything loads (same loader as `prefkit train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefkit.errors import PrefkitError

PAIRINGS = ("all", "best_worst", "top2")


@dataclass
class SelfPlayConfig:
    model: str = ""
    output_dir: str = ""
    prompts: str = "task"  # "task" (the bundled task's train prompts) or a JSONL/JSON/CSV file with a "prompt" column
    eval_prompts: str | None = None  # default: the task's eval prompts, or the first 32 training prompts
    judge: str = "task"  # see prefkit.judges.load_judge: task, module:function, reward:PATH, pairwise:PATH
    loss: str = "mpo"
    loss_params: dict[str, Any] = field(default_factory=dict)
    # the game: magnet / reference refresh (MPO, COMAL); None = a fixed reference (INPO, SPPO, Nash-MD)
    refresh_every: int | None = None
    refresh_gap: float | None = None  # adaptive: refresh when the estimated regularised gap falls below this
    mixture_coef: float = 0.0  # Nash-MD: opponents sampled from π^(1−β)·π_ref^β with β = mixture_coef (0: none)
    # one iteration: sample K per prompt from π_t, judge, pair, fit E epochs
    iterations: int = 6
    prompts_per_iteration: int = 64
    samples_per_prompt: int = 4
    pairs: str = "all"
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 1e-5
    max_grad_norm: float = 1.0
    # generation
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    eval_samples: int = 1  # samples per eval prompt for the per-iteration win rates
    eval_limit: int = 64  # eval prompts used per iteration (the first ones)
    judge_chunk_size: int = 16  # prompts judged between two saves of the judged matrices
    # model and bookkeeping
    dtype: str = "float32"
    trust_remote_code: bool = False
    logprob_chunk_size: int = 1024
    packing: bool = True  # padding-free layout, each prompt once (prefkit.modeling.packing)
    fuse_modules: bool = True  # leaner RMSNorm / SwiGLU MLP autograd (prefkit.modeling.fused)
    seed: int = 0
    resume: bool = False
    progress: bool = True

    def validate(self) -> "SelfPlayConfig":
        from prefkit import losses

        for name in ("model", "output_dir"):
            if not getattr(self, name):
                raise PrefkitError(f"config: '{name}' is required")
        if self.pairs not in PAIRINGS:
            raise PrefkitError(f"config: 'pairs' must be one of {', '.join(PAIRINGS)} (got {self.pairs!r})")
        for name in ("iterations", "prompts_per_iteration", "epochs", "batch_size", "max_new_tokens", "eval_samples",
                     "eval_limit", "judge_chunk_size"):
            if getattr(self, name) < 1:
                raise PrefkitError(f"config: '{name}' must be >= 1 (got {getattr(self, name)})")
        if self.samples_per_prompt < 2:
            raise PrefkitError("config: 'samples_per_prompt' must be >= 2 (win rates need an opponent)")
        if not 0 <= self.mixture_coef <= 1:
            raise PrefkitError(f"config: 'mixture_coef' must be in [0, 1] (got {self.mixture_coef})")
        if self.refresh_every is not None and self.refresh_every < 1:
            raise PrefkitError(f"config: 'refresh_every' must be >= 1 or null (got {self.refresh_every})")
        spec = losses.get(self.loss)
        if spec.family not in ("self-play", "one-sided", "two-sided"):
            raise PrefkitError(f"config: loss '{self.loss}' ({spec.family}) cannot be trained from self-play pairs")
        spec.check_hyperparameters(self.loss_params)
        return self
