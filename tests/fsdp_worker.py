"""Run by tests/test_fsdp.py on 2 processes (torchrun, gloo): prefkit's checkpoint and final-model code on a policy
that FSDP2 shards. accelerate applies FSDP2 (torch's fully_shard, each decoder layer and then the root) on GPUs only,
so here the same fully_shard calls are made by hand on the CPU; everything after them is prefkit's own code.
Any failed check raises, and the test reads the exit status and stderr."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy

from fsdp_by_hand import shard
from prefkit.data import Batch
from prefkit.modeling.load import sharded
from prefkit.modeling.tiny import tiny_llama, tiny_tokenizer
from prefkit.train import checkpoint
from prefkit.selfplay.config import SelfPlayConfig
from prefkit.train.engine import PolicyLogps
from prefkit.train.model_card import save_final

out = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)  # MULTI_CPU: starts the gloo process group
mesh = init_device_mesh("cpu", (accelerator.num_processes,))
rank, main = accelerator.process_index, accelerator.is_main_process


def sharded_policy(seed: int, dtype=torch.float64, **options):
    """A tiny Llama (float64: exact comparisons) in the engine's PolicyLogps, sharded as accelerate's FSDP2 shards
    it (each decoder layer, then the root; `options` as accelerate passes them), with AdamW."""
    model = tiny_llama(64, hidden_size=32, layers=2, heads=2, seed=seed).to(dtype)
    policy = PolicyLogps(model, 64, False)
    shard(policy, mesh, **options)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    return policy, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def step(policy, optimizer, scheduler, seed: int) -> None:
    """One AdamW step on the engine's module (PolicyLogps, the root that FSDP2 shards), raising the completions'
    log-probs; each process trains on its own batch, as data parallelism does."""
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(seed * 10 + rank))
    mask = torch.ones_like(ids)
    batch = Batch(ids, mask, torch.cat([torch.zeros(2, 4), torch.ones(2, 4)], 1).long(), 1, torch.ones(2))
    logps, _, _ = policy(batch)
    (-logps.mean()).backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def full(policy) -> dict:
    return {name: p.full_tensor().detach().clone() for name, p in policy.named_parameters()}


trained = sharded_policy(seed=0)
step(*trained, seed=1)
assert sharded(trained[0]) and not sharded(tiny_llama(64, hidden_size=32, layers=1))
assert all(p.to_local().shape[0] < p.shape[0] for p in trained[0].parameters())  # each process holds a shard
expected = full(trained[0])
folder = checkpoint.save(accelerator, out / "run", checkpoint.TrainerState(step=1), 1, *trained)

# the checkpoint holds every weight whole, named as the model names it, equal to the gathered shards
saved = load_file(str(folder / "model.safetensors"))
assert set(saved) == set(expected), sorted(set(saved) ^ set(expected))[:3]
assert all(torch.equal(saved[k], expected[k]) for k in expected)

# loaded into a policy with other weights and a fresh AdamW, each process gets its shards of both back: the next
# step then matches the uninterrupted run's bit for bit (the AdamW moments and step count were restored too)
resumed = sharded_policy(seed=1)
assert not all(torch.equal(a, b) for a, b in zip(full(resumed[0]).values(), expected.values()))
checkpoint.load(accelerator, folder, *resumed)
assert all(torch.equal(a.to_local(), b.to_local()) for a, b in zip(resumed[0].parameters(), trained[0].parameters()))
step(*trained, seed=2)
step(*resumed, seed=2)
after = full(trained[0])
assert all(torch.equal(after[k], v) for k, v in full(resumed[0]).items())
assert not all(torch.equal(after[k], expected[k]) for k in expected)  # the step moved the weights

# the final model: a plain transformers directory of full weights, written by the main process
weights = checkpoint.full_weights(trained[0].model)
if main:
    tokenizer = tiny_tokenizer(["a b c d e f"], vocab_size=300)
    config = SelfPlayConfig(model="tiny", output_dir=str(out))  # the card of a run without a data set
    save_final(trained[0].model, tokenizer, out / "final", config, None, {}, weights=weights)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float64)
    state = reloaded.state_dict()
    assert all(torch.equal(state[k.removeprefix("model.")], v) for k, v in after.items())

# with FSDP's mixed precision (what accelerate sets for mixed_precision: bf16) each forward casts the weights to
# bfloat16: the log-prob engine keeps the plan it probed before sharding, and the step runs
mixed = sharded_policy(seed=0, dtype=torch.float32,
                       mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
step(*mixed, seed=1)
assert all(bool(torch.isfinite(p.full_tensor()).all()) for p in mixed[0].parameters())
accelerator.wait_for_everyone()
print(f"rank {rank}: ok", flush=True)
