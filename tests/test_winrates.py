"""Exact win rates from an enumerating judge, the canonical pairing, tracking of the exact step, and the KL
estimators: the pieces that let the trained model follow MPO's dynamics (docs/selfplay.md, "Win rates")."""

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.judges import load_judge
from prefkit.judges.exact import enumerating
from prefkit.modeling.generation import Sample
from prefkit.selfplay import winrates
from prefkit.selfplay.config import SelfPlayConfig


def test_the_oracle_gives_exact_win_rates_as_the_task_computes_them(task):
    source = enumerating(load_judge("task"))
    for prompt in task.prompts("cyclic", split="eval")[:3] + task.prompts("transitive", split="eval")[:2]:
        canonical = task.canonical(prompt)
        rng = np.random.default_rng(1)
        probs, outside = rng.dirichlet(np.ones(len(canonical))), 0.2
        candidates = canonical + [task.malformed(prompt, rng)]
        rates = source.win_rates_against(prompt, candidates, probs, outside)
        for i in range(len(canonical)):  # a canonical answer is the policy that always gives it
            assert rates[i] == pytest.approx(task.win_rate(prompt, np.eye(len(canonical))[i], probs, 0.0, outside))
        assert rates[-1] == pytest.approx(task.win_rate(prompt, probs, probs, 1.0, outside))  # a malformed answer
        # a policy's mean win rate against itself is one half
        mine = np.append(probs * (1 - outside), outside)
        assert mine @ rates == pytest.approx(0.5)


def test_exact_needs_an_enumerating_judge_and_auto_picks_it():
    config = SelfPlayConfig(model="m", output_dir="o")
    assert winrates.resolve(config, load_judge("task"))[:2] == ("exact", "canonical")
    black_box = load_judge(lambda prompt, a, b: 0.5)
    assert winrates.resolve(config, black_box)[:2] == ("sampled", "all")
    with pytest.raises(PrefkitError, match="winrates: exact needs a judge that enumerates"):
        winrates.resolve(SelfPlayConfig(model="m", output_dir="o", winrates="exact"), black_box)
    with pytest.raises(PrefkitError, match="pairs: canonical"):
        winrates.resolve(SelfPlayConfig(model="m", output_dir="o", pairs="canonical"), black_box)
    nash_md = SelfPlayConfig(model="m", output_dir="o", loss="nash_md", mixture_coef=0.1)
    assert winrates.resolve(nash_md, load_judge("task"))[0] == "sampled"  # its opponents are not π_t
    assert any("Nash-MD" in p for p in SelfPlayConfig(model="m", output_dir="o", winrates="exact",
                                                      mixture_coef=0.1).problems())


def test_canonical_candidates_keep_each_outside_sample_once():
    policy = winrates.Enumerated([Sample("a", [1]), Sample("b", [2])], np.array([0.5, 0.5]), 0.1)
    samples = [Sample("b", [2]), Sample("zz", [3, 4]), Sample("zz", [3, 4]), Sample("", []), Sample("q", [5])]
    candidates, enumerated = winrates.canonical_candidates(policy, samples)
    assert [c.text for c in candidates] == ["a", "b", "zz", "q"] and enumerated == 2
    from prefkit.selfplay.steps import _pairs

    assert _pairs("canonical", np.zeros(4), 2) == [(0, 1), (2, 0), (2, 1), (3, 0), (3, 1)]


def test_a_loss_that_reads_no_label_gets_the_winner_as_the_chosen_answer(tokenizer):
    """`pairs: all` keeps the sampled order and a label; DPO reads no label, so its pairs are put winner first
    (and a tie, which says nothing to it, is dropped). A label-reading loss keeps the order and the label."""
    from prefkit import losses
    from prefkit.selfplay.steps import LABELS, build_examples

    samples = [[Sample("a", [5]), Sample("b", [6]), Sample("c", [7])]]
    matrix = np.array([[[0.5, 0.0, 0.5], [1.0, 0.5, 1.0], [0.5, 0.0, 0.5]]])  # b beats a and c; a ties c
    rates = [np.array([0.25, 0.75, 0.25])]
    oriented, inputs = build_examples(["pick: a b c"], samples, rates, tokenizer, "all", False, matrices=matrix,
                                      labelled=False)
    assert [(e.chosen_ids, e.rejected_ids) for e in oriented] == [([6], [5]), ([6], [7])]
    assert inputs["preference"].tolist() == [1.0, 1.0]
    kept, inputs = build_examples(["pick: a b c"], samples, rates, tokenizer, "all", False, matrices=matrix)
    assert [(e.chosen_ids, e.rejected_ids) for e in kept] == [([5], [6]), ([5], [7]), ([6], [7])]
    assert inputs["preference"].tolist() == [0.0, 0.5, 1.0]
    by_rates, _ = build_examples(["pick: a b c"], samples, rates, tokenizer, "all", False, labelled=False)
    assert [e.chosen_ids for e in by_rates] == [[6], [6]]  # exact win rates orient the pairs the same way
    assert not losses.Objective("dpo").reads(*LABELS) and losses.Objective("mpo").reads(*LABELS)


