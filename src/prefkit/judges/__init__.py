"""prefkit.judges: preference oracles P(a beats b | prompt) for self-play and evaluation.

    >>> from prefkit.judges import load_judge, preference_matrix, win_rates
    >>> judge = load_judge("task")                       # or "reward:PATH", "pairwise:PATH", "module:function"
    >>> judge.compare(prompts, as_, bs)                  # [N] P(a_i beats b_i | prompt_i), checked
    >>> P = preference_matrix(judge, prompts, responses) # [num_prompts, K, K], antisymmetric, diagonal 1/2
    >>> win_rates(P)                                     # [num_prompts, K]: P(y_i beats the other samples)

See docs/judges.md.
"""

from prefkit.judges.base import Judge, JudgeError
from prefkit.judges.callables import CallableJudge
from prefkit.judges.load import KINDS, load_judge
from prefkit.judges.matrix import preference_matrix, win_rates
from prefkit.judges.pairwise import TEMPLATE, PairwiseModelJudge
from prefkit.judges.reward import RewardModelJudge

__all__ = ["KINDS", "TEMPLATE", "CallableJudge", "Judge", "JudgeError", "PairwiseModelJudge", "RewardModelJudge",
           "load_judge", "preference_matrix", "win_rates"]
