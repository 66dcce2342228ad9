"""Supervised fine-tuning (prefkit.train.sft) is the shared engine's step: the same weights as AdamW + clipping +
transformers' linear warm-up schedule written out by hand, on the task's pre-training rows."""

import torch

from prefkit.data.examples import pad_sequences
from prefkit.modeling.generation import encode_completion, encode_prompt
from prefkit.modeling.logprobs import sequence_logps
from prefkit.train.sft import SupervisedConfig, supervised_fit


def test_supervised_fit_is_adamw_clipping_and_the_linear_schedule(task, tokenizer):
    rows = task.sft_rows(64, seed=0)
    sequences = [(encode_prompt(tokenizer, r["prompt"]), encode_completion(tokenizer, r["completion"])) for r in rows]
    config = SupervisedConfig(steps=4, batch_size=8, learning_rate=1e-2, warmup_steps=2, max_grad_norm=0.5, seed=3)
    engine_model, by_hand = task.model(seed=1, hidden_size=32), task.model(seed=1, hidden_size=32)
    losses = []
    supervised_fit(engine_model, sequences, tokenizer.pad_token_id, config, lambda step, loss: losses.append(loss))

    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(by_hand.parameters(), lr=1e-2, weight_decay=0.0, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 4)
    generator = torch.Generator().manual_seed(3)
    expected = []
    by_hand.train()
    for _ in range(4):
        picks = torch.randint(len(sequences), (8,), generator=generator).tolist()
        out = sequence_logps(by_hand, **pad_sequences([sequences[i] for i in picks], tokenizer.pad_token_id))
        loss = -out.logps.sum() / out.lengths.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 0.5)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        expected.append(loss.item())
    assert losses == expected and not engine_model.training
    for a, b in zip(engine_model.state_dict().values(), by_hand.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)  # float64 (tests/conftest.py): the same arithmetic