def test_tracking_measures_the_distance_to_the_exact_step():
    start = winrates.Enumerated([], np.array([0.5, 0.3, 0.2]), 0.0)
    magnet = winrates.Enumerated([], np.array([0.2, 0.3, 0.5]), 0.0)
    rates = np.array([0.6, 0.4, 0.5])
    weights = (0.625, 0.375, 3.75)  # MPO's step with η = 6, α = 0.1
    log_target = 0.625 * np.log(start.probs) + 0.375 * np.log(magnet.probs) + 3.75 * rates
    target = np.exp(log_target) / np.exp(log_target).sum()
    hit = winrates.Enumerated([], target, 0.0)
    share = lambda result: result[1] / result[2]  # noqa: E731
    hit_result = winrates.tracking(start, hit, magnet, rates, weights)
    assert hit_result[0] == pytest.approx(0.0, abs=1e-12) and share(hit_result) == pytest.approx(1.0)
    stayed = winrates.tracking(start, start, magnet, rates, weights)
    assert stayed[0] > 0.05 and share(stayed) == pytest.approx(0.0)
    halfway = np.exp(0.5 * (np.log(start.probs) + np.log(target)))
    assert share(winrates.tracking(start, winrates.Enumerated([], halfway / halfway.sum(), 0.0), magnet, rates,
                                   weights)) == pytest.approx(0.5)


def test_kl_estimates_are_never_negative_and_exact_kl_is_zero_against_itself(task, tokenizer):
    from prefkit.selfplay.steps import exact_kl_metrics, kl_metrics

    config = SelfPlayConfig(model="m", output_dir="o", kl_samples=3, max_new_tokens=4)
    model, other = task.model(seed=0, hidden_size=32).eval(), task.model(seed=1, hidden_size=32).eval()
    prompts = task.prompts("cyclic", split="eval")[:4]
    for seed in range(3):  # several draws: the plain log-ratio mean goes negative on some, k3 never
        kl = kl_metrics(model, {"magnet": other, "initial": model}, tokenizer, prompts, config, seed=seed)
        assert kl["kl_to_magnet"] > 0 and kl["kl_to_initial"] == pytest.approx(0.0, abs=1e-9)
    exact = exact_kl_metrics(model, {"magnet": other, "initial": model}, tokenizer,
                             enumerating(load_judge("task")), prompts)
    assert exact["kl_to_magnet_exact"] > 0 and exact["kl_to_initial_exact"] == pytest.approx(0.0, abs=1e-9)


def test_weighted_win_rates_use_the_policy_probabilities_of_the_distinct_samples():
    P = np.array([[0.5, 0.9, 0.2], [0.1, 0.5, 0.7], [0.8, 0.3, 0.5]])  # a cycle over answers a, b, c
    pi = np.array([0.6, 0.3, 0.1])
    eos = 9
    answers = {"a": Sample("a", [1, eos]), "b": Sample("b", [2, eos]), "c": Sample("c", [3, eos])}
    drawn = ["a", "a", "a", "b", "c", "a"]  # counts 4/6, 1/6, 1/6: not π
    group = [answers[x] for x in drawn]
    index = ["abc".index(x) for x in drawn]
    matrices = P[np.ix_(index, index)][None]
    logps = [np.log(pi[index])]
    weighted = winrates.weighted_rates(matrices, [group], logps, eos)[0]
    assert weighted == pytest.approx((P @ pi)[index])  # every answer seen: exact, whatever the counts
    truncated = [Sample(s.text, s.ids[:-1]) for s in group]  # no EOS: not complete responses, plain estimate
    from prefkit.judges import win_rates

    assert winrates.weighted_rates(matrices, [truncated], logps, eos)[0] == pytest.approx(win_rates(matrices)[0])


def test_eta_final_shrinks_the_step_geometrically_over_the_iterations():
    config = SelfPlayConfig(model="m", output_dir="o", loss="mpo", loss_params={"eta": 6.0, "alpha": 0.1},
                            iterations=5, eta_final=1.5)
    etas = [config.loss_params_at(t)["eta"] for t in range(1, 6)]
    assert etas == pytest.approx([6.0, 6.0 / 2 ** 0.5, 3.0, 3.0 / 2 ** 0.5, 1.5])
    assert config.loss_params_at(3)["alpha"] == 0.1
    assert SelfPlayConfig(model="m", output_dir="o", loss="mpo").loss_params_at(7) == {}
    assert any("has no step size eta" in p for p in SelfPlayConfig(model="m", output_dir="o", loss="online_ipo",
                                                                  eta_final=0.5).problems())
