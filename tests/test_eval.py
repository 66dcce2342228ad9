"""prefkit.eval metrics: the pure functions on numbers with hand-computed answers, then the model-facing ones
on a tiny model against independent computations from the full logits."""

import math

import numpy as np
import pytest
import torch

from prefkit.data.examples import Example
from prefkit.errors import PrefkitError
from prefkit.eval import entropy, ranking
from prefkit.eval.entanglement import entanglement_metrics, gradient_entanglement, pair_gradients, regimes
from prefkit.eval.evaluate import evaluate_model
from prefkit.eval.gaps import exact_gap_metrics
from prefkit.eval.pairs import pair_logps, ranking_metrics
from prefkit.eval.samples import sample
from prefkit.games import duality_gap
from prefkit.tasks import encode_completion, encode_prompt, sample_responses


# --- ranking on numbers -----------------------------------------------------------------------------------------


def test_ranking_accuracy_summed_and_length_normalised():
    w, l = [-1.0, -5.0, -2.0, -3.0], [-2.0, -1.0, -2.0, -4.0]
    assert ranking.ranks(w, l).tolist() == [1, 0, 1, 1]  # a tie counts as ranked (π(y_w) ≥ π(y_l))
    assert ranking.ranking_accuracy(w, l) == 0.75
    # per token: -1/1 < -2/4; -5 < -1; -2/4 > -2/1; -3 > -4
    assert ranking.ranking_accuracy(w, l, [1, 1, 4, 1], [4, 1, 1, 1]) == 0.5
    with pytest.raises(PrefkitError):
        ranking.ranking_accuracy(w, l[:3])


def test_idealised_ranking_accuracy_matches_the_formula_by_hand():
    # α = 1 − 0.01: the reference may misrank by up to log(99)/β = 45.95 nats at β = 0.1.
    ref_w, ref_l = np.array([-50.0, -40.0, -1.0, -3.0]), np.zeros(4)
    assert ranking.idealised_ranks(ref_w, ref_l, beta=0.1).tolist() == [0, 1, 1, 1]
    assert ranking.idealised_ranking_accuracy(ref_w, ref_l, beta=1.0) == 0.5  # log(99) = 4.6: only -1 and -3 pass
    # Per-pair α: 0.6 adds log(1.5)/0.1 = 4.05 nats; α = 0.5 adds nothing and the inequality is strict.
    d = np.array([-4.0, -5.0, 0.0, 3.0])
    assert ranking.idealised_ranks(d, np.zeros(4), 0.1, alpha=[0.6, 0.6, 0.5, 0.5]).tolist() == [1, 0, 0, 1]
    with pytest.raises(PrefkitError):
        ranking.idealised_ranks(d, d, 0.1, alpha=1.0)


def test_flips_and_reward_margins_by_hand():
    assert ranking.flips([1, 1, 0, 0, 1], [0, 1, 1, 0, 0]) == {
        "flipped": 3, "fixed": 2, "broken": 1, "reference_misranked": 3, "fixed_fraction": 2 / 3}
    out = ranking.reward_margins([-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0], [-2.0, -2.0], beta=0.5)
    # chosen rewards 0.5·(1, 0), rejected 0.5·(−1, 1): margins (1, −0.5)
    assert out["rewards/chosen"] == 0.25 and out["rewards/rejected"] == 0.0
    assert out["margins"] == [1.0, -0.5] and out["rewards/margins"] == 0.25 and out["rewards/accuracies"] == 0.5
    assert out["margin"]["q50"] == 0.25 and out["margin"]["max"] == 1.0


# --- entropy and text statistics on numbers -----------------------------------------------------------------------


def test_entropy_of_known_distributions():
    assert entropy.entropy_from_logits(torch.zeros(3, 50)).tolist() == pytest.approx([math.log(50)] * 3)
    assert entropy.entropy_from_logits(torch.tensor([0.0, -1e4, -1e4])).item() == pytest.approx(0.0, abs=1e-12)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert entropy.entropy_from_logits(p.log() + 7.0).item() == pytest.approx(1.5 * math.log(2))


def test_ngram_statistics_by_hand():
    assert entropy.ngram_entropy(["a a a a"], 1) == 0.0 and entropy.ngram_entropy(["a a a a"], 2) == 0.0
    # "a b a c": unigrams a:2, b:1, c:1; bigrams ab, ba, ac each once
    assert entropy.ngram_entropy(["a b a c"], 1) == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert entropy.ngram_entropy(["a b a c"], 2) == pytest.approx(math.log(3))
    # n-grams never span two texts: "a b" + "c d" has bigrams ab, cd only
    assert entropy.ngram_entropy(["a b", "c d"], 2) == pytest.approx(math.log(2))
    assert entropy.distinct_n(["a a a a"], 1) == 0.25 and entropy.distinct_n(["a b", "a c"], 1) == 0.75
    assert entropy.repetition_rate(["a a a a", "a b"], 1) == pytest.approx((0.75 + 0.0) / 2)
    assert entropy.repetition_rate(["a", "x"], 2) == 0.0  # no bigrams at all
    stats = entropy.text_statistics(["a b a c"], orders=(1, 2))
    assert set(stats) == {"ngram_entropy", "distinct", "repetition"} and stats["distinct"]["2"] == 1.0
    assert entropy.length_statistics([1, 2, 6], [True, True, False]) == {
        "mean": 3.0, "median": 2.0, "min": 1, "max": 6, "stopped": pytest.approx(2 / 3)}


