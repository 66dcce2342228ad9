"""The exact preference-game lab: small games where every equilibrium and gap is computable, so that one can see
what each self-play method converges to (MPO's last iterate to the Nash equilibrium; fixed-magnet methods to the
regularised one; MWU/SPPO only on average) and check the LLM losses against their tabular counterparts.

NumPy and SciPy only; importing this package never imports torch.

    >>> from prefkit import games
    >>> P = games.cyclic3()
    >>> games.nash(P)                                  # (4/11, 3/11, 4/11)
    >>> run = games.simulate(P, "mpo", 1000, eta=0.5, alpha=0.2, refresh_every=20)
    >>> run.gaps[-1]                                   # about 6e-7
    >>> games.plan(P, [0.6, 0.3, 0.1])[0]              # the MPO (eta, alpha, refresh period) with the smallest gap
"""

from prefkit.games.driver import Trajectory, simulate
from prefkit.games.dynamics import ALGORITHMS, canonical_name
from prefkit.games.matrices import (bradley_terry, check_preference, cycle3, cyclic3, cyclic_tournament, load,
                                    mixture, random_game, rps)
from prefkit.games.metrics import duality_gap, kl, nash, qre, regularised_gap, win_rates
from prefkit.games.planner import PlanRow, exact_curve, inner_progress, plan, recommended, refreshes_early

__all__ = [
    "ALGORITHMS", "PlanRow", "Trajectory", "bradley_terry", "canonical_name", "check_preference", "cycle3",
    "cyclic3", "cyclic_tournament", "duality_gap", "exact_curve", "inner_progress", "kl", "load", "mixture", "nash", "plan", "qre",
    "random_game", "recommended", "refreshes_early", "regularised_gap", "rps", "simulate", "win_rates",
]
