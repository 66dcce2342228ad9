"""The task played by a language model: chat-template encoding, supervised pre-training of the reference policy,
sampling, and the model's exact distribution over each prompt's canonical responses, hence its exact duality gap.

A prompt is rendered with the tokenizer's chat template (user turn, then the generation prompt) and a response is
its tokens plus the end-of-turn token, so log π(response | prompt) is the probability that the model says exactly
that and stops, the same quantity the offline and self-play losses use.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from prefkit.errors import PrefkitError
from prefkit.data.examples import pad_sequences
from prefkit.modeling.generation import encode_completion, encode_prompt, generate
from prefkit.modeling.logprobs import sequence_logps


def completion_logps(model, tokenizer, prompts: Sequence, responses: Sequence) -> torch.Tensor:
    """log π(response + EOS | prompt) for each (prompt, response) pair, shape [B] (prefkit.modeling.score)."""
    from prefkit.modeling.logprobs import score

    return score(model, [(encode_prompt(tokenizer, p), [encode_completion(tokenizer, r)])
                         for p, r in zip(prompts, responses)])


def _rows_to_pairs(tokenizer, rows: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    try:
        return [(encode_prompt(tokenizer, row["prompt"]), encode_completion(tokenizer, row["completion"]))
                for row in rows]
    except (KeyError, TypeError, IndexError) as error:
        raise PrefkitError(f"pre-training rows need 'prompt' and 'completion' fields; a row failed with {error!r}")


def completion_nll(model, tokenizer, rows: Sequence[dict], batch_size: int = 256) -> float:
    """Mean per-token negative log-likelihood of the rows' completions (EOS included): the pre-training loss."""
    pairs = _rows_to_pairs(tokenizer, rows)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pad_sequences(pairs[start:start + batch_size], tokenizer.pad_token_id, model.device)
            out = sequence_logps(model, **batch)
            total, tokens = total - out.logps.sum().item(), tokens + int(out.lengths.sum().item())
    return total / max(tokens, 1)


def pretrain(model, tokenizer, rows: Sequence[dict], *, steps: int = 1500, batch_size: int = 64, lr: float = 3e-3,
             seed: int = 0, progress: Callable[[int, float], None] | None = None):
    """Supervised fine-tuning on `rows` ({"prompt", "completion"}): next-token loss on completion tokens only, on
    the shared training engine (prefkit.train.sft). A linear warm-up over the first 5% of steps and linear decay
    to zero; batches are drawn with a generator seeded by `seed`, so the result is deterministic.
    `progress(step, loss)` is called after each step. Returns the model, in eval mode.
    """
    from prefkit.train.sft import SupervisedConfig, supervised_fit

    if steps < 1 or batch_size < 1 or not rows:
        raise PrefkitError(f"pretrain needs steps >= 1, batch_size >= 1 and some rows; got {steps}, {batch_size}, "
                           f"{len(rows)} rows")
    config = SupervisedConfig(steps=steps, batch_size=batch_size, learning_rate=lr, warmup_steps=steps // 20,
                              seed=seed)
    return supervised_fit(model, _rows_to_pairs(tokenizer, rows), tokenizer.pad_token_id, config, progress)


def reference_model(task, *, seed: int = 0, rows: int = 16384, steps: int = 1500, batch_size: int = 64,
                    lr: float = 3e-3, progress: Callable[[int, float], None] | None = None):
    """The task's tiny model pre-trained on its SFT data: (model, tokenizer), the reference policy of the demo.
    With the defaults this takes about a minute on 2 CPU cores (docs/task.md); everything derives from `seed`."""
    tokenizer, model = task.tokenizer(), task.model(seed=seed)
    pretrain(model, tokenizer, task.sft_rows(rows, seed=seed), steps=steps, batch_size=batch_size, lr=lr, seed=seed,
             progress=progress)
    return model, tokenizer


def sample_responses(model, tokenizer, prompts: Sequence, n: int = 1, *, seed: int = 0, temperature: float = 1.0,
                     max_new_tokens: int = 8) -> list[list[str]]:
    """n sampled responses per prompt as text, decoded up to the first EOS (other special tokens are kept in the
    text, so a response that emits one is malformed). Seeded without touching the global torch RNG."""
    samples = generate(model, tokenizer, prompts, n, seed=seed, temperature=temperature,
                       max_new_tokens=max_new_tokens)
    return [[s.text for s in group] for group in samples]


@torch.no_grad()
def canonical_distributions(model, tokenizer, task, prompts: Sequence[str]) -> list[tuple[np.ndarray, float]]:
    """For each prompt: the model's probabilities over task.canonical(prompt), renormalised to sum to 1, and the
    mass outside the canonical set, 1 - Σ π(y | prompt) over canonical y, in [0, 1].

    One forward pass over every (prompt, canonical response) pair. The mass outside counts malformed responses
    and also other token sequences that spell a canonical string (rare after pre-training)."""
    pairs = [(p, r) for p in prompts for r in task.canonical(p)]
    logps = completion_logps(model, tokenizer, [p for p, _ in pairs], [r for _, r in pairs]).double().cpu()
    results, start = [], 0
    for p in prompts:
        chunk = logps[start:start + len(task.canonical(p))]
        start += len(chunk)
        total = torch.logsumexp(chunk, 0)
        results.append(((chunk - total).exp().numpy(), float(min(1.0, max(0.0, -torch.expm1(total).item())))))
    return results


def canonical_distribution(model, tokenizer, task, prompt: str) -> tuple[np.ndarray, float]:
    """The model's renormalised distribution over task.canonical(prompt), and the mass outside the set."""
    return canonical_distributions(model, tokenizer, task, [prompt])[0]


def cyclic_games(model, tokenizer, task, split: str = "train") -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """The task's cyclic games as the model starts them: for each cyclic prompt of `split` ("train", "eval" or
    "all"), (prompt, preference matrix, the model's renormalised distribution over the canonical answers, the mass
    outside them). What the game lab's planner (docs/games.md, "Planning MPO's settings") simulates from."""
    splits = ("train", "eval") if split == "all" else (split,)
    prompts = [p for s in splits for p in task.prompts("cyclic", split=s)]
    return [(p, task.preference_matrix(p), probs, outside)
            for p, (probs, outside) in zip(prompts, canonical_distributions(model, tokenizer, task, prompts))]


def exact_gaps(model, tokenizer, task, prompts: Sequence[str]) -> np.ndarray:
    """Duality gap DG(π) = 2 max_y P(y beats π) - 1 of the model's renormalised canonical distribution, per prompt
    (prefkit.eval.exact_gap_metrics adds the distributions and the mass outside the canonical sets)."""
    return np.array([gap for gap, _, _ in canonical_gaps(model, tokenizer, task, prompts)])


def canonical_gaps(model, tokenizer, task, prompts: Sequence[str]) -> list[tuple[float, np.ndarray, float]]:
    """Per prompt: (exact duality gap, the renormalised canonical distribution, the mass outside the set)."""
    from prefkit.games import duality_gap

    return [(float(duality_gap(task.preference_matrix(p), probs)), probs, outside)
            for p, (probs, outside) in zip(prompts, canonical_distributions(model, tokenizer, task, prompts))]


def exact_gap(model, tokenizer, task, prompt: str) -> float:
    """Exact duality gap of the model's renormalised distribution over task.canonical(prompt)."""
    return float(exact_gaps(model, tokenizer, task, [prompt])[0])
