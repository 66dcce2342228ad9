"""The chunked log-prob engine equals the plain full-logits computation, values and gradients."""

import pytest
import torch

from prefkit.modeling.logprobs import sequence_logps
from prefkit.modeling.tiny import tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama(97, hidden_size=32, seed=0).double()


def reference_logps(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    per_token = torch.gather(logits.log_softmax(-1), -1, input_ids[:, 1:, None]).squeeze(-1)
    return (per_token * completion_mask[:, 1:]).sum(-1)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_chunked_logps_match_full_logits(model, chunk_size):
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
