"""Sampling: the geometric-mixture opponent of Nash-MD mixes the two models' next-token log-probs exactly."""

import torch

from prefkit.modeling.generation import _GeometricMixture, encode_prompt, generate


def test_mixture_with_coefficient_zero_is_the_policy(task, tokenizer):
    policy, reference = task.model(seed=0, hidden_size=32).eval(), task.model(seed=1, hidden_size=32).eval()
    prompts = ["pick: rock paper scissors", "sort: 3 1 2"]
    mixed = generate(policy, tokenizer, prompts, 3, seed=3, max_new_tokens=5, mixture=(reference, 0.0))
    plain = generate(policy, tokenizer, prompts, 3, seed=3, max_new_tokens=5)
    assert [[s.ids for s in g] for g in mixed] == [[s.ids for s in g] for g in plain]


def test_mixture_log_probs_are_the_weighted_sum_on_left_padded_prompts(task, tokenizer):
    policy, reference = task.model(seed=0, hidden_size=32).eval(), task.model(seed=1, hidden_size=32).eval()
    prompts = ["pick: ant bee cat", "sort: 3 1 2 hello there"]  # different lengths: the first is left-padded
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(map(len, encoded))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    scores = torch.randn(2, policy.config.vocab_size)
    mixed = _GeometricMixture(reference, 0.25, width, mask)(ids, scores)
    for row, e in enumerate(encoded):  # the reference on the unpadded prompt alone
        alone = reference(input_ids=torch.tensor([e])).logits[0, -1]
        expected = 0.75 * torch.log_softmax(scores[row], -1) + 0.25 * torch.log_softmax(alone, -1)
        assert torch.allclose(mixed[row], expected, atol=1e-9)
