"""prefkit.losses: every preference objective as a small pure function of log-probs, registered by name.

    import prefkit.losses as L
    L.compute("dpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)  # [B]
    L.evaluate("simpo", chosen_logps, rejected_logps, chosen_lengths=lw, rejected_lengths=ll).metrics
    L.compute(["dpo", "sft"], ..., weights=[1.0, 0.005])                                         # RPO
    L.compute("kto", logps=lp, ref_logps=rp, labels=y, kl=kl)                                    # unpaired
    L.names()                                                                                    # catalogue

Every loss reads the inputs its signature names (see `prefkit losses NAME`), so one call shape serves
pairwise, unpaired, self-play and token-level losses alike. The modules group the families:
one_sided (DPO family, with TRL's loss_type names as aliases), reference_free (SimPO, CPO, ORPO, SLiC, SFT),
two_sided (StaPO), unpaired (KTO, BCO, NPO), selfplay (SPPO, INPO, MPO, online IPO, Nash-MD),
token_level (SparsePO).
"""

from prefkit.losses.registry import (
    LossOutput,
    LossResult,
    LossSpec,
    compute,
    evaluate,
    get,
    input_names,
    names,
    register,
    specs,
)
from prefkit.losses import one_sided, reference_free, two_sided, unpaired, selfplay, token_level  # noqa: F401,E402
from prefkit.losses.one_sided import beta_dpo_select  # noqa: E402
from prefkit.losses.unpaired import bco_reward_shift, kto_kl_estimate  # noqa: E402

__all__ = [
    "LossOutput", "LossResult", "LossSpec", "compute", "evaluate", "get", "input_names", "names", "register",
    "specs", "beta_dpo_select", "bco_reward_shift", "kto_kl_estimate",
]
