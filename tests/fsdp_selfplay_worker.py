"""Run by tests/test_fsdp.py on 2 processes (torchrun, gloo): `prefkit selfplay` with the fit's policy sharded by
FSDP2. accelerate applies FSDP2 on GPUs only, so here its `prepare` makes the calls its FSDP2 makes
(tests/fsdp_by_hand.py); everything else is prefkit's own code. Any failed check raises, and the test reads the
exit status and stderr.

Usage: fsdp_selfplay_worker.py OUT INITIAL_MODEL (OUT holds distinct_judge.py, the judge)."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from fsdp_by_hand import sharding_prepare
from prefkit.selfplay.config import SelfPlayConfig
from prefkit.selfplay.loop import selfplay
from prefkit.train.config import load_config

out, initial = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(out))  # the judge module
accelerator = Accelerator(cpu=True)  # MULTI_CPU: starts the gloo process group prefkit's accelerator joins
SETTINGS = dict(prompts_per_iteration=8, samples_per_prompt=3, max_new_tokens=4, eval_limit=4, epochs=1,
                learning_rate=1e-3, progress=False, loss="mpo", loss_params={"eta": 2.0, "alpha": 0.2},
                refresh_every=1, judge="distinct_judge:judge", sample_block=2, batch_size=2)
shards = []


def run(name: str, iterations: int, resume: bool = False, **extra) -> Path:
    values = {"model": initial, "output_dir": str(out / name), "iterations": iterations, "resume": resume,
              **{k: v for k, v in SETTINGS.items() if not isinstance(v, dict)}}
    nested = {"loss_params": SETTINGS["loss_params"], **extra}
    selfplay(load_config(None, values, [f"{k}={json.dumps(v)}" for k, v in nested.items()], kind=SelfPlayConfig))
    return out / name


def final(run_dir: Path, name: str = "model.safetensors") -> dict:
    return load_file(str(run_dir / "final" / name))


def same_run(ddp: Path, fsdp: Path, name: str = "model.safetensors") -> dict:
    """The sharded run samples what the data-parallel one samples (iteration 2: from the trained weights, gathered
    into the whole model) and ends within 1e-4 of its weights (the gradient sums' rounding); returns its weights."""
    for t in (1, 2):
        folder = f"iter-{t:04d}"
        assert (ddp / folder / "samples.json").read_text() == (fsdp / folder / "samples.json").read_text(), t
    a, b = final(ddp, name), final(fsdp, name)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    return b


LORA = {"lora": {"r": 4}}
ddp, lora_ddp = run("ddp", 2), run("lora-ddp", 2, **LORA)
Accelerator.prepare = sharding_prepare(shards)
fsdp = run("fsdp", 2)
b, start = same_run(ddp, fsdp), load_file(f"{initial}/model.safetensors")
assert max((b[k] - start[k].float()).abs().max().item() for k in b) > 1e-3  # and it trained
adapter = same_run(lora_ddp, run("lora-fsdp", 2, **LORA), "adapter_model.safetensors")
assert any(k.endswith("lora_A.weight") for k in adapter) and any(v.abs().max() > 0 for k, v in adapter.items()
                                                                   if "lora_B" in k)  # the adapter trained
assert len(shards) == 2 and all(0 < share < 1 for record in shards for share in record.values())  # each a part

resumed = run("resumed", 1)
run("resumed", 2, resume=True)
c = final(resumed)
assert all(torch.equal(b[k], c[k]) for k in b)  # resumed under FSDP: bit for bit the uninterrupted run
print(f"rank {accelerator.process_index}: ok", flush=True)
