"""Self-play on several processes (`accelerate launch --num_processes N -m prefkit selfplay ...`).

Each process samples, judges and scores its share of an iteration's prompts; the pieces are gathered so that
every process holds the whole iteration, and the fit is data-parallel over all of it (DDP through the engine,
prefkit.train.engine, each process taking its slice of every global batch). The main process writes every file
and measures the evaluation metrics, which it broadcasts, so the stop and magnet-refresh decisions are the same
on every process. With one process each function here is the plain call it wraps.

Sampling goes in blocks of `sample_block` prompts: one `generate` call per block, seeded by the block's index
(block 0 with the iteration's own seed, so a run whose iteration is one block samples as it always has). The
samples are then a function of the settings alone: N processes with the same `sample_block` draw exactly what one
process draws. Without `sample_block` each process gets one block (the iteration's prompts split N ways).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from prefkit.train.engine import agree, gather_objects
from prefkit.train.validation import fsdp_version_problems, sharded_launch, sharding_problems


def is_main() -> bool:
    """Whether this is the main process (rank 0), known before the accelerator starts (`open_run` asks)."""
    return int(os.environ.get("RANK", "0")) == 0


def processes() -> int:
    """How many processes run this self-play (accelerate launch's WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_problems(generator: str, vllm: dict) -> list[str]:
    """What this launch cannot run, found at config validation: vLLM engines in processes that do not divide into
    tensor-parallel groups; a sharded engine where accelerate would not shard (no GPU); FSDP1, whose shards prefkit
    does not gather; and DeepSpeed, whose engine owns the optimizer that each self-play fit restarts."""
    problems = []
    vllm = vllm if isinstance(vllm, dict) else {}  # a bad one: vllm_problems says what is wrong with it
    group, engines_here = vllm.get("tensor_parallel_size", 1), generator == "vllm" and not vllm.get("server")
    if engines_here and isinstance(group, int) and group > 0 and processes() % group:
        problems.append(f"vllm.tensor_parallel_size {group} does not divide the {processes()} processes of this "
                        "launch: each group of that many consecutive processes runs one engine")
    problems += sharding_problems() + fsdp_version_problems()
    if ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed") in sharded_launch():
        problems.append("accelerate launch asks for DeepSpeed (ACCELERATE_USE_DEEPSPEED), which prefkit selfplay "
                        "does not run: its engine owns the optimizer that every self-play fit restarts. Launch "
                        "with FSDP2 (configs/accelerate/fsdp.yaml) or --multi_gpu (configs/accelerate/ddp.yaml)")
    return problems


def check_processes(accelerator) -> None:
    """The accelerator runs on as many processes as the launcher started (an accelerate state made earlier in the
    process without `cpu=True` on a machine without GPUs sees one process per rank: each would then run alone)."""
    from prefkit.errors import PrefkitError

    if accelerator.num_processes != processes():
        raise PrefkitError(f"the launcher started {processes()} processes (WORLD_SIZE) but accelerate's state in this "
                           f"process has {accelerator.num_processes}: an accelerate state was made before prefkit's "
                           "(on a machine without GPUs, make it with PartialState(cpu=True))")


def map_shards(accelerator, items: Sequence, compute: Callable[[list], Sequence], group: int = 1) -> list:
    """`compute` (a list -> one result per item) over this process's share of `items` (every N-th, from its rank),
    gathered back into the order of `items` on every process. With `group` G, the processes go in groups of G
    consecutive ones that compute the same share (the workers of one tensor-parallel vLLM engine)."""
    if accelerator.num_processes == 1:
        return list(compute(list(items)))
    n, rank = accelerator.num_processes // group, accelerator.process_index // group
    mine = list(range(rank, len(items), n))
    results = list(compute([items[i] for i in mine])) if mine else []
    merged: list = [None] * len(items)
    for part in gather_objects(accelerator, list(zip(mine, results))):
        for i, value in part:
            merged[i] = value
    return merged


def block_seed(seed: int, block: int) -> int:
    """The sampling seed of block `block` of an iteration seeded `seed`: the seed itself for block 0, else a
    31-bit seed derived from both (numpy's SeedSequence), so no two blocks or iterations share a stream."""
    return seed if block == 0 else int(np.random.SeedSequence([seed, block]).generate_state(1)[0] >> 1)


def blocks(count: int, block: int | None, num_processes: int) -> list[range]:
    """The sampling blocks of `count` prompts: `block` prompts each, or one per process when `block` is None."""
    size = block or max(1, math.ceil(count / num_processes))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def sample(accelerator, prompts: list, block: int | None, seed: int, draw: Callable[[list, int], list]) -> list:
    """The groups of samples `draw(prompts_of_a_block, seed_of_that_block)` makes, block by block, each process
    drawing every N-th block; every process gets all of them, in prompt order."""
    ranges = blocks(len(prompts), block, accelerator.num_processes)
    drawn = map_shards(accelerator, list(enumerate(ranges)),
                       lambda mine: [draw([prompts[i] for i in r], block_seed(seed, b)) for b, r in mine])
    return [group for groups in drawn for group in groups]


def judge_matrices(accelerator, judge, prompts: list, texts: list, path: Path, chunk_size: int) -> np.ndarray:
    """The judged K x K matrices of every prompt (prefkit.judges.preference_matrix), each process judging its
    share with a checkpoint of its own (`judged.rank{R}-of-{N}.npz`, removed once gathered); the main process
    writes them all to `path`, which a resumed run reads without judging again."""
    from prefkit.judges import checkpoint, preference_matrix
    from prefkit.judges.load import load_judge

    if accelerator.num_processes == 1:
        return preference_matrix(judge, prompts, texts, checkpoint=path, chunk_size=chunk_size)
    judge, k = load_judge(judge), len(texts[0])
    inputs = checkpoint.digest(prompts, texts)
    done = checkpoint.load(path, inputs, judge.name, k)
    if len(done) == len(prompts):
        return np.stack(done)
    own = path.with_name(f"{path.stem}.rank{accelerator.process_index}-of-{accelerator.num_processes}.npz")
    pairs = list(zip(prompts, texts))
    matrices = map_shards(accelerator, pairs, lambda mine: list(preference_matrix(
        judge, [p for p, _ in mine], [t for _, t in mine], checkpoint=own, chunk_size=chunk_size)))
    if accelerator.is_main_process:
        checkpoint.save(path, matrices, inputs, judge.name, k)
    accelerator.wait_for_everyone()
    own.unlink(missing_ok=True)
    return np.stack(matrices)


def take_trained_weights(model, policy, accelerator) -> None:
    """Bring `model`, which samples, scores and is saved, the weights the fit just trained. Without sharding the fit
    trained `model` itself; under FSDP it trained a copy of which each process holds a shard: each trainable
    weight is gathered whole on every process, one at a time, and copied in."""
    from torch.distributed.tensor import DTensor

    trained = accelerator.unwrap_model(policy).model
    if trained is model:
        return
    whole = dict(model.named_parameters())
    with torch.no_grad():
        for name, weight in trained.named_parameters():
            if weight.requires_grad:
                whole[name].copy_(weight.full_tensor() if isinstance(weight, DTensor) else weight)


def on_main(accelerator, compute: Callable):
    """`compute()` on the main process only, its result broadcast to every process (the evaluation metrics and
    the refresh decision: measured once, the same everywhere)."""
    if accelerator.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    result = [compute() if accelerator.is_main_process else None]
    return broadcast_object_list(result, from_process=0)[0]


def stopping(accelerator, requested: bool) -> bool:
    """A stop requested on any process, agreed on every one, so all stop at the same stage."""
    return agree(accelerator, requested)[0]
