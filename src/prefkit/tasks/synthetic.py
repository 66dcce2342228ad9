"""The bundled synthetic preference task: prompts, a ground-truth preference oracle that scores any string,
canonical response sets with exact equilibria, an imperfect reference policy to pre-train on, and the local
tokenizer and tiny Llama model the task is played with.

The task is a fixed definition, like a data set: the same prompts and preferences on every machine. Only what is
sampled from it (SFT rows, preference pairs) takes a seed.

    >>> task = SyntheticTask()
    >>> task.preference("pick: rock paper scissors", "paper", "rock")     # 0.9
    >>> task.nash("pick: rock paper scissors")                            # (4/11, 3/11, 4/11)
"""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np

from prefkit.errors import PrefkitError
from prefkit.tasks.families import REFERENCE_MALFORMED, PromptSpec, malformed, pick_specs, sort_specs

KINDS = ("transitive", "cyclic")
SPLITS = ("train", "eval")
VOCAB_SIZE = 384  # 256 byte symbols + 7 special tokens + the merges that make the task's words single tokens


class OracleJudge:
    """The task's oracle as a judge: `judge(prompt, a, b)` is P(a beats b | prompt); `judge.batch` takes lists."""

    def __init__(self, task: "SyntheticTask"):
        self.task = task

    def __call__(self, prompt: str, a: str, b: str) -> float:
        return self.task.preference(prompt, a, b)

    def batch(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        if not len(prompts) == len(a) == len(b):
            raise PrefkitError(f"judge.batch needs equally long lists; got {len(prompts)} prompts, "
                               f"{len(a)} first and {len(b)} second responses")
        return np.array([self.task.preference(*triple) for triple in zip(prompts, a, b)], dtype=float)

    # what makes the oracle an enumerating judge (prefkit.judges.exact): exact win rates against a policy

    def responses(self, prompt: str) -> list[str]:
        return list(self.task.canonical(prompt))

    def win_rates_against(self, prompt: str, candidates: Sequence[str], probs, outside: float) -> np.ndarray:
        """P(candidate beats y), y from the policy (`probs` over the canonical answers, `outside` on malformed
        ones); every malformed response plays alike (task.preference)."""
        canonical = self.task.canonical(prompt)
        stranger = self.task.malformed(prompt, np.random.default_rng(0))
        probs = np.asarray(probs, dtype=float)
        return np.array([(1.0 - outside) * sum(q * self.task.preference(prompt, c, r) for q, r in zip(probs, canonical))
                         + outside * self.task.preference(prompt, c, stranger) for c in candidates])


class SyntheticTask:
    """Sorting prompts with transitive (Bradley-Terry) preferences and picking prompts with cyclic ones.

    A response is well-formed exactly when it is one of the prompt's canonical responses, character for
    character; everything else is malformed. See docs/task.md for the matrices and equilibria.
    """

    def __init__(self):
        self._specs = {spec.prompt: spec for spec in sort_specs() + pick_specs()}
        self._tokenizer = None

    # --- prompts and the oracle -------------------------------------------------------------------------------

    def prompts(self, kind: str | None = None, split: str = "train") -> list[str]:
        """The prompts (user messages) of one family, or of both when kind is None, in a fixed order."""
        if kind is not None and kind not in KINDS:
            raise PrefkitError(f"unknown prompt kind {kind!r}; choose one of {', '.join(KINDS)} (or None for both)")
        if split not in SPLITS:
            raise PrefkitError(f"unknown split {split!r}; choose 'train' or 'eval'")
        return [p for p, s in self._specs.items() if s.split == split and (kind is None or s.kind == kind)]

    def spec(self, prompt) -> PromptSpec:
        """Everything the oracle knows about `prompt` (its family, canonical set, matrix, equilibrium).
        Every method takes the user message as a string, or a conversational prompt ([{"role", "content"}])."""
        try:
            return self._specs[_text(prompt)]
        except (KeyError, TypeError):
            raise PrefkitError(f"prompt {prompt!r} is not a prompt of the synthetic task "
                               "(expected e.g. 'sort: 3 1 2' or 'pick: rock paper scissors')") from None

    def kind(self, prompt: str) -> str:
        return self.spec(prompt).kind

    def canonical(self, prompt: str) -> list[str]:
        """The finite set of well-formed responses to `prompt`, in a fixed order (matrices are indexed by it)."""
        return list(self.spec(prompt).canonical)

    def is_well_formed(self, prompt: str, response: str) -> bool:
        return _text(response) in self.spec(prompt).canonical

    def preference(self, prompt: str, a: str, b: str) -> float:
        """P(a beats b | prompt) for any two strings: antisymmetric, 1/2 when a == b or both are malformed.
        Conversational responses ([{"role": "assistant", "content": ...}]) are judged by their last message."""
        spec = self.spec(prompt)
        a, b = _text(a), _text(b)
        if not isinstance(a, str) or not isinstance(b, str):
            raise PrefkitError(f"responses must be strings or conversational lists; got {type(a).__name__} and "
                               f"{type(b).__name__}")
        index = spec.canonical.index
        i = index(a) if a in spec.canonical else None
        j = index(b) if b in spec.canonical else None
        if i is not None and j is not None:
            return float(spec.matrix[i, j])
        if i is not None:
            return float(spec.beats_malformed[i])
        if j is not None:
            return float(1.0 - spec.beats_malformed[j])
        return 0.5

    @cached_property
    def judge(self) -> OracleJudge:
        """The oracle as a judge callable: judge(prompt, a, b) -> P(a beats b); judge.batch(prompts, a, b)."""
        return OracleJudge(self)

    def preference_matrix(self, prompt: str) -> np.ndarray:
        """P[i, j] = P(canonical[i] beats canonical[j] | prompt)."""
        return self.spec(prompt).matrix.copy()

    def nash(self, prompt: str) -> np.ndarray:
        """The unique Nash equilibrium over canonical(prompt): sorted answer (transitive) or full support (cyclic)."""
        return self.spec(prompt).nash.copy()

    def win_rate(self, prompt: str, p, q, p_outside: float = 0.0, q_outside: float = 0.0) -> float:
        """Exact P(policy p beats policy q | prompt). Each policy is given as canonical_distribution returns it:
        renormalised probabilities over canonical(prompt) and the mass outside the set, which counts as malformed
        (it ties with malformed responses and loses to well-formed ones)."""
        spec = self.spec(prompt)
        p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
        n = len(spec.canonical)
        if p.shape != (n,) or q.shape != (n,):
            raise PrefkitError(f"win_rate needs probabilities over the {n} canonical responses of {prompt!r}; "
                               f"got shapes {p.shape} and {q.shape}")
        if not (0.0 <= p_outside <= 1.0 and 0.0 <= q_outside <= 1.0):
            raise PrefkitError(f"mass outside the canonical set must lie in [0, 1]; got {p_outside}, {q_outside}")
        p, q = p * (1.0 - p_outside), q * (1.0 - q_outside)
        w = spec.beats_malformed
        return float(p @ spec.matrix @ q + q_outside * (p @ w) + p_outside * (q @ (1.0 - w))
                     + 0.5 * p_outside * q_outside)

    # --- the imperfect reference policy -----------------------------------------------------------------------

    def reference(self, prompt: str) -> tuple[np.ndarray, float]:
        """The SFT data's policy on `prompt`: renormalised probabilities over canonical(prompt), and the share of
        malformed responses (the same form as canonical_distribution, so task.win_rate takes both)."""
        return self.spec(prompt).reference.copy(), REFERENCE_MALFORMED

    def sample_reference(self, prompt: str, n: int, rng: np.random.Generator) -> list[str]:
        """n responses from the reference policy (malformed ones included)."""
        spec = self.spec(prompt)
        probs = np.append(spec.reference * (1.0 - REFERENCE_MALFORMED), REFERENCE_MALFORMED)
        picks = rng.choice(len(probs), size=n, p=probs / probs.sum())
        return [spec.canonical[k] if k < len(spec.canonical) else malformed(spec, rng) for k in picks]

    def malformed(self, prompt: str, rng: np.random.Generator) -> str:
        """One malformed, non-empty response to `prompt` (truncated, repeated, run on, glued, another family's)."""
        return malformed(self.spec(prompt), rng)

    def sft_rows(self, n: int, seed: int = 0, *, split: str = "train", cyclic_fraction: float = 0.5,
                 conversational: bool = True) -> list[dict]:
        """n supervised rows {"prompt", "completion"} sampled from the reference policy.

        Each row's family is cyclic with probability `cyclic_fraction` (there are far fewer cyclic prompts, so
        sampling prompts uniformly would almost never show them), then the prompt is uniform within the family.
        Rows are conversational ([{"role", "content"}] lists) by default: data loaders render those with the chat
        template, as canonical_distribution and sample_responses do; standard string rows are not templated.
        """
        if n < 0 or not 0.0 <= cyclic_fraction <= 1.0:
            raise PrefkitError(f"sft_rows needs n >= 0 and 0 <= cyclic_fraction <= 1; got {n}, {cyclic_fraction}")
        rng = np.random.default_rng(seed)
        families = {kind: self.prompts(kind, split) for kind in KINDS}
        rows = []
        for _ in range(n):
            pool = families["cyclic" if rng.random() < cyclic_fraction else "transitive"]
            prompt = pool[int(rng.integers(len(pool)))]
            completion = self.sample_reference(prompt, 1, rng)[0]
            rows.append(as_row(prompt, completion=completion, conversational=conversational))
        return rows

    # --- the tokenizer and model the task is played with ------------------------------------------------------

    def corpus(self) -> list[str]:
        """Every prompt and canonical response, plus a few malformed ones: what the tokenizer is trained on."""
        rng = np.random.default_rng(0)
        texts = []
        for spec in self._specs.values():
            texts += [spec.prompt, *spec.canonical, malformed(spec, rng)]
        return texts

    def tokenizer(self):
        """A byte-level BPE tokenizer trained locally on the task's text, with the chat template (built once).

        VOCAB_SIZE leaves room for whole-word tokens of every option (" paper", "paper"), so prompts are about
        10 tokens and responses 1 to 3 tokens plus the end-of-turn token."""
        if self._tokenizer is None:
            from prefkit.modeling.tiny import tiny_tokenizer
            self._tokenizer = tiny_tokenizer(self.corpus(), vocab_size=VOCAB_SIZE)
        return self._tokenizer

    def model(self, seed: int = 0, *, hidden_size: int = 64, layers: int = 2, heads: int = 2):
        """A tiny, untrained Llama (transformers' LlamaForCausalLM) whose vocabulary matches tokenizer(). Two heads
        of 32 by default: vLLM's CPU attention takes head sizes from 32 up, so the task model loads there too."""
        from prefkit.modeling.tiny import tiny_llama
        tokenizer = self.tokenizer()
        return tiny_llama(len(tokenizer), hidden_size=hidden_size, layers=layers, heads=heads, max_positions=64,
                          seed=seed, tokenizer=tokenizer)


def as_row(prompt: str, *, conversational: bool = False, **responses: str) -> dict:
    """A data row in TRL's standard form (strings) or conversational form ([{"role", "content"}] lists)."""
    if not conversational:
        return {"prompt": prompt, **responses}
    return {"prompt": [{"role": "user", "content": prompt}],
            **{key: [{"role": "assistant", "content": text}] for key, text in responses.items()}}


def _text(value):
    """The text of a conversational prompt or response (its last message), or the value as it is."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[-1], dict):
        return value[-1].get("content")
    return value
