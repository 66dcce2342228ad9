"""The two prompt families of the synthetic task, with their ground-truth preferences written out in full.

* **transitive** (`sort: 3 1 2`): the well-formed responses are the 6 orderings of the prompt's three digits.
  Each has a hidden quality, the number of digit pairs in increasing order (0 to 3), and preferences follow
  Bradley-Terry on it: P(a beats b) = sigmoid(s(a) - s(b)). The sorted answer is the unique (pure) equilibrium.
* **cyclic** (`pick: rock paper scissors`): the well-formed responses are the listed options, and preferences
  follow a fixed matrix per option set (below) with a cycle in it, so no Bradley-Terry scores fit. Each matrix has a
  unique Nash equilibrium with full support.

Anything else (empty, truncated, repeated, another prompt's answer) is malformed and loses to every well-formed
response with probability at least MALFORMED_LOSS; two malformed responses tie.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# P(any well-formed response beats a malformed one): exactly this on cyclic prompts, and for the worst ordering
# on transitive ones (better orderings win more often, so Bradley-Terry holds there with malformed strings too).
MALFORMED_LOSS = 0.95
# Share of malformed responses in the imperfect reference (SFT) policy, on every prompt.
REFERENCE_MALFORMED = 0.08
DIGITS = "0123456789"
EVAL_EVERY = 5  # every 5th digit set (and its 6 orderings) is held out for evaluation


@dataclass(frozen=True)
class CyclicGame:
    """One option set of the cyclic family: matrix[i][j] = P(options[i] beats options[j])."""

    options: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    nash: tuple[float, ...]       # the unique equilibrium, written as fractions (tests check it)
    reference: tuple[float, ...]  # the imperfect SFT policy's choice among the options: skewed, not the equilibrium
    orders: tuple[tuple[int, ...], ...]  # the option orders shown in prompts; the last two are the eval split


def _five_cycle(beats_next: list[float], beats_second: list[float]) -> tuple[tuple[float, ...], ...]:
    """Five options on a circle: option i beats option i+1 with probability beats_next[i] and option i+2 with
    beats_second[i] (all above 1/2), so every option beats two and loses to two: cycles everywhere."""
    P = np.full((5, 5), 0.5)
    for i in range(5):
        for step, p in ((1, beats_next[i]), (2, beats_second[i])):
            j = (i + step) % 5
            P[i, j], P[j, i] = p, round(1.0 - p, 10)
    return tuple(tuple(float(x) for x in row) for row in P)


_THREE_ORDERS = tuple(itertools.permutations(range(3)))                       # 4 train + 2 eval orders
_FIVE_ORDERS = ((0, 1, 2, 3, 4), (2, 4, 1, 3, 0), (4, 3, 2, 1, 0), (1, 3, 0, 4, 2), (3, 0, 4, 2, 1), (2, 0, 3, 1, 4))

CYCLIC_GAMES: tuple[CyclicGame, ...] = (
    # COMAL's game (reference note, Experiment A): paper beats rock and scissors beat paper with 0.9, rock beats
    # scissors with 0.8.
    CyclicGame(("rock", "paper", "scissors"),
               ((0.5, 0.1, 0.8),
                (0.9, 0.5, 0.1),
                (0.2, 0.9, 0.5)),
               (4 / 11, 3 / 11, 4 / 11), (0.6, 0.3, 0.1), _THREE_ORDERS),
    # Uneven margins (moon > sun 0.7, star > moon 0.85, sun > star 0.6): a lopsided equilibrium.
    CyclicGame(("sun", "moon", "star"),
               ((0.5, 0.3, 0.6),
                (0.7, 0.5, 0.15),
                (0.4, 0.85, 0.5)),
               (7 / 13, 2 / 13, 4 / 13), (0.15, 0.6, 0.25), _THREE_ORDERS),
    # A weak cycle (bee > ant 0.6, cat > bee 0.6, ant > cat 0.55): close to coin flips, nearly but not transitive.
    CyclicGame(("ant", "bee", "cat"),
               ((0.5, 0.4, 0.55),
                (0.6, 0.5, 0.4),
                (0.45, 0.6, 0.5)),
               (2 / 5, 1 / 5, 2 / 5), (0.2, 0.6, 0.2), _THREE_ORDERS),
    # Five options, each beating the next two on the circle with uneven strengths.
    CyclicGame(("red", "blue", "green", "gray", "pink"),
               _five_cycle([0.65, 0.85, 0.85, 0.85, 0.95], [0.95, 0.6, 0.6, 0.6, 0.85]),
               (4 / 36, 4 / 36, 11 / 36, 6 / 36, 11 / 36), (0.4, 0.3, 0.1, 0.1, 0.1), _FIVE_ORDERS),
)


@dataclass(frozen=True)
class PromptSpec:
    """Everything the oracle knows about one prompt, over its canonical (well-formed) responses."""

    prompt: str
    kind: str                      # "transitive" or "cyclic"
    split: str                     # "train" or "eval"
    canonical: tuple[str, ...]
    matrix: np.ndarray             # P[i, j] = P(canonical[i] beats canonical[j])
    beats_malformed: np.ndarray    # P(canonical[i] beats any malformed response)
    nash: np.ndarray
    reference: np.ndarray          # reference policy over canonical, renormalised (it adds REFERENCE_MALFORMED)
    prompt_order: int              # index of the response that copies the prompt's order (transitive only; else -1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def sort_specs() -> list[PromptSpec]:
    """The transitive family: one prompt per ordered triple of distinct digits (720 prompts)."""
    specs = []
    for number, digits in enumerate(itertools.combinations(DIGITS, 3)):
        split = "eval" if number % EVAL_EVERY == EVAL_EVERY - 1 else "train"
        canonical = tuple(" ".join(p) for p in itertools.permutations(digits))  # starts with the sorted answer
        scores = np.array([sum(a < b for a, b in itertools.combinations(p, 2)) for p in canonical], dtype=float)
        matrix = _sigmoid(scores[:, None] - scores[None, :])
        beats_malformed = _sigmoid(scores - scores.min() + np.log(MALFORMED_LOSS / (1 - MALFORMED_LOSS)))
        nash = (scores == scores.max()).astype(float)
        for shown in canonical:
            # The reference sorts on purpose 35 % of the time, copies the prompt's order 20 % (a habit preference
            # training has to unlearn) and guesses uniformly 37 %; REFERENCE_MALFORMED makes up the rest.
            copy = canonical.index(shown)
            reference = np.full(6, 0.37 / 6)
            reference[0] += 0.35
            reference[copy] += 0.20
            specs.append(PromptSpec(f"sort: {shown}", "transitive", split, canonical, matrix, beats_malformed, nash,
                                    reference / reference.sum(), copy))
    return specs


def pick_specs() -> list[PromptSpec]:
    """The cyclic family: each option set, shown in several orders; the order does not change the preferences."""
    specs = []
    for game in CYCLIC_GAMES:
        n = len(game.options)
        matrix = np.array(game.matrix)
        reference = np.array(game.reference)
        for number, order in enumerate(game.orders):
            split = "eval" if number >= len(game.orders) - 2 else "train"
            prompt = "pick: " + " ".join(game.options[i] for i in order)
            specs.append(PromptSpec(prompt, "cyclic", split, game.options, matrix, np.full(n, MALFORMED_LOSS),
                                    np.array(game.nash), reference, -1))
    return specs


def malformed(spec: PromptSpec, rng: np.random.Generator) -> str:
    """A response outside the grammar of `spec.prompt`, of a kind a small model actually produces.

    Never the empty string: the oracle ranks "" as malformed too, but data loaders (prefkit.data, TRL) reject
    rows with an empty completion, so the reference policy's data sets avoid it."""
    good = spec.canonical[int(rng.integers(len(spec.canonical)))]
    words = good.split()
    candidates = [
        " ".join([words[0]] * 3),                             # a repeated token
        good[: max(1, len(good) // 2)].rstrip(),              # truncated
        good + " " + words[-1],                               # run on
        "rock" if spec.kind == "transitive" else "1 2 3",     # another family's answer
        good.replace(" ", "") + "?",                          # glued together, punctuated
    ]
    bad = [text for text in candidates if text not in spec.canonical]
    return bad[int(rng.integers(len(bad)))]