def test_entanglement_regimes_on_numbers():
    # ⟨g_w,g_l⟩ = 1: below both squared norms (correct); between them (entangled either way); equal gradients.
    out = regimes(dot=[1.0, 1.0, 1.0, 4.0], norm_w2=[4.0, 4.0, 0.5, 4.0], norm_l2=[4.0, 0.5, 4.0, 4.0])
    assert out == {"both_correct": 0.25, "both_rise": 0.25, "both_fall": 0.25, "entangled": 0.5}
    m = entanglement_metrics([3.0], [9.0], [4.0])
    assert m["cosine"]["mean"] == pytest.approx(0.5) and m["norm_chosen"]["mean"] == 3.0
    assert m["ratio_chosen"]["mean"] == pytest.approx(1 / 3) and m["ratio_rejected"]["mean"] == 0.75


# --- model-facing functions on the tiny task model ------------------------------------------------------------------


def pair(tokenizer, prompt, chosen, rejected, row=1):
    return Example.pair(encode_prompt(tokenizer, prompt), encode_completion(tokenizer, chosen),
                        encode_completion(tokenizer, rejected), row)


@pytest.fixture(scope="module")
def examples(tokenizer):
    return [pair(tokenizer, "sort: 3 1 2", "1 2 3", "3 1 2", 1), pair(tokenizer, "pick: rock paper scissors",
            "paper", "rock", 2), pair(tokenizer, "sort: 9 0 5", "0 5 9", "9 0 5 5", 3)]


