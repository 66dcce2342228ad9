"""TRL's token metrics (`entropy`, `logits/chosen`, `logits/rejected`, `mean_token_accuracy`) as prefkit logs them,
from the fused head's statistics, equal TRL 1.16's definitions applied to the model's full logits. The
definitions are transcribed from TRL 1.16's `DPOTrainer._compute_loss` and `KTOTrainer`'s loss (trl/trainer/
dpo_trainer.py, kto_trainer.py; per-token values from trl/kernels/chunked_logprob.py): every mean is over
completion tokens (position t predicting completion token t+1), pooled over the batch's rows; `entropy` over all
rows, `logits/*` over the chosen (desirable) and rejected (undesirable) rows, `mean_token_accuracy` over the chosen
rows of a pair batch (KTOTrainer logs none). Checked for the packed and padded layouts, blocked and recomputed,
and for the model's own forward (the unfused path)."""

import dataclasses

import pytest
import torch

import prefkit.modeling.logprobs as engine
from prefkit.data.examples import Example
from prefkit.modeling.tiny import tiny_llama
from prefkit.train.batches import collate
from prefkit.train.engine import PolicyLogps, chosen_rows, token_metrics

VOCAB = 97


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB, hidden_size=32, seed=0).double().eval()  # float64: agreement to rounding


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """n greedy tokens after `ids`: completions whose tokens are the argmax, so the accuracy is not trivially 0."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def _completions(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(1, VOCAB, (n,), generator=g).tolist()  # noqa: E731 (0 is the pad id)
    prompts = [ids(n) for n in (4, 2, 6)]
    greedy = [_greedy(model, p, n) + ids(2) for p, n in zip(prompts, (3, 1, 4))]  # some argmax tokens, some not
    return prompts, greedy, [ids(n) for n in (5, 3, 2)]


def _full_logits(model, batch):
    """Logits at the predicting positions [N, T-1, V] and the mask of those that predict a completion token."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    return logits, batch.completion_mask[:, 1:]


def _per_token(logits, labels):
    """TRL's fused head outputs per position: entropy, mean_logits (mean over the vocabulary), is_top1."""
    log_p = logits.log_softmax(-1)
    return -(log_p.exp() * log_p).sum(-1), logits.mean(-1), logits.argmax(-1) == labels


def trl_dpo_metrics(model, batch) -> dict[str, float]:
    """DPOTrainer._compute_loss (TRL 1.16), the `entropy`, `logits/*` and `mean_token_accuracy` lines."""
    logits, shift_completion_mask = _full_logits(model, batch)
    entropy, mean_logits, is_top1 = _per_token(logits, batch.input_ids[:, 1:])
    metrics = {"entropy": ((entropy * shift_completion_mask).sum() / shift_completion_mask.sum()).item()}
    chosen_mean_logits, rejected_mean_logits = mean_logits.chunk(2, dim=0)
    chosen_mask, rejected_mask = shift_completion_mask.chunk(2, dim=0)
    metrics["logits/chosen"] = (chosen_mean_logits[chosen_mask.bool()].sum() / chosen_mask.sum()).item()
    metrics["logits/rejected"] = (rejected_mean_logits[rejected_mask.bool()].sum() / rejected_mask.sum()).item()
    chosen_is_top1, _ = is_top1.chunk(2, dim=0)
    metrics["mean_token_accuracy"] = ((chosen_is_top1 & chosen_mask.bool()).sum() / chosen_mask.sum()).item()
    return metrics


def trl_kto_metrics(model, batch) -> dict[str, float]:
    """KTOTrainer's loss (TRL 1.16): `entropy` over all rows, `logits/*` split by the desirable label."""
    logits, shift_completion_mask = _full_logits(model, batch)
    entropy, mean_logits, _ = _per_token(logits, batch.input_ids[:, 1:])
    chosen_idx, rejected_idx = batch.labels.nonzero()[:, 0], (~batch.labels).nonzero()[:, 0]
    metrics = {"entropy": ((entropy * shift_completion_mask).sum() / shift_completion_mask.sum()).item()}
    for name, idx in (("logits/chosen", chosen_idx), ("logits/rejected", rejected_idx)):
        mask = shift_completion_mask.index_select(0, idx)
        metrics[name] = (mean_logits.index_select(0, idx)[mask.bool()].sum() / mask.sum()).item()
    return metrics


def _unfused(monkeypatch):
    """Make the engine run the model's own forward for its logits, as for a model whose head it cannot split."""
    probe = engine.plan
    monkeypatch.setattr(engine, "plan", lambda m: dataclasses.replace(probe(m), decoder=None))


@pytest.mark.parametrize("packing, chunk_size, head", [(True, 1024, "fused"), (True, 2, "fused"),
                                                        (False, 3, "fused"), (True, 1024, "unfused"),
                                                        (False, 1024, "unfused")])
def test_pair_metrics_equal_trls_definitions(model, monkeypatch, packing, chunk_size, head):
    monkeypatch.setattr(engine, "LOGITS_IN_MEMORY", 0)  # blocks recomputed in the backward pass, whatever the size
    if head == "unfused":
        _unfused(monkeypatch)
    prompts, chosen, rejected = _completions(model, seed=1)
    examples = [Example.pair(p, c, r, i) for i, (p, c, r) in enumerate(zip(prompts, chosen, rejected))]
    batch = collate(examples, range(3), 0, "cpu")
    logps, lengths, tokens = PolicyLogps(model, chunk_size, packing)(batch)
    got = token_metrics(tokens, lengths, chosen_rows(batch))
    want = trl_dpo_metrics(model, batch)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert 0 < want["mean_token_accuracy"] < 1  # the greedy tokens hit, the random ones miss
    logps.sum().backward()  # the statistics ride along without gradient
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad()


@pytest.mark.parametrize("packing", [True, False])
def test_unpaired_metrics_equal_trls_kto_definitions(model, packing):
    prompts, chosen, rejected = _completions(model, seed=2)
    examples = [Example.single(p, c, label, i)
                for i, (p, c, label) in enumerate(zip(prompts * 2, chosen + rejected, [True, False, True] * 2))]
    batch = collate(examples, range(6), 0, "cpu")
    with torch.no_grad():
        _, lengths, tokens = PolicyLogps(model, 1024, packing)(batch)
    got = token_metrics(tokens, lengths, chosen_rows(batch), accuracy=False)
    assert got == pytest.approx(trl_kto_metrics(model, batch), rel=1e-10, abs=1e-12)


def test_names_without_tokens_are_left_out_and_switched_off_there_are_none(model):
    prompts, chosen, _ = _completions(model, seed=3)
    batch = collate([Example.single(p, c, True, i) for i, (p, c) in enumerate(zip(prompts, chosen))], range(3), 0,
                    "cpu")
    with torch.no_grad():
        _, lengths, tokens = PolicyLogps(model, 1024, True)(batch)
        assert PolicyLogps(model, 1024, True, token_metrics=False)(batch)[2] is None
    assert set(token_metrics(tokens, lengths, batch.labels, accuracy=False)) == {"entropy", "logits/chosen"}
    assert set(token_metrics(tokens, lengths, None)) == {"entropy"}
    assert token_metrics(None, lengths, batch.labels) == {}
