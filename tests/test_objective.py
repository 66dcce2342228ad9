"""The objective a trainer holds: losses declare their example kinds, reference use and batch statistics, and the
loops ask the declaration instead of naming a loss (prefkit.losses.objective, prefkit.losses.statistics)."""

import pytest
import torch

from prefkit import losses
from prefkit.losses import registry
from prefkit.losses.statistics import GapSelection, RewardShift
from prefkit.train.config import TrainConfig
from prefkit.selfplay.config import SelfPlayConfig

F32 = torch.float32


def pairs(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = {k: torch.randn(n, generator=g, dtype=F32) - 5 for k in
              ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")}
    return values


def test_the_kinds_that_feed_a_loss_are_declared_and_provide_its_inputs():
    provided = {"pairs": {"chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                          "chosen_lengths", "rejected_lengths",
                          "list_logps", "ref_list_logps", "list_lengths"},  # a pair is a ranked list of two
                "labelled": {"logps", "ref_logps", "labels"},
                "lists": {"list_logps", "ref_list_logps", "list_lengths"},
                "selfplay-pairs": {"chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                                   "chosen_lengths", "rejected_lengths", "prev_chosen_logps", "prev_rejected_logps"},
                "selfplay-singles": {"logps", "prev_logps", "ref_logps", "winrate", "advantages", "preference"}}
    for spec in losses.specs():
        statistics = {name for s in spec.statistics for name in s.provides}
        for kind in spec.feeds:
            missing = set(spec.required) - provided[kind] - statistics
            assert not missing, (spec.name, kind, missing)
    assert losses.get("kto").feeds == ("labelled",) and losses.get("mpo").feeds == ("selfplay-pairs",)
    assert losses.get("sppo").feeds == ("selfplay-singles",) and losses.get("sparsepo").feeds == ()


@pytest.mark.parametrize("loss, fragment", [
    ("mpo", "self-play pairs"), ("sppo", "single sampled responses"), ("sparsepo", "no prefkit command")])
def test_prefkit_train_refuses_a_loss_it_cannot_feed_before_anything_loads(loss, fragment):
    problems = TrainConfig(model="m", data="d", output_dir="o", loss=loss).problems()
    assert any(fragment in p for p in problems), problems


def test_selfplay_refuses_offline_only_losses_and_accepts_pair_losses():
    assert any("prefkit selfplay" in p for p in SelfPlayConfig(model="m", output_dir="o", loss="kto").problems())
    assert not [p for p in SelfPlayConfig(model="m", output_dir="o", loss="dpo").problems() if "loss" in p]


def test_a_mixture_of_two_kinds_is_refused():
    problems = TrainConfig(model="m", data="d", output_dir="o", loss=["dpo", "kto"]).problems()
    assert any("no example kind feeds every component" in p for p in problems), problems


def test_stapo_reads_the_reference_only_when_its_setting_says_so():
    assert not losses.Objective("stapo").reads_reference
    assert losses.Objective("stapo", hyperparameters={"reference_based": True}).reads_reference
    assert losses.Objective("simpo").reads_reference is False and losses.Objective("dpo").reads_reference


def test_a_statistic_uses_its_own_component_hyperparameters_inside_a_mixture():
    objective = losses.Objective(["dpo", "bco_pair"], hyperparameters={"dpo.beta": 0.1, "bco_pair.beta": 0.5})
    batch = pairs()
    objective(batch)
    shift = next(s for c in objective.components for s in c.statistics if isinstance(s, RewardShift))
    rewards = torch.cat([batch["chosen_logps"] - batch["ref_chosen_logps"],
                         batch["rejected_logps"] - batch["ref_rejected_logps"]])
    assert shift.mean == pytest.approx(0.5 * rewards.mean().item(), rel=1e-5)  # bco_pair's β, not dpo's or 0.1


def test_beta_dpo_filter_runs_in_training_and_not_in_evaluation():
    objective = losses.Objective("beta_dpo", hyperparameters={"rho": 0.25})
    seen = []
    real = losses.get("beta_dpo").fn
    spec = losses.get("beta_dpo")
    object.__setattr__(spec, "fn", lambda *a, **k: (seen.append(k.get("select_mask")), real(*a, **k))[1])
    try:
        objective(pairs(8))
        objective(pairs(8, seed=1), training=False)
    finally:
        object.__setattr__(spec, "fn", real)
    assert seen[0] is not None and int(seen[0].sum()) == 6  # ⌊(1 − ρ)·B⌋ pairs kept
    assert seen[1] is None  # evaluation scores every pair


def test_statistics_update_only_on_training_batches_and_survive_a_round_trip():
    objective = losses.Objective("beta_dpo")
    objective(pairs(seed=2))
    gap = next(s for s in objective.components[0].statistics if isinstance(s, GapSelection))
    mean = gap.mean
    objective(pairs(seed=3), training=False)
    assert gap.mean == mean and mean is not None
    again = losses.Objective("beta_dpo")
    again.load(objective.state())
    assert again.components[0].statistics[0].state() == gap.state()


def test_inputs_and_hyperparameters_are_told_apart_per_loss():
    """A hyper-parameter of one loss that is an input of another registered loss still reaches the first."""

    @registry.register("_test_reads_margin", family="one-sided", paper="(test)")
    def reads_margin(chosen_logps, rejected_logps, margin):
        return registry.LossOutput(margin - chosen_logps + rejected_logps)

    try:
        batch = {k: v for k, v in pairs(4).items() if not k.startswith("ref_")}
        with_two = losses.evaluate("slic", **batch, margin=2.0).losses
        expected = (2.0 - batch["chosen_logps"] + batch["rejected_logps"]).clamp(min=0)
        assert torch.allclose(with_two, expected)  # slic's δ = 2, not its default 1
    finally:
        registry._REGISTRY.pop("_test_reads_margin")
