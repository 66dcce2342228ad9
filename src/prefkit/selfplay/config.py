"""The self-play configuration: one dataclass, validated before anything loads (same loader as `prefkit train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefkit.modeling.load import DTYPES
from prefkit.modeling.matmul import CPU_MATMUL
from prefkit.modeling.vllm_generator import adapter_problems as vllm_adapter_problems
from prefkit.modeling.vllm_generator import problems as vllm_problems
from prefkit.selfplay.distributed import launch_problems
from prefkit.train.tracking import BACKENDS
from prefkit.train.validation import (Limit, above, adapter_problems, at_least, check_fields, hub_problems,
                                      loss_problems, raise_problems, within)

PAIRINGS = ("auto", "all", "best_worst", "top2", "canonical")
WINRATES = ("auto", "exact", "sampled", "weighted")
SELFPLAY_FEEDS = ("selfplay-pairs", "selfplay-singles")  # the example kinds it builds (prefkit.losses.KINDS)
GENERATORS = ("hf", "vllm")


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
    eta_final: float | None = None  # η decays geometrically from loss_params.eta to this over the iterations
    mixture_coef: float = 0.0  # Nash-MD: opponents sampled from π^(1−β)·π_ref^β with β = mixture_coef (0: none)
    # one iteration: sample K per prompt from π_t, judge, pair, fit E epochs
    iterations: int = 6
    prompts_per_iteration: int = 64
    samples_per_prompt: int = 4
    winrates: str = "auto"  # exact (an enumerating judge), sampled or weighted (K x K matrix); auto: exact if it can
    pairs: str = "auto"  # all, best_worst, top2, canonical (exact win rates only); auto: canonical if exact, else all
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01  # AdamW's (torch's default, which self-play has always used)
    schedule: str = "linear"  # within each iteration, from a fresh AdamW: linear decay to 0, constant, or any of get_scheduler's
    warmup_steps: int = 0  # within each iteration
    mixed_precision: str = "no"  # no, bf16, fp16 (accelerate's autocast in the fit, as `prefkit train`)
    max_grad_norm: float | None = 1.0  # null: no clipping (the norm is still measured and logged)
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step, as in `prefkit train`
    gradient_checkpointing: bool = False  # recompute the policy's activations in the backward pass (less memory)
    # generation
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    generator: str = "hf"  # who samples each iteration's K responses: hf (transformers) or vllm (prefkit[vllm])
    vllm: dict[str, Any] = field(default_factory=dict)  # engine options (prefkit.modeling.vllm_generator.VllmOptions)
    # prompts per sampling block: one generate call, seeded by the block's index, so N processes with the same
    # value draw what one process draws; null: the iteration's prompts split evenly over the processes
    sample_block: int | None = None
    eval_samples: int = 1  # samples per eval prompt for the per-iteration win rates
    kl_samples: int = 4  # fresh samples per eval prompt, each iteration, for the KL estimates
    eval_limit: int = 64  # eval prompts used per iteration (the first ones)
    judge_chunk_size: int = 16  # prompts judged between two saves of the judged matrices
    # model and bookkeeping
    dtype: str = "float32"
    trust_remote_code: bool = False
    lora: dict[str, Any] | None = None  # the policy is a LoRA adapter, as in `prefkit train` (docs "LoRA self-play")
    merge_lora: bool = False  # with LoRA, also write final/'s adapter merged into the base (merged/)
    logprob_chunk_size: int = 1024
    packing: bool = True  # padding-free layout, each prompt once (prefkit.modeling.packing)
    fuse_modules: bool = True  # leaner RMSNorm / SwiGLU MLP autograd (prefkit.modeling.fused)
    cpu_matmul: str = "auto"  # float32 products on the CPU: torch (MKL), onednn, auto (prefkit.modeling.matmul)
    token_metrics: bool = True  # TRL's entropy, logits/*, mean_token_accuracy (prefkit.train.engine)
    seed: int = 0
    keep_policies: int | None = 2  # iteration policies kept on disk besides the magnet's (null: all; docs "Disk")
    resume: bool = False  # continue the run in output_dir (same settings only)
    overwrite: bool = False  # remove an earlier run in output_dir and start afresh
    max_nonfinite_steps: int = 5  # non-finite losses / gradient norms in a row before the run stops
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # as `prefkit train`: prefkit.train.tracking
    project: str = "prefkit"
    run_name: str | None = None
    progress: bool = True
    push_to_hub: bool = False  # upload the final policy (prefkit.train.model_card.push_to_hub)
    hub_model_id: str | None = None
    hub_private_repo: bool | None = None

    def loss_params_at(self, t: int) -> dict[str, Any]:
        """The loss's hyper-parameters for iteration t (1-based): with `eta_final`, η = η_0·(η_final/η_0)^s,
        s = (t − 1)/(iterations − 1), a shrinking step as in stochastic mirror descent, since the noise that
        sampled win rates put into each step scales with η (docs/selfplay.md)."""
        if self.eta_final is None:
            return dict(self.loss_params)
        from prefkit import losses

        eta = losses.get(self.loss).check_hyperparameters(self.loss_params)["eta"]
        share = (t - 1) / max(1, self.iterations - 1)
        return {**self.loss_params, "eta": eta * (self.eta_final / eta) ** share}

    def validate(self) -> "SelfPlayConfig":
        raise_problems(self.problems())
        return self

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first (the same checks as `prefkit train`'s config)."""
        from prefkit.train.config import schedule_problems, schedules

        choices = {"pairs": PAIRINGS, "winrates": WINRATES, "schedule": schedules(), "dtype": tuple(DTYPES),
                   "mixed_precision": ("no", "bf16", "fp16"), "report_to": BACKENDS, "generator": GENERATORS,
                   "cpu_matmul": CPU_MATMUL}
        problems, bad = check_fields(self, SELFPLAY_LIMITS, choices,
                                     {"model": "--model", "output_dir": "--output-dir"})
        if "schedule" not in bad:
            problems += schedule_problems(self.schedule, {})
        if self.winrates in ("exact", "weighted") and self.mixture_coef:
            problems.append(f"winrates: {self.winrates} is against π_t, but Nash-MD's opponents come from the "
                            "geometric mixture (mixture_coef > 0): use winrates: sampled")
        if not bad & {"generator", "vllm"}:
            problems += vllm_problems(self.generator, self.vllm)
        problems += launch_problems(self.generator)
        problems += hub_problems(self) + adapter_problems(self, bad)
        if self.lora and self.generator == "vllm" and not bad & {"vllm"}:
            problems += vllm_adapter_problems(self.vllm)
        if self.pairs == "canonical" and self.winrates in ("sampled", "weighted"):
            problems.append("pairs: canonical needs exact win rates (winrates: exact or auto)")
        if not bad & {"loss", "loss_params"}:
            more, specs = loss_problems([self.loss], self.loss_params)
            problems += more
            if specs and self.eta_final is not None and "eta" not in specs[0].defaults:
                problems.append(f"eta_final: loss '{self.loss}' has no step size eta")
            if specs:
                from prefkit.losses import feed_problem

                problems += [p for p in [feed_problem([self.loss], SELFPLAY_FEEDS, "prefkit selfplay")] if p]
        return problems


SELFPLAY_LIMITS = {
    "refresh_every": at_least(1), "refresh_gap": above(0), "eta_final": above(0), "mixture_coef": within(0, 1), "iterations": at_least(1),
    "prompts_per_iteration": at_least(1), "samples_per_prompt": at_least(2), "epochs": at_least(1),
    "batch_size": at_least(1), "grad_accum": at_least(1), "learning_rate": above(0), "max_grad_norm": above(0), "weight_decay": at_least(0),
    "warmup_steps": at_least(0),
    "temperature": Limit("> 0 (self-play samples K different answers: there is no greedy decoding)",
                         lambda value: value > 0), "top_p": within(0, 1, open_low=True), "max_new_tokens": at_least(1),
    "eval_samples": at_least(1), "kl_samples": at_least(1), "eval_limit": at_least(1),
    "judge_chunk_size": at_least(1), "keep_policies": at_least(1), "sample_block": at_least(1),
    "logprob_chunk_size": at_least(1), "seed": at_least(0), "max_nonfinite_steps": at_least(1)}
