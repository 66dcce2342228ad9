"""`evaluate_model`: every evaluation the given inputs allow, as one JSON-able dict.

Each section is registered in SECTIONS with the inputs it needs; a section runs when all of them were given and
is listed under "skipped" with what it lacks otherwise. Expensive intermediates (pair log-probs, samples) are
computed once per evaluation and shared between sections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from prefkit.errors import PrefkitError
from prefkit.eval import entropy, ranking

DEFAULT_SAMPLES = 4
DEFAULT_MAX_PROMPTS = 128


@dataclass
class Context:
    """What evaluate_model was given (None = not given), and the intermediates shared between sections."""

    model: Any
    tokenizer: Any
    examples: list | None = None
    reference: Any = None
    judge: Any = None
    task: Any = None
    prompts: list | None = None
    prompt_ids: list | None = None
    options: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def once(self, key, compute: Callable):
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def pair_logps(self, which: str):
        from prefkit.eval.pairs import pair_logps
        model = self.model if which == "model" else self.reference
        return self.once(("logps", which), lambda: pair_logps(model, self.examples, self.tokenizer.pad_token_id))

    def samples(self, which: str):
        """The model's samples use `seed`, the reference's `seed + 1`: a model evaluated against itself is then
        judged on independent samples (win rate ≈ 1/2), not on identical ones."""
        from prefkit.eval.samples import sample
        model, offset = (self.model, 0) if which == "model" else (self.reference, 1)
        o = self.options
        return self.once(("samples", which), lambda: sample(
            model, self.tokenizer, self.prompts, o["samples"], prompt_ids=self.prompt_ids, seed=o["seed"] + offset,
            temperature=o["temperature"], max_new_tokens=o["max_new_tokens"]))


def _ranking(ctx: Context) -> dict:
    from prefkit.eval.pairs import ranking_metrics
    reference = ctx.pair_logps("reference") if ctx.reference is not None else None
    return ranking_metrics(ctx.pair_logps("model"), reference, beta=ctx.options["beta"],
                           epsilon=ctx.options["epsilon"])


def _generation_of(ctx: Context, which: str) -> dict:
    model = ctx.model if which == "model" else ctx.reference
    s = ctx.samples(which)
    per_sequence = entropy.token_entropies(model, list(zip(s.prompt_ids, s.completion_ids)),
                                           ctx.tokenizer.pad_token_id)
    return {"token_entropy": entropy.mean_token_entropy(per_sequence), **entropy.text_statistics(s.texts),
            "length": entropy.length_statistics(s.lengths, s.stopped),
            "examples": [{"prompt": _show(p), "response": t} for p, t in list(zip(s.prompts, s.texts))[:5]]}


def _generation(ctx: Context) -> dict:
    out = {"prompts": len(ctx.prompts), "samples_per_prompt": ctx.options["samples"],
           "temperature": ctx.options["temperature"], "max_new_tokens": ctx.options["max_new_tokens"],
           "model": _generation_of(ctx, "model")}
    if ctx.reference is not None:
        out["reference"] = _generation_of(ctx, "reference")
    return out


def _win_rate(ctx: Context) -> dict:
    from prefkit.eval.winrate import judge_samples
    mine, theirs = ctx.samples("model"), ctx.samples("reference")
    return judge_samples(ctx.judge, mine.prompts, mine.texts, theirs.texts, method=ctx.options["ci"],
                         seed=ctx.options["seed"])


def _exact_gap(ctx: Context) -> dict:
    from prefkit.eval.gaps import exact_gap_metrics
    out = {"model": exact_gap_metrics(ctx.model, ctx.tokenizer, ctx.task)}
    if ctx.reference is not None:
        out["reference"] = exact_gap_metrics(ctx.reference, ctx.tokenizer, ctx.task)
    return out


def _exact_win_rate(ctx: Context) -> dict:
    from prefkit.eval.gaps import exact_win_rates
    return exact_win_rates(ctx.model, ctx.reference, ctx.tokenizer, ctx.task)


def _entanglement(ctx: Context) -> dict:
    from prefkit.eval.entanglement import gradient_entanglement
    o = ctx.options
    return gradient_entanglement(ctx.model, ctx.examples, ctx.tokenizer.pad_token_id, params=o["grad_params"],
                                 layers=o["grad_layers"], max_pairs=o["grad_pairs"])


# name -> (inputs it needs, function). Order is the report's order.
SECTIONS: dict[str, tuple[tuple[str, ...], Callable[[Context], dict]]] = {
    "ranking": (("examples",), _ranking),
    "win_rate": (("prompts", "reference", "judge"), _win_rate),
    "generation": (("prompts",), _generation),
    "exact_gap": (("task",), _exact_gap),
    "exact_win_rate": (("task", "reference"), _exact_win_rate),
    "entanglement": (("examples",), _entanglement),
}


def _show(prompt) -> str:
    return prompt if isinstance(prompt, str) else str(prompt[-1].get("content", prompt))


def _data_prompts(data, examples, tokenizer, limit: int, split: str) -> tuple[list, list[list[int]]]:
    """Distinct prompts of the data set in order, as the judge sees them (the rows' "prompt" field when the data
    came from a file) and as the model sees them (the examples' prompt ids, chat template applied)."""
    raw = {}
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        from prefkit.data.sources import load_rows
        raw = {number: row.get("prompt") for number, row in load_rows(data, split).rows
               if isinstance(row, dict)}
    seen, prompts, ids = set(), [], []
    for example in examples:
        key = tuple(example.prompt_ids)
        if key in seen:
            continue
        seen.add(key)
        text = raw.get(example.row)
        prompts.append(text if text is not None else tokenizer.decode(example.prompt_ids, skip_special_tokens=True))
        ids.append(list(example.prompt_ids))
        if len(prompts) == limit:
            break
    return prompts, ids


def evaluate_model(model, tokenizer, *, data=None, split: str = "train", reference=None, judge=None, task=None, prompts=None,
                   samples: int = DEFAULT_SAMPLES, seed: int = 0, beta: float = 0.1,
                   epsilon: float = ranking.DEFAULT_EPSILON, max_pairs: int | None = 512,
                   max_prompts: int = DEFAULT_MAX_PROMPTS, max_new_tokens: int = 64, temperature: float = 1.0,
                   ci: str = "wilson", grad_params: str = "head", grad_layers: int = 1, grad_pairs: int = 64,
                   sections: list[str] | None = None) -> dict:
    """Run every section the inputs allow (or only `sections`) and return a JSON-able dict.

    data: preference pairs (path, PreparedData or list of pair Examples; `split` of a hub id or DatasetDict) ->
    ranking, reward margins (with a reference), gradient entanglement. prompts (else the task's eval prompts, else the data's prompts) ->
    generation entropy and lengths; with a reference and a judge -> win rate. task (a SyntheticTask) -> exact
    duality gaps on its cyclic eval prompts, and with a reference the exact win rate against it. The reference model must share `tokenizer`."""
    from prefkit.eval.pairs import pair_examples
    from prefkit.eval.winrate import as_judge

    unknown = set(sections or ()) - set(SECTIONS)
    if unknown:
        raise PrefkitError(f"unknown evaluation section {sorted(unknown)[0]!r}; choose from {', '.join(SECTIONS)}")
    if samples < 1:
        raise PrefkitError(f"samples must be at least 1; got {samples}")
    examples = pair_examples(data, tokenizer, max_pairs, split) if data is not None else None
    prompt_ids = None
    if prompts is None and task is not None:
        # Cyclic prompts first: there are only a few of them, and the cap would otherwise cut them all.
        prompts = (task.prompts("cyclic", "eval") + task.prompts("transitive", "eval"))[:max_prompts]
    elif prompts is None and examples is not None:
        prompts, prompt_ids = _data_prompts(data, examples, tokenizer, max_prompts, split)
    ctx = Context(model, tokenizer, examples, reference, as_judge(judge) if judge is not None else None, task,
                  list(prompts) if prompts is not None else None, prompt_ids,
                  dict(samples=samples, seed=seed, beta=beta, epsilon=epsilon, max_new_tokens=max_new_tokens,
                       temperature=temperature, ci=ci, grad_params=grad_params, grad_layers=grad_layers,
                       grad_pairs=grad_pairs))
    results: dict[str, Any] = {"seed": seed, "beta": beta, "sections": {}, "skipped": {}, "seconds": {}}
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        for name, (needs, run) in SECTIONS.items():
            if sections is not None and name not in sections:
                continue
            missing = [n for n in needs if getattr(ctx, n) is None]
            if missing:
                results["skipped"][name] = "needs " + ", ".join(missing)
                continue
            start = time.perf_counter()
            results["sections"][name] = run(ctx)
            results["seconds"][name] = round(time.perf_counter() - start, 3)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return _jsonable(results)


def _jsonable(value):
    """Plain Python types all the way down (NumPy scalars and arrays, tensors, tuples)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN/inf
    return value
