"""The steps of one self-play iteration: judged samples -> training examples, the fit, and the metrics.

Pairs (MPO, INPO, online IPO, ...) carry the judge's P(chosen beats rejected) (`pairs: all`) or both
responses' win rates against π_t (`best_worst`, `top2`); single responses (SPPO, MPO's policy-gradient form,
Nash-MD) carry their win rate and its advantage over the group mean.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from prefkit import losses
from prefkit.data import Example
from prefkit.modeling.generation import encode_prompt
from prefkit.selfplay.anchors import using
from prefkit.train.batches import BatchOrder, collate


LABELS = ("preference", "chosen_winrate", "rejected_winrate")  # the inputs that say which answer of a pair won
# the anchors whose log-probs a loss may read: π_t (the iterate the samples came from) and the magnet (or reference)
ANCHOR_INPUTS = {"prev": ("prev_logps", "prev_chosen_logps", "prev_rejected_logps"),
                 "ref": ("ref_logps", "ref_chosen_logps", "ref_rejected_logps")}


def scored_anchors(objective: losses.Objective) -> tuple[str, ...]:
    """The anchors whose log-prob tables the loss reads ("prev", "ref"): an iteration scores only those (online DPO
    reads no π_t, SimPO neither anchor)."""
    return tuple(name for name, inputs in ANCHOR_INPUTS.items()
                 if objective.reads(*inputs) and (name != "ref" or objective.reads_reference))


def build_examples(prompts, candidates, rates, tokenizer, pairs: str, per_response: bool, matrices=None,
                   enumerated=None, baseline=None, labelled: bool = True):
    """Training examples and their per-example loss inputs (tensors aligned with the examples).

    `candidates[p]` are prompt p's responses (samples, or with `pairs: canonical` the enumerated responses then
    the sampled ones outside them, `enumerated[p]` of the first kind), `rates[p]` their win rates against π_t.
    `matrices` (sampled win rates only) gives `pairs: all` its soft labels. Single-response losses get every
    candidate with its win rate and its advantage over `baseline` (½ for exact win rates: π_t against itself;
    the group mean for sampled ones). A loss that reads no label (`labelled` false: DPO and the other offline
    pairwise losses) takes the preferred answer of each pair as the chosen one, and no tied pair."""
    examples, inputs = [], {}

    def add(example, **values):
        examples.append(example)
        for key, value in values.items():
            inputs.setdefault(key, []).append(float(value))

    for p, (prompt, group) in enumerate(zip(prompts, candidates)):
        prompt_ids = encode_prompt(tokenizer, prompt)
        if per_response:
            centre = rates[p].mean() if baseline is None else baseline
            for i, sample in enumerate(group):
                if sample.ids:
                    add(Example.single(prompt_ids, sample.ids, True, len(examples)), winrate=rates[p][i],
                        advantages=rates[p][i] - centre, preference=rates[p][i])
            continue
        for i, j in _pairs(pairs, rates[p], None if enumerated is None else enumerated[p]):
            if group[i].ids == group[j].ids:  # the same answer twice says nothing about the preference
                continue
            soft = pairs == "all" and matrices is not None
            if not labelled:  # the loss takes the first answer as the winner: put the winner first
                margin = matrices[p][i, j] - 0.5 if soft else rates[p][i] - rates[p][j]
                if margin == 0:
                    continue
                i, j = (i, j) if margin > 0 else (j, i)
            example = Example.pair(prompt_ids, group[i].ids, group[j].ids, len(examples))
            if soft:
                add(example, preference=matrices[p][i, j])
            else:
                add(example, chosen_winrate=rates[p][i], rejected_winrate=rates[p][j])
    return examples, {k: torch.tensor(v, dtype=torch.float32) for k, v in inputs.items()}


def _pairs(mode: str, rates: np.ndarray, enumerated: int | None) -> list[tuple[int, int]]:
    k = len(rates)
    if mode == "all":  # every unordered pair once; the label or win rates say who is preferred
        return [(i, j) for i in range(k) for j in range(i + 1, k)]
    if mode == "canonical":  # the enumerated responses pairwise, and each outside response against each of them
        return ([(i, j) for i in range(enumerated) for j in range(i + 1, enumerated)]
                + [(o, j) for o in range(enumerated, k) for j in range(enumerated)])
    ranked = np.argsort(-rates, kind="stable")
    second = ranked[1] if mode == "top2" else ranked[-1]
    return [(int(ranked[0]), int(second))] if rates[ranked[0]] > rates[second] else []


class EngineParts(NamedTuple):
    """What every iteration's fit trains with, prepared once for the run (prefkit.train.engine)."""

    accelerator: object
    policy: torch.nn.Module  # PolicyLogps over the policy, as accelerate prepared it (DDP, or FSDP's shards)
    optimizer: object  # AdamW prepared with it; each fit restarts it as a fresh AdamW


