"""The log-prob engine equals the plain full-logits computation (values and gradients), chunked or not, padded
or packed."""

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


def _groups(sizes, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(1, 97, (n,), generator=g).tolist()
    return [(ids(p), [ids(c) for c in completions]) for p, completions in sizes]


def _padded(groups):
    """The same completions as right-padded prompt+completion rows, in packing's row order (completion-major)."""
    from prefkit.data.examples import pad_sequences

    k = len(groups[0][1])
    return pad_sequences([(prompt, completions[j]) for j in range(k) for prompt, completions in groups], 0)


# prompt lengths include 0 (first completion token unpredicted) and 1; K = 1 (unpaired), 2 (pairs), 3 (self-play)
@pytest.mark.parametrize("sizes", [
    [(3, [4, 5]), (6, [2, 1]), (1, [7, 3]), (0, [3, 4])],
    [(5, [4]), (2, [9]), (0, [2])],
    [(4, [3, 1, 6]), (2, [5, 5, 2])],
])
def test_packed_logps_equal_the_padded_forward(model, sizes):
    from prefkit.modeling.logprobs import packed_logps
    from prefkit.modeling.packing import pack

    groups = _groups(sizes)
    batch = _padded(groups)
    expected = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    packed = packed_logps(model, pack(groups))
    assert packed.logps.tolist() == pytest.approx(expected.logps.tolist(), rel=1e-12)
    assert packed.lengths.tolist() == expected.lengths.tolist()

    packed.logps.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected.logps.sum().backward()
    # a prompt's gradient is summed before, not after, transformers' RMSNorm casts to float32: float32 agreement
    for (name, p), got in zip(model.named_parameters(), grads):
        assert torch.allclose(got, p.grad, rtol=1e-6, atol=1e-6 * p.grad.abs().max()), name
    model.zero_grad()


def test_packed_layout_has_no_padding_and_each_prompt_once():
    from prefkit.modeling.packing import pack

    groups = _groups([(3, [4, 5]), (6, [2, 1])])
    packed = pack(groups)
    assert packed.input_ids.shape == (1, 3 + 4 + 5 + 6 + 2 + 1)
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 6]
    # attention runs on branch rows, each a prompt then one of its completions: a completion never sees its sibling
    assert packed.branches[:2].tolist() == [[0, 1, 2, 3, 4, 5, 6, 0], [0, 1, 2, 7, 8, 9, 10, 11]]
    assert packed.branches[2:].tolist() == [[12, 13, 14, 15, 16, 17, 18, 19], [12, 13, 14, 15, 16, 17, 20, 0]]
    assert packed.unpack_index.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15]  # prompt from row 0
    assert packed.rows.tolist() == [0] * 4 + [2] * 5 + [1] * 2 + [3] * 1  # chosen rows 0..1, rejected 2..3


def test_models_that_cannot_pack_use_the_padded_forward(model):
    from prefkit.modeling.logprobs import batch_logps
    from prefkit.modeling.packing import pack, supports_packing
    from prefkit.train.batches import collate
    from prefkit.data import Example

    eager = tiny_llama(97, hidden_size=32, seed=0).double()
    eager.config._attn_implementation = "eager"
    groups = _groups([(3, [4, 5]), (2, [1, 6])])
    assert not supports_packing(eager, pack(groups))
    windowed = tiny_llama(97, hidden_size=32, seed=0).double()
    windowed.config.sliding_window = 4  # rows are longer than the window: causal attention would ignore it
    assert not supports_packing(windowed, pack(groups))

    examples = [Example.pair(p, c, r, row=i) for i, (p, (c, r)) in enumerate(groups)]
    batch = collate(examples, [0, 1], 0, "cpu")
    assert batch_logps(eager, batch).logps.tolist() == pytest.approx(
        batch_logps(model, batch).logps.tolist(), rel=1e-6)  # eager runs its softmax in float32


def test_packing_leaves_generation_and_the_saved_config_as_they_were(tmp_path):
    from prefkit.modeling.logprobs import packed_logps
    from prefkit.modeling.packing import ATTENTION, pack

    model = tiny_llama(97, hidden_size=32, seed=0).double().eval()
    prompt = torch.tensor([[5, 6, 7]])
    before = model.generate(prompt, max_new_tokens=6, do_sample=False)
    packed_logps(model, pack(_groups([(3, [4, 5])])))
    assert model.config._attn_implementation == ATTENTION
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), before)
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()


