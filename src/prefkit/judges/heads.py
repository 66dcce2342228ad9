"""The two judges prefkit trains, as maths on the outputs of one sequence-classification head.

Both are an `AutoModelForSequenceClassification` (any transformers backbone, causal LM or encoder) whose head
reads the last token of prompt + response:

* **bt** (Bradley-Terry reward model): one output, the reward r(x, y); the preference logit is
  s(x, a, b) = r(x, a) − r(x, b), so P(a ≻ b) = σ(s), transitive by construction.
* **gpm** (General Preference Model; Zhang et al. 2024, "Beyond Bradley-Terry Models: A General Preference Model
  for Language Model Alignment", arXiv 2410.02197): 2k outputs, the response's embedding v(x, y), L2-normalised;
  with `prompt_scaling`, k more outputs read from the prompt alone give the eigenvalue gate
  λ(x) = softmax(gate logits). The preference logit is the skew-symmetric bilinear form

      s(x, a, b) = v_aᵀ R(x) v_b / τ,   R(x) = block-diag(λ_1 J, ..., λ_k J),  J = [[0, 1], [−1, 0]],

  i.e. Σ_l λ_l (v_a[2l] v_b[2l+1] − v_a[2l+1] v_b[2l]) / τ (λ_l = 1 without the gate). Since Rᵀ = −R,
  s(x, b, a) = −s(x, a, b): a cycle is representable (three embeddings 120° apart on a plane make one), and a
  K x K matrix needs the K embeddings only, each computed once.

The settings live in the model's `config.json` under `prefkit_judge`, so a saved judge is one Hugging Face
folder that describes itself (`gpm:PATH`, `reward:PATH`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from prefkit.errors import PrefkitError

CONFIG_KEY = "prefkit_judge"
KINDS = ("bt", "gpm")


@dataclass(frozen=True)
class HeadSettings:
    """What a trained judge's head outputs mean; stored in the model config (`CONFIG_KEY`)."""

    kind: str = "bt"
    embedding_dim: int = 8  # gpm: 2k, even
    prompt_scaling: bool = True  # gpm: the paper's prompt-dependent eigenvalue gate
    temperature: float = 0.1  # gpm: τ; |s| <= 1/τ since embeddings are unit vectors and λ sums to 1
    # how the texts were tokenized in training (prefkit.data), so the judge reads them the same way
    max_length: int | None = None
    truncation: str = "keep_start"
    # the training rows' style, "standard" (strings) or "conversational" (messages); None: not recorded (a judge
    # saved before it was). A judge trained on conversations reads string prompts and responses as messages
    style: str | None = None

    @property
    def num_labels(self) -> int:
        if self.kind == "bt":
            return 1
        return self.embedding_dim + (self.embedding_dim // 2 if self.prompt_scaling else 0)

    @property
    def needs_prompt(self) -> bool:
        """Whether the prompt alone is scored too (the gate reads it)."""
        return self.kind == "gpm" and self.prompt_scaling

    def store(self, config) -> None:
        setattr(config, CONFIG_KEY, asdict(self))

    @classmethod
    def of(cls, config, source: str = "the model") -> "HeadSettings | None":
        """The settings stored in a model config, or None for a model prefkit did not train."""
        stored = getattr(config, CONFIG_KEY, None)
        if stored is None:
            return None
        try:
            settings = cls(**stored)
        except TypeError as error:
            raise PrefkitError(f"{source}: config.json '{CONFIG_KEY}' is not one prefkit wrote ({error})") from None
        if settings.kind not in KINDS or getattr(config, "num_labels", None) != settings.num_labels:
            raise PrefkitError(f"{source}: config.json '{CONFIG_KEY}' ({stored}) does not match the model's "
                               f"num_labels={getattr(config, 'num_labels', None)}")
        return settings


def skew_form(a: torch.Tensor, b: torch.Tensor, eigenvalues: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_l λ_l (a[2l] b[2l+1] − a[2l+1] b[2l]) over the last dimension: [..., 2k] x [..., 2k] (x [..., k]) -> [...].

    Exactly skew-symmetric in floating point: swapping a and b swaps the two products of each term, so every
    term, and their sum taken in the same order, changes sign and nothing else."""
    a, b = a.unflatten(-1, (-1, 2)), b.unflatten(-1, (-1, 2))
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return (cross if eigenvalues is None else eigenvalues * cross).sum(-1)


def embeddings(outputs: torch.Tensor, settings: HeadSettings) -> torch.Tensor:
    """The unit-norm preference embedding v(x, y) from a response row's head outputs [..., num_labels]."""
    return F.normalize(outputs[..., :settings.embedding_dim], dim=-1)


def eigenvalues(prompt_outputs: torch.Tensor | None, settings: HeadSettings) -> torch.Tensor | None:
    """λ(x) = softmax of the gate outputs of the prompt's row [..., k], or None (all λ_l = 1) without the gate."""
    if not settings.needs_prompt or prompt_outputs is None:
        return None
    return torch.softmax(prompt_outputs[..., settings.embedding_dim:], dim=-1)


def preference_logits(a_outputs: torch.Tensor, b_outputs: torch.Tensor, prompt_outputs: torch.Tensor | None,
                      settings: HeadSettings) -> torch.Tensor:
    """s(x, a, b), the logit of P(a ≻ b | x), from the head outputs of the (prompt, a) and (prompt, b) rows
    (and of the prompt's row for the gate): [N, num_labels] each -> [N]."""
    if settings.kind == "bt":
        return a_outputs[..., 0] - b_outputs[..., 0]
    scale = eigenvalues(prompt_outputs, settings)
    return skew_form(embeddings(a_outputs, settings), embeddings(b_outputs, settings), scale) / settings.temperature


def antisymmetric_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """σ(s), computed so that p(−s) = 1 − p(s) holds exactly in floating point (σ(s) and σ(−s) as two separate
    roundings need not sum to 1): the value for s >= 0 is σ(s), for s < 0 it is 1 − σ(−s)."""
    upper = torch.sigmoid(logits.abs())
    return torch.where(logits >= 0, upper, 1.0 - upper)


def soft_labels(batch) -> torch.Tensor:
    """P(chosen ≻ rejected) per pair of a `prefkit.data.Batch`: σ(margin) where it carries the data's `margin`
    column (a reward-scale difference, so σ(margin) is the preference a Bradley-Terry rater with that gap
    states), else 1."""
    if batch.margins is not None:
        return torch.sigmoid(batch.margins.double()).to(batch.margins.dtype)
    return torch.ones(batch.size, dtype=torch.float32, device=batch.input_ids.device)