def fit_iteration(engine_parts: EngineParts, examples, tables, inputs, tokenizer, config, seed: int,
                  stop=None, loss_params: dict | None = None) -> list[dict[str, float]]:
    """E epochs of the method's loss over this iteration's examples on the training engine
    (prefkit.train.engine), from a fresh AdamW (as the iterative pipelines of SPPO and INPO restart each
    iteration) whose learning rate decays linearly to 0 within the iteration (`schedule: linear`; `constant`
    keeps it): the fit then settles on the step it is fitting instead of jittering around it, which halves the
    tracking error near the equilibrium (docs/selfplay.md). `engine_parts`: the run's `EngineParts`.
    Returns the metrics of each applied step, averaged over the processes: the loss (over the global batch) and
    TRL's token metrics (prefkit.train.engine.token_metrics; pairs: chosen then rejected, single responses: the
    entropy only). On several processes each takes its slice of every global batch of `batch_size` x processes
    examples (DDP averages the gradients). Seeded, so a resumed iteration refits bit for bit; returns early when
    `stop` (prefkit.train.signals) has been requested."""
    from prefkit.selfplay.distributed import stopping
    from prefkit.train.engine import Engine, chosen_rows, reduce_mean, token_metrics

    if not examples:
        return [{"loss": float("nan")}]
    accelerator, policy, optimizer = engine_parts
    processes = accelerator.num_processes  # batch_size is per process, as in `prefkit train`
    if len(examples) < processes:
        return [{"loss": float("nan")}]
    torch.manual_seed(config.seed * 1000 + seed)  # dropout draws do not depend on what ran before
    order = BatchOrder(len(examples), min(config.batch_size, len(examples) // processes), processes,
                       accelerator.process_index, config.seed + seed)
    accumulate = config.grad_accum  # micro-batches per optimizer step
    total = max(1, config.epochs * order.per_epoch // accumulate)
    engine = Engine(accelerator, policy, config, total, optimizer=optimizer)
    objective = losses.Objective(config.loss, None, loss_params or config.loss_params)

    def loss_of(policy, batch):
        logps, lengths, tokens = policy(batch)
        index = batch.index.cpu()
        given = {k: v[index].to(logps.device) for k, v in inputs.items()}
        # [B, K] rows of the anchors' tables (a table written as [N] before K was explicit: K = 1)
        rows = {name: table[index].reshape(len(index), -1).to(logps.device) for name, table in tables.items()}
        given.update(_model_inputs(logps, lengths, rows, batch))
        loss = objective(given).losses.mean()
        # single responses are all "desirable" placeholders here: nothing to split them by
        labels = chosen_rows(batch) if batch.num_completions > 1 else None
        return loss, {"loss": loss.item(), **token_metrics(tokens, lengths, labels)}

    seen = []
    engine.model.train()
    for step in range(total):
        if stop is not None and stopping(accelerator, stop.requested):  # agreed: every process leaves together
            break
        micro = (collate(examples, order.indices(step * accumulate + m), tokenizer.pad_token_id, accelerator.device)
                 for m in range(accumulate))
        update = engine.step(step + 1, micro, accumulate, loss_of)
        if update.applied:
            seen.append(update.metrics)
    engine.model.eval()
    return [reduce_mean(accelerator, metrics) for metrics in seen]


def fit_metrics(seen: list[dict[str, float]]) -> dict[str, float]:
    """`fit_iteration`'s step metrics averaged over its steps: `loss` (nan when no step was applied), and TRL's
    token metrics as `fit/NAME`, apart from the iteration's own metrics (its `entropy` is that of its evaluation
    samples, prefkit.eval.entropy)."""
    names = dict.fromkeys(["loss", *(k for step in seen for k in step)])
    return {k if k == "loss" else f"fit/{k}": float(np.mean([step[k] for step in seen if k in step] or [np.nan]))
            for k in names}


def _model_inputs(logps, lengths, anchors: dict, batch) -> dict:
    """The log-prob inputs of a self-play loss: the policy's, and those of the `anchors` it reads ("prev": π_t,
    "ref": the magnet), [B, K] tables for single responses (K = 1) or pairs (K = 2)."""
    if batch.num_completions == 1:
        return dict(logps=logps, **{f"{name}_logps": rows[:, 0] for name, rows in anchors.items()})
    chosen, rejected = logps.chunk(2)
    given = dict(chosen_logps=chosen, rejected_logps=rejected, chosen_lengths=lengths.chunk(2)[0],
                 rejected_lengths=lengths.chunk(2)[1])
    for name, rows in anchors.items():
        given[f"{name}_chosen_logps"], given[f"{name}_rejected_logps"] = rows[:, 0], rows[:, 1]
    return given


def iteration_metrics(judge, model, anchors: dict, tokenizer, prompts, answers, baseline, previous, task, config,
                      t: int, source=None) -> dict[str, float]:
    """Win rates against π_0 and π_{t-1} (with 95% intervals), length, KL to the magnet and to π_0, generation
    entropy, and on the bundled task the exact duality gap on its cyclic prompts (with the mass outside the
    canonical sets). `anchors` maps "magnet" and "initial" to their models or views (prefkit.selfplay.anchors)."""
    from prefkit.eval.entropy import sample_entropy
    from prefkit.eval.gaps import exact_gap_metrics
    from prefkit.eval.winrate import judge_samples

    repeated = [p for p in prompts for _ in range(config.eval_samples)]
    texts = [a.text for a in answers]
    metrics: dict[str, float] = {}
    for name, other in (("winrate_vs_initial", baseline), ("winrate_vs_previous", previous)):
        result = judge_samples(judge, repeated, texts, [o.text for o in other])
        metrics.update({name: result["win_rate"], f"{name}_low": result["ci_low"], f"{name}_high": result["ci_high"]})
    metrics["length"] = float(np.mean([len(a.ids) for a in answers]))
    metrics["entropy"] = sample_entropy(model, tokenizer, repeated, answers)
    metrics.update(kl_metrics(model, anchors, tokenizer, prompts, config, seed=20_000 + 1000 * config.seed + t))
    if source is not None:
        metrics.update(exact_kl_metrics(model, anchors, tokenizer, source, prompts))
    cyclic = [p for p in prompts if task.kind(p) == "cyclic"] if task is not None else []
    if cyclic:
        gaps = exact_gap_metrics(model, tokenizer, task, cyclic)
        metrics.update(duality_gap=gaps["mean_gap"], mass_outside=gaps["mean_outside"])
    return metrics


@torch.no_grad()
def kl_metrics(model, anchors: dict, tokenizer, prompts, config, seed: int) -> dict[str, float]:
    """KL(π ‖ anchor) from `kl_samples` fresh samples of π per prompt, drawn anew each iteration, with the
    estimator E[r − 1 − log r], r = anchor(y)/π(y): unbiased, and non-negative sample by sample (Schulman's k3),
    where the plain mean of log π − log anchor can come out negative."""
    from prefkit.modeling import score
    from prefkit.modeling.generation import generate

    groups = generate(model, tokenizer, prompts, config.kl_samples, seed=seed, temperature=config.temperature,
                      top_p=config.top_p, max_new_tokens=config.max_new_tokens)
    scored = [(encode_prompt(tokenizer, p), [s.ids or [tokenizer.eos_token_id] for s in g])
              for p, g in zip(prompts, groups)]
    own = score(model, scored).double()
    metrics = {}
    for name, anchor in anchors.items():
        with using(anchor) as view:
            log_ratio = score(view, scored).double() - own
        metrics[f"kl_to_{name}"] = float((log_ratio.exp() - 1 - log_ratio).mean())
    return metrics


def exact_kl_metrics(model, anchors: dict, tokenizer, source, prompts) -> dict[str, float]:
    """KL(π ‖ anchor) exactly over the judge's enumerated responses plus one outcome for everything outside them
    (a lower bound on the full KL: merging outcomes never increases it), averaged over the prompts."""
    from prefkit.selfplay.winrates import distributions

    unique = list(dict.fromkeys(prompts))
    own = distributions(model, tokenizer, source, unique)
    metrics = {}
    for name, anchor in anchors.items():
        with using(anchor) as view:
            other = distributions(view, tokenizer, source, unique)
        metrics[f"kl_to_{name}_exact"] = float(np.mean([_kl(a, b) for a, b in zip(own, other)]))
    return metrics


def _kl(p, q) -> float:
    full = lambda d: np.append(d.probs * (1 - d.outside), d.outside)  # noqa: E731
    a, b = full(p), full(q)
    keep = a > 0
    return float(np.sum(a[keep] * (np.log(a[keep]) - np.log(np.maximum(b[keep], 1e-300)))))
