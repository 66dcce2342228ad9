"""The dtypes users train in. The rest of the suite runs in float64 where it compares against exact values; here
every loss and the log-prob engine run in float32 against a float64 twin, and the training step runs under
bf16 autocast.

Tolerances, and why: a float32 loss of O(1) log-prob inputs agrees with its float64 value to a few ulps of the
inputs' magnitude (inputs here are O(10): ~1e-6 absolute); the engine's float32 log-probs sum a few tokens'
log-softmax over the vocabulary (~1e-5 nats); bf16 keeps 8 bits of mantissa, so a bf16-autocast loss agrees with
the fp32 one only to ~1e-2 relative.
"""

import pytest
import torch

from prefkit import losses

B, T = 6, 5


def _value(name: str, g: torch.Generator):
    """A plausible value for a loss input, by the input-naming convention of prefkit.losses."""
    if name == "labels":
        return torch.tensor([True, False] * (B // 2))
    if name == "select_mask":
        return torch.tensor([True, True, False, True, True, True])
    if name.endswith("_mask"):  # token-level masks [B, T]; every sequence has its first token
        mask = torch.rand(B, T, generator=g) > 0.3
        mask[:, 0] = True
        return mask
    if name.endswith("list_logps"):  # ranked lists [B, K], K = 3
        return -torch.rand(B, 3, generator=g, dtype=torch.float64) * 20 - 1
    if name.endswith(("_token_logps", "_token_kl")):
        return -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    if name.endswith("_logps"):
        return -torch.rand(B, generator=g, dtype=torch.float64) * 20 - 1
    if name.endswith("_lengths"):
        return torch.randint(1, 12, (B,), generator=g).double()
    if name in ("preference", "winrate", "chosen_winrate", "rejected_winrate"):
        return torch.rand(B, generator=g, dtype=torch.float64)
    if name in ("advantages",):
        return torch.rand(B, generator=g, dtype=torch.float64) - 0.5
    if name == "udm_weights":
        return torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    return torch.tensor(0.3, dtype=torch.float64)  # kl, reward_shift, gap_mean


def _inputs(spec, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {name: _value(name, g) for name in spec.inputs}


@pytest.mark.parametrize("name", losses.names())
def test_every_loss_in_float32_matches_float64_and_stays_float32(name):
    spec = losses.get(name)
    exact = _inputs(spec)
    single = {k: v.float() if v.is_floating_point() else v for k, v in exact.items()}
    for v in single.values():
        v.requires_grad_(v.is_floating_point() and v.dim() > 0)
    out64 = losses.compute(name, **exact)
    out32 = losses.compute(name, **single)
    assert out32.dtype == torch.float32, f"{name} returned {out32.dtype} from float32 inputs"
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=2e-6)
    out32.sum().backward()  # and its gradients are finite in float32
    assert all(torch.isfinite(v.grad).all() for v in single.values() if v.grad is not None)


def test_the_engine_in_float32_matches_float64(task, tokenizer):
    from prefkit.modeling import score
    from prefkit.tasks import encode_completion, encode_prompt

    model64 = task.model(seed=1).double().eval()
    model32 = task.model(seed=1).float().eval()
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    prompts = task.prompts("cyclic", split="eval")[:3]
    groups = [(encode_prompt(tokenizer, p), [encode_completion(tokenizer, r) for r in task.canonical(p)])
              for p in prompts]
    for packing in (True, False):
        lp64, lp32 = score(model64, groups, packing=packing), score(model32, groups, packing=packing)
        assert lp32.dtype == torch.float32
        torch.testing.assert_close(lp32.double(), lp64, rtol=0, atol=1e-4)


def test_a_bf16_autocast_training_step_tracks_fp32(task, tokenizer):
    """One DPO step on the engine under bf16 autocast: master weights stay float32, the loss is within bf16's
    precision of the fp32 step's, and the update moves the weights the same way (cosine of the updates)."""
    from types import SimpleNamespace

    from prefkit.train.engine import Engine, PolicyLogps
    from prefkit.train.batches import collate, loss_inputs
    from prefkit.data import Example
    from prefkit.tasks import encode_completion, encode_prompt

    prompts = task.prompts("cyclic", split="train")[:4]
    examples = [Example.pair(encode_prompt(tokenizer, p), encode_completion(tokenizer, task.canonical(p)[0]),
                            encode_completion(tokenizer, task.canonical(p)[1]), i) for i, p in enumerate(prompts)]
    config = SimpleNamespace(learning_rate=1e-2, weight_decay=0.0, schedule="constant", warmup_steps=0,
                             max_grad_norm=None, max_nonfinite_steps=2)
    objective = losses.Objective("dpo")

    def run(precision):
        from prefkit.train.engine import make_accelerator

        model = task.model(seed=2).float()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        accelerator = make_accelerator(precision)
        engine = Engine(accelerator, PolicyLogps(model, 1024, True), config, total_steps=1)
        batch = collate(examples, range(4), tokenizer.pad_token_id, accelerator.device)
        reference = torch.full((8,), -5.0)

        def loss_of(policy, batch):
            logps, lengths, _ = policy(batch)
            result = objective(loss_inputs(logps, lengths, reference, batch))
            return result.losses.mean(), {"loss": result.losses.mean().item()}

        update = engine.step(1, [batch], 1, loss_of)
        delta = torch.cat([(v.float() - before[k].float()).flatten() for k, v in model.state_dict().items()])
        return update, delta, {v.dtype for v in model.parameters()}

    fp32, delta32, dtypes32 = run("no")
    bf16, delta16, dtypes16 = run("bf16")
    assert dtypes32 == dtypes16 == {torch.float32}
    assert bf16.applied and bf16.metrics["loss"] == pytest.approx(fp32.metrics["loss"], rel=2e-2)
    assert bf16.metrics["loss"] != fp32.metrics["loss"]  # bf16 did run: its rounding shows
    cosine = torch.nn.functional.cosine_similarity(delta32, delta16, dim=0)
    assert cosine > 0.95, cosine
