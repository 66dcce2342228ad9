"""The configuration of `prefkit judge train`: one dataclass, validated before anything loads, with the training
keys it shares with `prefkit train` declared once for both (prefkit.train.base_config: same loader, same checks,
every problem reported at once) and the judge's own: `kind` (bt | gpm) and GPM's `embedding_dim`,
`prompt_scaling` and `temperature`."""

from __future__ import annotations

from dataclasses import dataclass

from prefkit.judges.heads import KINDS, HeadSettings
from prefkit.train.base_config import DatasetConfig
from prefkit.train.validation import above, at_least, sharded_launch, sharding_problems


@dataclass
class JudgeTrainConfig(DatasetConfig):
    """`prefkit judge train`'s keys: those it shares with `prefkit train` (prefkit.train.base_config), which mean
    the same there (`model` may be any transformers backbone: a causal LM or a sequence model), and these."""

    # what to train
    kind: str = "bt"  # bt: a Bradley-Terry reward model; gpm: a general preference model
    # the general preference model (kind: gpm)
    embedding_dim: int = 8  # 2k, even
    prompt_scaling: bool = True  # the paper's prompt-dependent eigenvalue gate
    temperature: float = 0.1  # GPM's τ (self-play's `temperature` is the sampling one: another command's key)
    calibration_bins: int = 10  # equal-width bins of the expected calibration error and the reliability plot
    learning_rate: float = 1e-5  # the judge trainer's default since it was written: configs and runs rely on it

    def problems(self) -> list[str]:
        """Every problem with the values, not only the first."""
        problems, bad = self.shared_problems(JUDGE_LIMITS, JUDGE_CHOICES, {})
        if "embedding_dim" not in bad and self.embedding_dim % 2:
            problems.append(f"'embedding_dim' must be even (2k: the skew-symmetric form pairs the dimensions); "
                            f"got {self.embedding_dim}")
        if ("ACCELERATE_USE_FSDP", "FSDP") in sharded_launch():
            problems.append("accelerate launch asks for FSDP (ACCELERATE_USE_FSDP), but prefkit judge train runs "
                            "data-parallel only (its judge and checkpoints are saved unsharded): launch with "
                            "--multi_gpu (configs/accelerate/ddp.yaml)")
        return problems + sharding_problems()  # the same engine as prefkit train's

    def head(self, style: str | None = None) -> HeadSettings:
        """The head's settings; `style` is the training data's (standard | conversational), saved with the judge."""
        return HeadSettings(self.kind, self.embedding_dim, self.prompt_scaling, self.temperature, self.max_length,
                            self.truncation, style)


# the judge's own keys; the shared keys' limits and choices are prefkit.train.base_config's
JUDGE_LIMITS = {"embedding_dim": at_least(2), "temperature": above(0), "calibration_bins": at_least(1)}
JUDGE_CHOICES = {"kind": KINDS}
