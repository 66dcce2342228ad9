"""prefkit.eval: how good, how diverse and how stable a trained model is, on any data set and prompts.

    result = evaluate_model(model, tokenizer, data="pairs.jsonl", reference=ref, judge=task.judge, task=task)
    render_report("my run", sections, "out/")       # markdown + self-contained HTML

Metrics (docs/eval.md): ranking accuracy R, R̃ and the idealised R* (arXiv 2405.19534), reward margins, win
rate under a judge with a confidence interval, generation entropy and diversity, lengths, exact duality gaps on
the bundled task, and the gradient-entanglement diagnostic (arXiv 2410.13828). The metric functions are pure
functions of numbers where they can be (ranking, entropy, winrate); the model-facing code calls them.
"""

import importlib

# Public names and their modules, imported on first use so that building the CLI does not import torch.
_EXPORTS = {
    "evaluate_model": "evaluate", "SECTIONS": "evaluate",
    "ranking_accuracy": "ranking", "idealised_ranking_accuracy": "ranking", "ranks": "ranking",
    "idealised_ranks": "ranking", "flips": "ranking", "reward_margins": "ranking",
    "pair_logps": "pairs", "ranking_metrics": "pairs", "PairLogps": "pairs",
    "entropy_from_logits": "entropy", "token_entropies": "entropy", "ngram_entropy": "entropy",
    "distinct_n": "entropy", "repetition_rate": "entropy", "text_statistics": "entropy",
    "length_statistics": "entropy", "mean_token_entropy": "entropy", "sample_entropy": "entropy",
    "sample": "samples", "Samples": "samples",
    "as_judge": "winrate", "mean_ci": "winrate", "judge_samples": "winrate",
    "exact_gap_metrics": "gaps",
    "exact_win_rates": "gaps",
    "gradient_entanglement": "entanglement", "pair_gradients": "entanglement",
    "entanglement_metrics": "entanglement", "regimes": "entanglement",
    "render_report": "report", "table": "report",
    "plot_results": "plots",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prefkit.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"prefkit.eval.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
