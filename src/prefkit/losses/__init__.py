"""prefkit.losses: every preference objective as a small pure function of log-probs, registered by name.

    import prefkit.losses as L
    L.compute("dpo", chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)  # [B]
    L.evaluate("simpo", chosen_logps, rejected_logps, chosen_lengths=lw, rejected_lengths=ll).metrics
    L.compute(["dpo", "sft"], ..., weights=[1.0, 0.005])                                         # RPO
    L.compute("kto", logps=lp, ref_logps=rp, labels=y, kl=kl)                                    # unpaired
    L.names()                                                                                    # catalogue
    L.Objective(["dpo", "sft"], [1.0, 0.005], {"beta": 0.1})(inputs)    # what a trainer holds (statistics)

Every loss reads the inputs its signature names (see `prefkit losses NAME`), so one call shape serves
pairwise, unpaired, self-play and token-level losses alike. The modules group the families:
one_sided (DPO family, with TRL's loss_type names as aliases), reference_free (SimPO, CPO, ORPO, SLiC, SFT),
two_sided (StaPO), unpaired (KTO, BCO, NPO), selfplay (SPPO, INPO, MPO, online IPO, Nash-MD),
token_level (SparsePO).
"""

from prefkit import lazy

# Public names and the module that defines each, imported on first use: building the CLI imports
# prefkit.losses.cli, and with it this package, and `prefkit --help` must not pay for torch. The first use also
# imports every family module, so that the registry holds every loss before anyone looks a name up.
_EXPORTS = {**dict.fromkeys(("KINDS", "LossOutput", "LossResult", "LossSpec", "compute", "evaluate", "get",
                             "input_names", "names", "register", "specs"), "registry"),
            **dict.fromkeys(("Objective", "feed_problem"), "objective"),
            **dict.fromkeys(("beta_dpo_select", "bco_reward_shift", "kto_kl_estimate"), "statistics")}
FAMILY_MODULES = ("one_sided", "reference_free", "two_sided", "unpaired", "selfplay", "token_level")
__all__ = list(_EXPORTS)
__getattr__ = lazy.exports(__name__, _EXPORTS, first=FAMILY_MODULES)  # the family modules fill the registry
