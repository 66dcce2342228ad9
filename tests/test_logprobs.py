"""The chunked log-prob engine equals the plain full-logits computation, values and gradients."""

import pytest
import torch

from prefkit.modeling.logprobs import sequence_logps
from prefkit.modeling.tiny import tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama(97, hidden_size=32, seed=0).double()


def reference_logps(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    per_token = torch.gather(logits.log_softmax(-1), -1, input_ids[:, 1:, None]).squeeze(-1)
    return (per_token * completion_mask[:, 1:]).sum(-1)


@pytest.mark.parametrize("chunk_size, in_memory", [(1, 0), (7, 0), (4096, 0), (7, 2 ** 25)])
def test_chunked_logps_match_full_logits(model, chunk_size, in_memory, monkeypatch):
    import prefkit.modeling.logprobs as engine

    monkeypatch.setattr(engine, "LOGITS_IN_MEMORY", in_memory)  # 0: chunk and recompute whatever the size
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (3, 11), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 8:] = 0  # right padding
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[0, 4:] = 1
    completion_mask[1, 2:9] = 1
    completion_mask[2, 5:8] = 1
    out = sequence_logps(model, input_ids, attention_mask, completion_mask, chunk_size=chunk_size)
    expected = reference_logps(model, input_ids, attention_mask, completion_mask)
    assert out.logps.tolist() == pytest.approx(expected.tolist(), rel=1e-9)
    assert out.lengths.tolist() == [7, 7, 3]

    out.logps.sum().backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.sum().backward()
    for got, want in zip(chunked, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, atol=1e-10)
    model.zero_grad()


def test_shared_prompt_logps_equal_the_concatenated_forward(model):
    from prefkit.modeling.logprobs import shared_prompt_logps

    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 97, (n,), generator=g) for n in (3, 6)]
    completions = [torch.randint(1, 97, (n,), generator=g) for n in (4, 2, 5, 1)]  # chosen 0, 1; rejected 0, 1
    pairs = [(prompts[0], completions[0]), (prompts[1], completions[1]), (prompts[0], completions[2]),
             (prompts[1], completions[3])]
    width = max(len(p) + len(c) for p, c in pairs)
    input_ids = torch.zeros(4, width, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    completion_mask = torch.zeros_like(input_ids)
    for row, (p, c) in enumerate(pairs):
        input_ids[row, :len(p) + len(c)] = torch.cat([p, c])
        attention[row, :len(p) + len(c)] = 1
        completion_mask[row, len(p):len(p) + len(c)] = 1
    expected = sequence_logps(model, input_ids, attention, completion_mask)

    prompt_ids = torch.zeros(2, 6, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for row, p in enumerate(prompts):
        prompt_ids[row, :len(p)], prompt_mask[row, :len(p)] = p, 1
    completion_ids = torch.zeros(4, 5, dtype=torch.long)
    completion_only = torch.zeros_like(completion_ids)
    for row, (_, c) in enumerate(pairs):
        completion_ids[row, :len(c)], completion_only[row, :len(c)] = c, 1
    shared = shared_prompt_logps(model, prompt_ids, prompt_mask, completion_ids, completion_only)
    assert shared.logps.tolist() == pytest.approx(expected.logps.tolist(), rel=1e-12), shared.logps - expected.logps
    assert shared.lengths.tolist() == [4, 2, 5, 1]

    shared.logps.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.logps.sum().backward()
    for (name, p), got in zip(model.named_parameters(), grads):  # backward kernels differ: agree to float32 precision
        assert torch.allclose(got, p.grad, rtol=1e-6, atol=1e-6 * p.grad.abs().max()), name
    model.zero_grad()
