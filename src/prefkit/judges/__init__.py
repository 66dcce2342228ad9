"""prefkit.judges: preference oracles P(a beats b | prompt) for self-play and evaluation, and the judges users
train (`prefkit judge train`: Bradley-Terry reward models and general preference models).

    >>> from prefkit.judges import load_judge, preference_matrix, win_rates
    >>> judge = load_judge("task")       # or "reward:PATH", "pairwise:PATH", "gpm:PATH", "module:function"
    >>> judge.compare(prompts, as_, bs)                  # [N] P(a_i beats b_i | prompt_i), checked
    >>> P = preference_matrix(judge, prompts, responses) # [num_prompts, K, K], antisymmetric, diagonal 1/2
    >>> win_rates(P)                                     # [num_prompts, K]: P(y_i beats the other samples)

See docs/judges.md.
"""

from prefkit import lazy

# Public names and the module that defines each, imported on first use, so that building the CLI (which imports
# prefkit.judges.cli, and with it this package) does not import torch.
_EXPORTS = {**dict.fromkeys(("Judge", "JudgeError"), "base"), "CallableJudge": "callables",
            **dict.fromkeys(("KINDS", "load_judge"), "load"),
            **dict.fromkeys(("preference_matrix", "win_rates"), "matrix"),
            **dict.fromkeys(("TEMPLATE", "PairwiseModelJudge"), "pairwise"), "RewardModelJudge": "reward",
            "GPMJudge": "gpm"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy.exports(__name__, _EXPORTS)
