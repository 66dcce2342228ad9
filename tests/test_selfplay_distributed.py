"""Self-play on several processes: sampling in seeded blocks does not depend on how many processes share them,
the processes of one tensor-parallel vLLM engine share their prompts, what a launch cannot run is refused, and
`accelerate launch --num_processes 2` (gloo on CPU) gives the result of one process with the same global
settings, and resumes exactly."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prefkit.selfplay import distributed
from prefkit.selfplay.config import SelfPlayConfig
from prefkit.train.config import load_config
from prefkit.train.tracking import read_metrics


def process(rank: int, n: int):
    return SimpleNamespace(num_processes=n, process_index=rank, is_main_process=rank == 0)


def test_blocks_cover_the_prompts_once_and_block_zero_keeps_the_iteration_seed():
    assert distributed.blocks(5, 2, 3) == [range(0, 2), range(2, 4), range(4, 5)]
    assert distributed.blocks(5, None, 2) == [range(0, 3), range(3, 5)]  # one block per process
    assert distributed.blocks(5, None, 1) == [range(0, 5)]  # one process: one block, sampled as it always was
    seeds = [distributed.block_seed(1001, b) for b in range(50)] + [distributed.block_seed(1002, b) for b in range(50)]
    assert seeds[0] == 1001 and seeds[50] == 1002 and len(set(seeds)) == 100
    assert all(0 <= s < 2 ** 31 for s in seeds)


def test_two_processes_draw_exactly_the_samples_of_one(model, tokenizer, task, monkeypatch):
    """The same `sample_block` on 1 and on 2 processes (rank 1's share recorded, then handed to rank 0's gather, as
    torch.distributed would) gives the same samples, in prompt order: each block is one seeded `generate` call."""
    from prefkit.modeling.generation import generate

    prompts = task.prompts(split="train")[:5]
    draw = lambda part, seed: generate(model, tokenizer, part, 3, seed=seed, max_new_tokens=4)  # noqa: E731
    alone = distributed.sample(process(0, 1), prompts, 2, 7, draw)
    shares = {}

    class Recorded(Exception):
        pass

    def gather(accelerator, part):  # all_gather_object: every rank's part, in rank order
        shares[accelerator.process_index] = part
        if accelerator.process_index == 1:  # rank 0's part does not exist yet: stop once rank 1's is recorded
            raise Recorded
        return [shares[0], shares[1]]

    monkeypatch.setattr(distributed, "gather_objects", gather)
    with pytest.raises(Recorded):
        distributed.sample(process(1, 2), prompts, 2, 7, draw)
    together = distributed.sample(process(0, 2), prompts, 2, 7, draw)
    assert [[s.ids for s in g] for g in together] == [[s.ids for s in g] for g in alone]
    assert [i for i, _ in shares[1]] == [1] and [i for i, _ in shares[0]] == [0, 2]  # blocks 1 / 0 and 2
    # and a single block is the plain call with the iteration's seed (what a one-process run always sampled)
    whole = distributed.sample(process(0, 1), prompts, None, 7, draw)
    assert [[s.ids for s in g] for g in whole] == [[s.ids for s in g] for g in draw(prompts, 7)]
    assert [[s.ids for s in g] for g in whole] != [[s.ids for s in g] for g in alone]  # other blocks, other seeds


def test_processes_in_groups_compute_their_groups_share_and_every_process_gets_all(monkeypatch):
    """4 processes in tensor-parallel groups of 2: ranks 0 and 1 compute items 0, 2, 4, ranks 2 and 3 items 1, 3;
    the gathered result (the same part twice from each group) is every item once, in order."""
    items, computed, parts = list("abcde"), {}, {}

    def compute(rank):
        def upper(mine):
            computed[rank] = "".join(mine)
            return [x.upper() for x in mine]
        return upper

    for rank in range(4):  # each rank's part recorded; rank 3 gathers all four, as all_gather_object would
        monkeypatch.setattr(distributed, "gather_objects",
                            lambda accelerator, part, rank=rank: parts.__setitem__(rank, part) or list(parts.values()))
        merged = distributed.map_shards(process(rank, 4), items, compute(rank), group=2)
    assert computed == {0: "ace", 1: "ace", 2: "bd", 3: "bd"}
    assert merged == list("ABCDE")


@pytest.mark.parametrize("environment, overrides, message", [
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}, [], "asks for FSDP .ACCELERATE_USE_FSDP.*data-parallel"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, [], "asks for DeepSpeed"),
])
def test_what_a_launch_cannot_run_is_refused_at_validation(monkeypatch, tmp_path, environment, overrides, message):
    from prefkit.errors import PrefkitError

    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(PrefkitError, match=message):
        load_config(None, {"model": "m", "output_dir": str(tmp_path)}, overrides, kind=SelfPlayConfig)
    for key in environment:
        monkeypatch.delenv(key)
    load_config(None, {"model": "m", "output_dir": str(tmp_path)}, overrides, kind=SelfPlayConfig)  # one process


def test_vllm_engines_on_several_processes_need_whole_tensor_parallel_groups(monkeypatch):
    for processes, tensor_parallel, refused in [(2, 1, False), (2, 2, False), (4, 2, False), (2, 3, True)]:
        monkeypatch.setenv("WORLD_SIZE", str(processes))
        found = distributed.launch_problems("vllm", {"tensor_parallel_size": tensor_parallel})
        assert bool(found) == refused and all("does not divide the 2 processes" in p for p in found)
    assert not distributed.launch_problems("vllm", {"tensor_parallel_size": 3, "server": "http://127.0.0.1:8000"})
    assert not distributed.launch_problems("hf", {"tensor_parallel_size": 3})


def test_the_example_accelerate_configs_are_accelerates_own():
    """configs/accelerate/*.yaml load with accelerate's own reader (an unknown or misspelt key fails there)."""
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    paths = sorted((Path(__file__).parents[1] / "configs" / "accelerate").glob("*.yaml"))
    assert [p.stem for p in paths] == ["ddp", "fsdp"]
    kinds = {p.stem: load_config_from_file(str(p)).distributed_type for p in paths}
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}


# ---- accelerate launch, 2 processes on CPU (gloo) ---------------------------------------------------------------

SETTINGS = ["prompts_per_iteration=8", "samples_per_prompt=3", "max_new_tokens=4", "eval_limit=4", "epochs=1",
            "learning_rate=1e-3", "progress=false", "loss=mpo", 'loss_params={"eta": 2.0, "alpha": 0.2}',
            "refresh_every=1", "judge=distinct_judge:judge", "sample_block=2"]
# A black-box judge with an opinion on the untrained model's answers: the task's oracle ties nearly all of them, and
# then MPO's targets are 0, the gradients float noise, and AdamW turns noise into steps of the learning rate's size.
JUDGE = "def judge(prompt, a, b):\n    return 0.5 + 0.4 * ((len(set(a)) > len(set(b))) - (len(set(a)) < len(set(b))))\n"


def launch(initial, out, processes: int, *extra: str) -> None:
    """`prefkit selfplay` on `processes` processes; the global batch is 4 (batch_size is per process)."""
    (out.parent / "distinct_judge.py").write_text(JUDGE)
    path = os.pathsep.join(p for p in (str(out.parent), os.environ.get("PYTHONPATH")) if p)
    start = [sys.executable, "-m", "prefkit"] if processes == 1 else \
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
         "-m", "prefkit"]
    command = [*start, "selfplay", "--model", initial, "--output-dir", str(out), *SETTINGS,
               f"batch_size={4 // processes}", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-3000:]


def weights(run):
    return load_file(str(run / "final" / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(initial, tmp_path):
    """Samples and judged matrices are identical (each sampling block is drawn by one process with its own seed,
    from the same weights, or weights a few 1e-6 apart in iteration 2; the judge sees the same texts). The log-prob
    tables agree to 1e-5 and the losses to 1e-5 in float32: the same numbers summed in another order by the smaller
    scoring batches and by DDP's all-reduce of the gradients. The weights agree to 1e-4, a tenth of one AdamW step
    (lr 1e-3), since AdamW divides each gradient by its running RMS, which magnifies that rounding where a gradient is
    near 0 (measured: 2.4e-6 after iteration 1, 1.9e-5 after iteration 2); training moved them by over 1e-3.
    On 2 processes, one iteration continued with --resume to two ends bit for bit where the uninterrupted run does."""
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    launch(initial, one, 1, "iterations=2")
    launch(initial, two, 2, "iterations=2")
    for t in (1, 2):
        folder = f"iter-{t:04d}"
        assert (one / folder / "samples.json").read_text() == (two / folder / "samples.json").read_text()
        a, b = (np.load(run / folder / "judged.npz")["matrices"] for run in (one, two))
        assert a.shape == (8, 3, 3) and np.array_equal(a, b)
        tables = [load_file(str(run / folder / "logps.safetensors")) for run in (one, two)]
        assert all(torch.allclose(tables[0][k], tables[1][k], atol=1e-5) for k in ("prev", "ref"))
    assert not list(two.glob("iter-*/judged.rank*"))  # each process's own checkpoint is gone once gathered
    a, b, initial_weights = weights(one), weights(two), load_file(f"{initial}/model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert max((a[k] - initial_weights[k].float()).abs().max().item() for k in a) > 1e-3  # both actually trained
    records = [read_metrics(run) for run in (one, two)]
    assert len(records[1]) == 2 and [r["refreshed"] for r in records[1]] == [1.0, 1.0]
    for x, y in zip(*records):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5) and x["examples"] == y["examples"]
        assert x["winrate_vs_initial"] == pytest.approx(y["winrate_vs_initial"], abs=1e-6)

    launch(initial, resumed, 2, "iterations=1")
    assert json.loads((resumed / "state.json").read_text()) == {"completed": 1, "magnet": 1}
    launch(initial, resumed, 2, "iterations=2", "--resume")
    c = weights(resumed)
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert (resumed / "iter-0002" / "samples.json").read_text() == (two / "iter-0002" / "samples.json").read_text()


def test_an_accelerate_state_that_sees_fewer_processes_than_the_launcher_is_refused(monkeypatch):
    from prefkit.errors import PrefkitError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PrefkitError, match="started 2 processes .WORLD_SIZE. but accelerate's state .* has 1"):
        distributed.check_processes(process(0, 1))
    distributed.check_processes(process(0, 2))
