"""The task played by the tiny model: tokenizer round trips, canonical distributions from sequence log-probs,
the exact duality gap, pre-training, sampling, and the offline preference data set."""

import json

import numpy as np
import pytest
import torch

from prefkit.io import write_jsonl
from prefkit.tasks import (canonical_distribution, completion_nll, encode_completion, encode_prompt,
                           exact_gap, label_pairs, preference_rows, pretrain, sample_responses, unpaired_rows)


def all_prompts(task):
    return task.prompts(None, "train") + task.prompts(None, "eval")


def test_tokenizer_round_trips_every_canonical_response(task, tokenizer):
    assert len(tokenizer) == task.model(hidden_size=16).config.vocab_size
    for prompt in all_prompts(task):
        for response in task.canonical(prompt):
            ids = encode_completion(tokenizer, response)
            assert ids[-1] == tokenizer.eos_token_id and len(ids) <= 4
            assert tokenizer.decode(ids[:-1]) == response
    # Encoding prompt and completion separately gives the same tokens as encoding the whole conversation.
    prompt = "pick: red blue green gray pink"
    whole = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                           {"role": "assistant", "content": "green"}], tokenize=False)
    assert (encode_prompt(tokenizer, prompt) + encode_completion(tokenizer, "green")
            == tokenizer(whole, add_special_tokens=False)["input_ids"])


def direct_logp(model, tokenizer, prompt, response):
    """log π(response + EOS | prompt) from the plain full logits, one unpadded sequence at a time."""
    p, c = encode_prompt(tokenizer, prompt), encode_completion(tokenizer, response)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(logits[t - 1, ids[0, t]].item() for t in range(len(p), len(p) + len(c)))


@pytest.mark.parametrize("prompt", ["pick: green pink blue gray red", "sort: 7 0 4", "pick: sun moon star"])
def test_canonical_distribution_from_sequence_logps(task, tokenizer, model, prompt):
    probs, outside = canonical_distribution(model, tokenizer, task, prompt)
    logps = np.array([direct_logp(model, tokenizer, prompt, r) for r in task.canonical(prompt)])
    # The log-prob engine computes logits in float32, so agreement is to float32 precision.
    assert probs == pytest.approx(np.exp(logps) / np.exp(logps).sum(), rel=1e-5)
    assert 0.0 <= outside <= 1.0 and outside == pytest.approx(1.0 - np.exp(logps).sum(), abs=1e-5)


def test_exact_gap_agrees_with_the_games_lab(task, tokenizer, model):
    games = pytest.importorskip("prefkit.games")
    for prompt in ["pick: rock paper scissors", "pick: red blue green gray pink", "sort: 2 9 5"]:
        probs, _ = canonical_distribution(model, tokenizer, task, prompt)
        expected = games.duality_gap(task.preference_matrix(prompt), probs)
        assert exact_gap(model, tokenizer, task, prompt) == pytest.approx(float(expected), abs=1e-12)
        assert 0.0 <= expected <= 1.0


def test_pretraining_lowers_the_loss_deterministically(task, tokenizer):
    rows = task.sft_rows(256, seed=0)
    first, second = task.model(seed=1, hidden_size=32), task.model(seed=1, hidden_size=32)
    before = completion_nll(first, tokenizer, rows)
    losses = []
    pretrain(first, tokenizer, rows, steps=15, batch_size=16, lr=1e-2, seed=0, progress=lambda s, l: losses.append(l))
    after = completion_nll(first, tokenizer, rows)
    assert len(losses) == 15 and after < before - 1.0
    pretrain(second, tokenizer, rows, steps=15, batch_size=16, lr=1e-2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_sampling_is_seeded(task, tokenizer, model):
    prompts = ["pick: ant bee cat", "sort: 3 1 2"]
    samples = sample_responses(model, tokenizer, prompts, 3, seed=5)
    assert len(samples) == 2 and all(len(s) == 3 and all(isinstance(r, str) for r in s) for s in samples)
    assert samples == sample_responses(model, tokenizer, prompts, 3, seed=5)
    state = torch.random.get_rng_state()
    sample_responses(model, tokenizer, prompts, 1, seed=6)
    assert torch.equal(state, torch.random.get_rng_state())


def test_preference_rows_in_the_standard_formats(task, tmp_path):
    prompts = task.prompts("cyclic")[:4] + task.prompts("transitive")[:4]
    rows = preference_rows(task, prompts, 5, seed=3, conversational=False)
    assert rows == preference_rows(task, prompts, 5, seed=3, conversational=False) and len(rows) > len(prompts)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"} and row["chosen"] != row["rejected"]
        assert task.preference(row["prompt"], row["chosen"], row["rejected"]) != 0.5
    greedy = preference_rows(task, prompts, 5, seed=3, labels="argmax")
    for row in greedy:
        prompt = row["prompt"][0]["content"]
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert task.preference(prompt, row["chosen"][0]["content"], row["rejected"][0]["content"]) > 0.5
    unpaired = unpaired_rows(rows)
    assert len(unpaired) == 2 * len(rows) and [r["label"] for r in unpaired[:2]] == [True, False]
    assert set(unpaired[0]) == {"prompt", "completion", "label"}
    path = write_jsonl(unpaired, tmp_path / "data" / "unpaired.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == unpaired


def test_label_pairs_on_model_samples(task):
    responses = {"pick: rock paper scissors": ["rock", "paper", "rock", "", "papr"]}
    rows = label_pairs(task, responses, labels="argmax", conversational=False)
    # Distinct strings: rock, paper, "", papr -> 6 pairs, minus the malformed tie ("" vs "papr").
    assert len(rows) == 5
    assert {"prompt": "pick: rock paper scissors", "chosen": "paper", "rejected": "rock"} in rows
    assert len(label_pairs(task, responses, pairs_per_prompt=2, seed=0)) <= 2


def test_offline_rows_load_with_the_same_token_boundary(task, tokenizer, tmp_path):
    """The data loader tokenizes the task's rows exactly as the task's log-prob functions do."""
    data = pytest.importorskip("prefkit.data")
    prompts = task.prompts("cyclic")[:3] + task.prompts("transitive")[:3]
    rows = preference_rows(task, prompts, 4, seed=0)
    for name, written in (("pairs.jsonl", rows), ("unpaired.jsonl", unpaired_rows(rows))):
        prepared = data.prepare(write_jsonl(written, tmp_path / name), tokenizer)
        assert prepared.stats["kept"] == len(written) and prepared.stats["skipped"] == 0
    example, row = data.prepare(tmp_path / "pairs.jsonl", tokenizer).examples[0], rows[0]
    prompt = row["prompt"][0]["content"]
    assert example.prompt_ids == encode_prompt(tokenizer, prompt)
    assert example.chosen_ids == encode_completion(tokenizer, row["chosen"][0]["content"])
    assert example.rejected_ids == encode_completion(tokenizer, row["rejected"][0]["content"])