def test_packed_logps_under_gradient_checkpointing_equal_the_plain_pass():
    from prefkit.modeling.logprobs import packed_logps
    from prefkit.modeling.packing import pack

    plain = tiny_llama(97, hidden_size=32, seed=0).double().train()
    recomputed = tiny_llama(97, hidden_size=32, seed=0).double().train()
    recomputed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    packed = pack(_groups([(3, [4, 5]), (2, [6, 1])]))
    a, b = packed_logps(plain, packed), packed_logps(recomputed, packed)
    assert b.logps.tolist() == pytest.approx(a.logps.tolist(), rel=1e-12)
    a.logps.sum().backward(), b.logps.sum().backward()
    for p, q in zip(plain.parameters(), recomputed.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-9, atol=1e-12)


def _tiny(model_type, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=97, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).double().eval()


def test_score_applies_the_output_scaling_the_model_applies():
    from prefkit.modeling import score
    from prefkit.modeling.probe import plan

    model = _tiny("cohere", logit_scale=0.25)  # logits = 0.25 * lm_head(h): 0.4 nats per sequence if ignored
    groups = _groups([(3, [4, 5]), (0, [3]), (2, [6, 1, 2])])
    expected = [reference_logps(model, **{k: v[i:i + 1] for k, v in _padded([g]).items()}).item()
                for g in groups for i in range(len(g[1]))]
    assert plan(model).scale == pytest.approx(0.25, rel=1e-12)
    assert score(model, groups).tolist() == pytest.approx(expected, rel=1e-12)  # group by group
    assert score(model, groups, packing=False).tolist() == pytest.approx(expected, rel=1e-12)


def test_layers_that_mix_tokens_outside_attention_are_never_packed():
    from prefkit.modeling import score
    from prefkit.modeling.probe import plan

    # LFM2's convolutions run along the packed row, across siblings; at default init the leak is ~1e-4 nats, well
    # below bfloat16's rounding, so the probe must see it in the gradient, not in the values
    model = _tiny("lfm2", layer_types=["conv", "full_attention"], full_attn_idxs=[1]).to(torch.bfloat16)
    assert not plan(model).packs
    assert "outside its prompt" in plan(model).packing_note
    groups = _groups([(3, [4, 5]), (2, [1, 6])])
    assert torch.equal(score(model, groups), score(model, groups, packing=False))


def test_ranked_lists_of_three_score_the_same_packed_padded_and_from_the_precomputed_table(model):
    """K = 3 lists through the training path: collate -> batch_logps (packed and padded) -> loss_inputs [B, K],
    and a precomputed [N, K] reference table read back in the batch's row order."""
    from prefkit.data import Example
    from prefkit.modeling import score
    from prefkit.modeling.logprobs import batch_logps
    from prefkit.modeling.reference import Precomputed
    from prefkit.train.batches import collate, loss_inputs

    groups = _groups([(3, [4, 2, 5]), (2, [1, 6, 3]), (5, [2, 2, 4])])
    examples = [Example.ranked(p, c, scores=[3, 2, 1], row=i) for i, (p, c) in enumerate(groups)]
    batch = collate(examples, [2, 0], 0, "cpu")
    packed, padded = batch_logps(model, batch), batch_logps(model, batch, packing=False)
    assert packed.logps.tolist() == pytest.approx(padded.logps.tolist(), rel=1e-12)  # float64 model
    assert packed.lengths.tolist() == padded.lengths.tolist()
    table = score(model, groups, packing=False).view(3, 3)  # [N, K]: example by example
    inputs = loss_inputs(packed.logps, packed.lengths, Precomputed(table, False, None).logps(batch), batch)
    torch.testing.assert_close(inputs["list_logps"], table[[2, 0]], rtol=1e-12, atol=0)
    torch.testing.assert_close(inputs["ref_list_logps"], table[[2, 0]], rtol=0, atol=0)
    assert inputs["list_lengths"].tolist() == [[2, 2, 4], [4, 2, 5]]
    assert "chosen_logps" not in inputs  # K = 3: no pair view
