"""Preference games: the matrices the lab plays on, and the one check every matrix passes before use.

A preference game is a matrix P with P[i, j] = P(y_i beats y_j), so P + P^T = 1 and the diagonal is 1/2.
A stack of k such matrices (k x n x n) is k prompts, simulated side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefkit.errors import PrefkitError

# How far P + P^T may drift from 1 before we call the input wrong (CSV files round to a few digits).
SYMMETRY_TOL = 1e-6


def check_preference(P, name: str = "preference matrix") -> np.ndarray:
    """Return P as a float array (n x n or k x n x n), or raise PrefkitError naming what is wrong with it."""
    try:
        P = np.asarray(P, dtype=float)
    except (TypeError, ValueError) as error:
        raise PrefkitError(f"{name} must be numeric: {error}") from None
    if P.ndim not in (2, 3) or P.shape[-1] != P.shape[-2]:
        raise PrefkitError(f"{name} must be square (n x n, or k x n x n for k prompts); got shape {P.shape}")
    if P.shape[-1] < 2:
        raise PrefkitError(f"{name} needs at least 2 actions; got shape {P.shape}")
    bad = np.argwhere(~np.isfinite(P))
    if len(bad):
        raise PrefkitError(f"{name} has NaN or infinite entries, first at index {tuple(int(i) for i in bad[0])}")
    if P.min() < 0 or P.max() > 1:
        where = np.unravel_index(np.argmax(np.maximum(-P, P - 1)), P.shape)
        raise PrefkitError(f"{name} entries must be probabilities in [0, 1]; "
                           f"entry {tuple(int(i) for i in where)} is {P[where]:g}")
    violation = np.abs(P + np.swapaxes(P, -1, -2) - 1.0)
    if violation.max() > SYMMETRY_TOL:
        where = np.unravel_index(np.argmax(violation), P.shape)
        raise PrefkitError(f"{name} must satisfy P + P^T = 1 (P[i, j] = P(y_i beats y_j)); at index "
                           f"{tuple(int(i) for i in where)} P + P^T is off by {violation[where]:.3g}")
    # Snap to exact antisymmetry so that rounding in a file does not leave a spurious gap at the equilibrium.
    return 0.5 + 0.5 * (P - np.swapaxes(P, -1, -2))


def cycle3(p_ba: float = 0.9, p_cb: float = 0.9, p_ac: float = 0.8) -> np.ndarray:
    """Three actions a, b, c in a cycle: b beats a, c beats b, a beats c, with the given probabilities."""
    P = np.full((3, 3), 0.5)
    for winner, loser, p in ((1, 0, p_ba), (2, 1, p_cb), (0, 2, p_ac)):
        P[winner, loser], P[loser, winner] = p, 1.0 - p
    return check_preference(P, "cycle3")


def cyclic3() -> np.ndarray:
    """COMAL's cyclic game: P(b>a) = P(c>b) = 0.9, P(a>c) = 0.8; its unique Nash equilibrium is (4/11, 3/11, 4/11)."""
    return cycle3(0.9, 0.9, 0.8)


def rps(perturbation: float = 0.0) -> np.ndarray:
    """Rock-paper-scissors as a preference game (a win is certain); `perturbation` weakens rock's win over scissors."""
    if not 0.0 <= perturbation <= 0.5:
        raise PrefkitError(f"rps perturbation must lie in [0, 0.5]; got {perturbation}")
    return cycle3(1.0, 1.0, 1.0 - perturbation)


def random_game(n: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    """EGPO's generator: P[i, j] ~ U(0, 1) above the diagonal, 1 - P[j, i] below it; `batch` stacks that many games."""
    if n < 2:
        raise PrefkitError(f"a random game needs n >= 2 actions; got n={n}")
    rng = np.random.default_rng(seed)
    shape = (batch or 1, n, n)
    upper = np.triu(rng.uniform(size=shape), k=1)
    P = 0.5 * np.eye(n) + upper + np.triu(1.0 - upper, k=1).swapaxes(-1, -2)
    return P if batch else P[0]


def bradley_terry(scores) -> np.ndarray:
    """Transitive game from scores: P[i, j] = sigmoid(s_i - s_j). The highest score is the Nash equilibrium."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or len(s) < 2 or not np.all(np.isfinite(s)):
        raise PrefkitError(f"bradley_terry needs a 1-d list of at least 2 finite scores; got {scores!r}")
    return check_preference(1.0 / (1.0 + np.exp(s[None, :] - s[:, None])), "bradley_terry")


def cyclic_tournament(n: int) -> np.ndarray:
    """Regular tournament on n (odd) actions: i beats the (n-1)/2 actions before it on a circle; uniform is Nash."""
    if n < 3 or n % 2 == 0:
        raise PrefkitError(f"a cyclic tournament needs an odd n >= 3; got n={n}")
    offset = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
    wins = (offset >= 1) & (offset <= (n - 1) // 2)
    return np.where(wins, 1.0, np.where(offset == 0, 0.5, 0.0))


def mixture(n: int, cyclic_weight: float, seed: int = 0) -> np.ndarray:
    """(1 - w) * Bradley-Terry(random scores) + w * cyclic tournament: w = 0 is transitive, w = 1 purely cyclic."""
    if not 0.0 <= cyclic_weight <= 1.0:
        raise PrefkitError(f"mixture cyclic_weight must lie in [0, 1]; got {cyclic_weight}")
    scores = np.random.default_rng(seed).normal(size=n)
    return (1.0 - cyclic_weight) * bradley_terry(scores) + cyclic_weight * cyclic_tournament(n)


def load(path) -> np.ndarray:
    """Read a preference matrix from .csv (comma-separated, no header) or .npy and check it."""
    return check_preference(read_array(path, "preference matrix"), str(path))


def read_array(path, what: str) -> np.ndarray:
    """A numeric array from .csv (comma-separated, no header) or .npy, or a PrefkitError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PrefkitError(f"{what} file not found: {path}")
    readers = {".csv": lambda p: np.loadtxt(p, delimiter=",", ndmin=2), ".npy": np.load}
    if path.suffix.lower() not in readers:
        raise PrefkitError(f"{path}: unknown {what} format {path.suffix!r}; use .csv or .npy")
    try:
        return readers[path.suffix.lower()](path)
    except (ValueError, OSError) as error:
        raise PrefkitError(f"{path}: cannot read a {what}: {error}") from None


# Named games for the CLI (`--game NAME`); each takes the seed and n, and uses what it needs.
NAMED_GAMES = {
    "cyclic3": lambda n, seed: cyclic3(),
    "rps": lambda n, seed: rps(),
    "perturbed-rps": lambda n, seed: rps(0.2),
    "random": lambda n, seed: random_game(n, seed),
    "bradley-terry": lambda n, seed: bradley_terry(np.random.default_rng(seed).normal(size=n)),
    "mixture": lambda n, seed: mixture(n, 0.5, seed),
}