def full_logp(model, ids, start):
    """log π(ids[start:] | ids[:start]) from the plain full logits of one unpadded sequence."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logits[t - 1, ids[t]] for t in range(start, len(ids)))


def test_pair_logps_and_ranking_metrics_match_full_logits(model, tokenizer, examples):
    logps = pair_logps(model, examples, tokenizer.pad_token_id, batch_size=2)  # two batches: order is restored
    with torch.no_grad():
        for i, e in enumerate(examples):
            assert logps.chosen[i] == pytest.approx(full_logp(model, e.prompt_ids + e.chosen_ids,
                                                              len(e.prompt_ids)).item(), abs=1e-8)
            assert logps.rejected[i] == pytest.approx(full_logp(model, e.prompt_ids + e.rejected_ids,
                                                                len(e.prompt_ids)).item(), abs=1e-8)
            assert logps.len_rejected[i] == len(e.rejected_ids)
    out = ranking_metrics(logps, logps, beta=0.1)
    assert out["ranking_accuracy"] == ranking.ranking_accuracy(logps.chosen, logps.rejected)
    assert out["flips"]["flipped"] == 0 and out["rewards"]["margins"] == [0.0] * 3  # model == reference


def test_token_entropies_match_full_logits(model, tokenizer):
    sequences = [(encode_prompt(tokenizer, "sort: 3 1 2"), encode_completion(tokenizer, "1 2 3")),
                 (encode_prompt(tokenizer, "pick: sun moon star"), encode_completion(tokenizer, "moon"))]
    got = entropy.token_entropies(model, sequences, tokenizer.pad_token_id, chunk_size=3)
    with torch.no_grad():
        for (p, c), h in zip(sequences, got):
            logp = model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
            expected = [-(logp[t].exp() * logp[t]).sum().item() for t in range(len(p) - 1, len(p) + len(c) - 1)]
            assert h.tolist() == pytest.approx(expected, abs=1e-9)
    assert entropy.mean_token_entropy(got) == pytest.approx(np.mean([h.mean() for h in got]))


def test_sample_returns_the_generated_tokens_and_matches_sample_responses(model, tokenizer):
    prompts = ["sort: 3 1 2", "pick: rock paper scissors"]
    s = sample(model, tokenizer, prompts, 3, seed=5, max_new_tokens=6)
    assert s.texts == [t for group in sample_responses(model, tokenizer, prompts, 3, seed=5, max_new_tokens=6)
                       for t in group]
    assert s.prompts == [prompts[0]] * 3 + [prompts[1]] * 3
    for ids, stopped, length in zip(s.completion_ids, s.stopped, s.lengths):
        assert (ids[-1] == tokenizer.eos_token_id) == stopped and length == len(ids) - stopped <= 6


def head_grad(model, e, completion):
    model.zero_grad()
    full_logp(model, e.prompt_ids + completion, len(e.prompt_ids)).backward()
    grad = model.get_output_embeddings().weight.grad.clone()
    model.zero_grad()
    return grad


def test_gradient_entanglement_against_autograd(model, tokenizer, examples):
    same = pair(tokenizer, "sort: 3 1 2", "1 2 3", "1 2 3")
    grads = pair_gradients(model, [same] + examples, tokenizer.pad_token_id)
    assert grads["dot"][0] == pytest.approx(grads["norm_w2"][0]) == pytest.approx(grads["norm_l2"][0])
    for i, e in enumerate(examples, start=1):
        g_w, g_l = head_grad(model, e, e.chosen_ids), head_grad(model, e, e.rejected_ids)
        assert grads["norm_w2"][i] == pytest.approx((g_w * g_w).sum().item(), rel=1e-8)
        assert grads["norm_l2"][i] == pytest.approx((g_l * g_l).sum().item(), rel=1e-8)
        assert grads["dot"][i] == pytest.approx((g_w * g_l).sum().item(), rel=1e-8)
    out = gradient_entanglement(model, [same], tokenizer.pad_token_id)
    assert out["cosine"]["mean"] == pytest.approx(1.0) and out["entangled"] == 0.0
    layers = gradient_entanglement(model, examples, tokenizer.pad_token_id, params="last_layers", layers=1)
    assert layers["params"] == "last_layers:1" and layers["pairs"] == 3
    assert all(p.requires_grad for p in model.parameters()) and not model.training  # state restored
    with pytest.raises(PrefkitError, match="layers must lie"):
        gradient_entanglement(model, examples, tokenizer.pad_token_id, params="last_layers", layers=9)


def test_exact_gap_agrees_with_duality_gap_on_the_restricted_distribution(model, tokenizer, task):
    prompts = ["pick: rock paper scissors", "pick: red blue green gray pink"]
    out = exact_gap_metrics(model, tokenizer, task, prompts)
    with torch.no_grad():
        for prompt, row in zip(prompts, out["prompts"]):
            p = encode_prompt(tokenizer, prompt)
            logps = torch.stack([full_logp(model, p + encode_completion(tokenizer, r), len(p))
                                 for r in task.canonical(prompt)])
            probs = (logps - logps.logsumexp(0)).exp().numpy()
            assert row["gap"] == pytest.approx(float(duality_gap(task.preference_matrix(prompt), probs)), abs=1e-9)
            assert row["outside"] == pytest.approx(1 - logps.exp().sum().item(), abs=1e-9)
    assert out["mean_gap"] == pytest.approx(np.mean([r["gap"] for r in out["prompts"]]))


def test_exact_win_rate_is_the_oracle_over_both_canonical_distributions(model, tokenizer, task):
    from prefkit.eval.gaps import exact_win_rates
    from prefkit.tasks import canonical_distributions

    other = task.model(seed=3, hidden_size=32).eval()
    prompts = ["pick: rock paper scissors", "sort: 3 1 2"]
    out = exact_win_rates(model, other, tokenizer, task, prompts)
    mine, theirs = (canonical_distributions(m, tokenizer, task, prompts) for m in (model, other))
    for prompt, row, (p, po), (q, qo) in zip(prompts, out["prompts"], mine, theirs):
        assert row["win_rate"] == pytest.approx(task.win_rate(prompt, p, q, po, qo), abs=1e-12)
        assert (row["outside"], row["reference_outside"]) == (po, qo)
    assert out["by_kind"] == {"cyclic": out["prompts"][0]["win_rate"], "transitive": out["prompts"][1]["win_rate"]}
    # against itself a policy wins exactly half the time, whatever its mass outside the canonical answers
    assert exact_win_rates(model, model, tokenizer, task, prompts)["win_rate"] == pytest.approx(0.5, abs=1e-12)


def test_evaluate_model_runs_what_the_inputs_allow(model, tokenizer, examples):
    only_model = evaluate_model(model, tokenizer, prompts=["sort: 3 1 2"], samples=2, max_new_tokens=4)
    assert set(only_model["sections"]) == {"generation"}
    assert only_model["skipped"] == {"ranking": "needs examples", "win_rate": "needs reference, judge",
                                     "exact_gap": "needs task", "exact_win_rate": "needs task, reference",
                                     "entanglement": "needs examples"}
    out = evaluate_model(model, tokenizer, data=examples, reference=model, samples=1, max_new_tokens=4,
                         sections=["ranking", "generation"])
    assert set(out["sections"]) == {"ranking", "generation"}
    assert out["sections"]["ranking"]["flips"]["flipped"] == 0
    # prompts come from the data (decoded prompt ids); the reference's samples are drawn with another seed
    assert out["sections"]["generation"]["prompts"] == 3 and "reference" in out["sections"]["generation"]
    with pytest.raises(PrefkitError, match="unknown evaluation section"):
        evaluate_model(model, tokenizer, sections=["nope"])
