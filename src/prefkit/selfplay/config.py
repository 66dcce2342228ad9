"""The self-play configuration: one dataclass, validated before anything loads (same loader as `prefkit train`),
holding `prefkit selfplay`'s own keys on top of the keys it shares with `prefkit train`
(prefkit.train.base_config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefkit.modeling.vllm_generator import problems as vllm_problems
from prefkit.selfplay.distributed import launch_problems
from prefkit.train.base_config import PolicyConfig
from prefkit.train.validation import Limit, above, at_least, within

PAIRINGS = ("auto", "all", "best_worst", "top2", "canonical")
WINRATES = ("auto", "exact", "sampled", "weighted")
SELFPLAY_FEEDS = ("selfplay-pairs", "selfplay-singles")  # the example kinds it builds (prefkit.losses.KINDS)
GENERATORS = ("hf", "vllm")


@dataclass
class SelfPlayConfig(PolicyConfig):
    """`prefkit selfplay`'s keys: those it shares with `prefkit train` (prefkit.train.base_config), which mean the
    same there, and these."""

    prompts: str = "task"  # "task" (the bundled task's train prompts) or a JSONL/JSON/CSV file with a "prompt" column
    eval_prompts: str | None = None  # default: the task's eval prompts, or the first 32 training prompts
    judge: str = "task"  # see prefkit.judges.load_judge: task, module:function, reward:PATH, pairwise:PATH
    loss: str = "mpo"  # one loss that trains on self-play examples (no mixture, unlike prefkit train)
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
    epochs: int = 2  # passes over each iteration's examples (prefkit train's epochs are of its dataset)
    # self-play's defaults since it was written, kept so that configs and saved runs behave the same (each
    # iteration fits its few hundred fresh examples from a fresh AdamW, not one pass over a dataset)
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 0.01  # AdamW's (torch's default, which self-play has always used)
    # generation
    temperature: float = 1.0  # sampling temperature (a judge's `temperature` is GPM's τ)
    top_p: float = 1.0
    max_new_tokens: int = 32
    generator: str = "hf"  # who samples each iteration's K responses: hf (transformers) or vllm (prefkit[vllm])
    vllm: dict[str, Any] = field(default_factory=dict)  # engine options (prefkit.modeling.vllm_generator.VllmOptions)
    # prompts per sampling block of transformers' generate: one call, seeded by the block's index, so N processes
    # with the same value draw what one process draws; null: the iteration's prompts split evenly over the
    # processes. vLLM seeds each prompt's request on its own and needs no blocks
    sample_block: int | None = None
    eval_samples: int = 1  # samples per eval prompt for the per-iteration win rates
    kl_samples: int = 4  # fresh samples per eval prompt, each iteration, for the KL estimates
    eval_limit: int = 64  # eval prompts used per iteration (the first ones)
    judge_chunk_size: int = 16  # prompts judged between two saves of the judged matrices
    # bookkeeping
    keep_policies: int | None = 2  # iteration policies kept on disk besides the magnet's (null: all; docs "Disk")

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

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first (the shared keys checked as `prefkit train` checks
        them)."""
        choices = {"pairs": PAIRINGS, "winrates": WINRATES, "generator": GENERATORS}
        problems, bad = self.shared_problems(SELFPLAY_LIMITS, choices, {})
        if self.winrates in ("exact", "weighted") and self.mixture_coef:
            problems.append(f"winrates: {self.winrates} is against π_t, but Nash-MD's opponents come from the "
                            "geometric mixture (mixture_coef > 0): use winrates: sampled")
        if not bad & {"generator", "vllm"}:
            problems += vllm_problems(self.generator, self.vllm)
        problems += launch_problems(self.generator, self.vllm)
        if self.pairs == "canonical" and self.winrates in ("sampled", "weighted"):
            problems.append("pairs: canonical needs exact win rates (winrates: exact or auto)")
        if not bad & {"loss", "loss_params"}:
            more, specs = self.loss_problems(SELFPLAY_FEEDS, "prefkit selfplay")
            problems += more
            if specs and self.eta_final is not None and "eta" not in specs[0].defaults:
                problems.append(f"eta_final: loss '{self.loss}' has no step size eta")
        return problems


# prefkit selfplay's own keys; the shared keys' limits and choices are prefkit.train.base_config's
SELFPLAY_LIMITS = {
    "refresh_every": at_least(1), "refresh_gap": above(0), "eta_final": above(0), "mixture_coef": within(0, 1),
    "iterations": at_least(1), "prompts_per_iteration": at_least(1), "samples_per_prompt": at_least(2),
    "epochs": at_least(1),
    "temperature": Limit("> 0 (self-play samples K different answers: there is no greedy decoding)",
                         lambda value: value > 0), "top_p": within(0, 1, open_low=True), "max_new_tokens": at_least(1),
    "eval_samples": at_least(1), "kl_samples": at_least(1), "eval_limit": at_least(1),
    "judge_chunk_size": at_least(1), "keep_policies": at_least(1), "sample_block": at_least(1)}
