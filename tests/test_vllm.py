"""vLLM generation (`generator: vllm`), where vllm is installed: `python -m pytest -m vllm` in the environment
.ci/run builds for it (the main suite skips this file). vLLM's log-probs of its own samples equal transformers'
teacher-forced ones, before and after a training step pushed into the engine; its samples of the bundled task
follow the model's exact distribution over the canonical answers (a chi-square test, shown able to reject); and a
self-play run with `generator: vllm` completes and resumes to the same result."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from prefkit.modeling.generation import encode_prompt  # noqa: E402
from prefkit.modeling.vllm_generator import LocalEngine, VllmOptions, request_seeds  # noqa: E402
from prefkit.tasks import SyntheticTask, canonical_distributions, reference_model  # noqa: E402

OPTIONS = dict(max_model_len=64, kv_cache_memory_bytes=64 << 20)  # the task model's 64 positions; a small cache
# float32 logits in both engines: the per-token log-probs differ by float rounding of two different kernels,
# under 1e-6 measured (5e-7); 1e-4 leaves room for other CPUs' instruction sets and still catches a real mismatch
# (stale weights move them by more than 1e-2: the push tests assert it).
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def float32():
    """vLLM computes in the engine's dtype; the suite's float64 default would leak into its buffers."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(scope="module")
def pretrained(float32, tmp_path_factory):
    """The task's reference after 300 pre-training steps: real mass on the canonical answers."""
    task = SyntheticTask()
    model, tokenizer = reference_model(task, seed=0, steps=300)
    path = tmp_path_factory.mktemp("vllm") / "pretrained"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return task, model.float().eval(), tokenizer, str(path)


@pytest.fixture(scope="module")
def engine(pretrained):
    return LocalEngine(pretrained[3], VllmOptions(**OPTIONS), dtype="float32", seed=0)


@torch.no_grad()
def teacher_forced(model, prompt_ids: list[int], ids: list[int]) -> torch.Tensor:
    """transformers' log-prob of each token of `ids` after the prompt, in float64."""
    logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1:-1].double()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids)[:, None])[:, 0]


def sample(engine, policy, saved, tokenizer, prompts, n, *, seed, **options):
    """n samples per prompt from `policy`, saved in `saved`, as one self-play process draws them."""
    engine.hold(policy, saved)
    return engine.sample(tokenizer, prompts, n, seeds=request_seeds(seed, len(prompts)), **options)


def largest_gap(model, tokenizer, prompts, groups, logps) -> float:
    gaps = [(teacher_forced(model, encode_prompt(tokenizer, p), s.ids) - torch.tensor(lp, dtype=torch.float64))
            .abs().max().item() for p, g, l in zip(prompts, groups, logps) for s, lp in zip(g, l) if s.ids]
    assert len(gaps) == sum(len(g) for g in groups)
    return max(gaps)


def test_vllm_log_probs_of_its_samples_equal_transformers(pretrained, engine):
    task, model, tokenizer, path = pretrained
    prompts = task.prompts(split="eval")[:8]
    groups, logps = sample(engine, model, path, tokenizer, prompts, 4, seed=1, max_new_tokens=8, logprobs=True)
    assert all(len(g) == 4 for g in groups)
    assert largest_gap(model, tokenizer, prompts, groups, logps) < TOLERANCE


def test_after_a_training_step_and_a_push_the_log_probs_are_equal_again(pretrained, engine):
    from prefkit.tasks import pretrain

    task, model, tokenizer, path = pretrained
    trained = type(model)(model.config)
    trained.load_state_dict(model.state_dict())
    pretrain(trained, tokenizer, task.sft_rows(256, seed=5), steps=1, batch_size=64, lr=3e-2, seed=5)
    prompts = task.prompts(split="eval")[:8]
    groups, logps = sample(engine, trained, "after-one-step", tokenizer, prompts, 4, seed=2, max_new_tokens=8,
                           logprobs=True)
    assert largest_gap(trained, tokenizer, prompts, groups, logps) < TOLERANCE
    # the step moved the model by far more than the tolerance: the engine really holds the new weights
    assert largest_gap(model, tokenizer, prompts, groups, logps) > 100 * TOLERANCE


def chi_square(groups, exact, tokenizer, task, prompts) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom over prompts: counts of each canonical answer (as the token
    ids it is scored with) and of everything else, against the model's exact probabilities."""
    from prefkit.modeling.generation import encode_completion

    statistic, dof = 0.0, 0
    for prompt, group, (probs, outside) in zip(prompts, groups, exact):
        answers = [encode_completion(tokenizer, r) for r in task.canonical(prompt)]
        counts = np.zeros(len(answers) + 1)
        for sample in group:
            counts[answers.index(sample.ids) if sample.ids in answers else -1] += 1
        expected = np.append(probs * (1 - outside), outside) * len(group)
        small = expected < 5  # pooled into one cell, as the test's approximation needs
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
        keep = expected > 0
        statistic += float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
        dof += int(keep.sum()) - 1
    return statistic, dof


def test_sampled_canonical_answers_follow_the_models_exact_distribution(pretrained, engine):
    from scipy.stats import chi2

    task, model, tokenizer, path = pretrained
    prompts = task.prompts("cyclic", split="eval")[:3] + task.prompts("transitive", split="eval")[:3]
    exact = canonical_distributions(model, tokenizer, task, prompts)
    groups = sample(engine, model, path, tokenizer, prompts, 400, seed=3, max_new_tokens=6)
    statistic, dof = chi_square(groups, exact, tokenizer, task, prompts)
    assert chi2.sf(statistic, dof) > 1e-3, (statistic, dof)
    # the same test rejects samples from another distribution (temperature 1.5 flattens it)
    hotter = sample(engine, model, path, tokenizer, prompts, 400, seed=3, max_new_tokens=6, temperature=1.5)
    statistic, dof = chi_square(hotter, exact, tokenizer, task, prompts)
    assert chi2.sf(statistic, dof) < 1e-6, (statistic, dof)


def moved_lora_policy(path):
    """The model at `path` with a LoRA adapter whose weights move it (a fresh adapter adds nothing: B = 0)."""
    from prefkit.modeling.load import load_model

    policy = load_model(path, lora={"r": 4, "alpha": 8}, fuse=False).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.3, generator=generator)
    return policy


def test_a_lora_policy_is_pushed_as_merged_weights(pretrained, engine):
    task, model, tokenizer, path = pretrained
    policy = moved_lora_policy(path)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    prompts = task.prompts(split="eval")[:8]
    groups, logps = sample(engine, policy, "lora-policy", tokenizer, prompts, 4, seed=4, max_new_tokens=8,
                           logprobs=True)
    assert largest_gap(policy, tokenizer, prompts, groups, logps) < TOLERANCE
    assert largest_gap(model, tokenizer, prompts, groups, logps) > 100 * TOLERANCE  # the adapter was in the push
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())  # merged out of place


@pytest.mark.parametrize("lora", [None, {"r": 4}], ids=["full", "lora"])
def test_a_self_play_run_with_vllm_completes_and_resumes_to_the_same_result(pretrained, tmp_path, lora):
    from safetensors.torch import load_file

    from test_selfplay import config
    from prefkit.selfplay.loop import selfplay

    path = pretrained[3]
    settings = dict(generator="vllm", vllm=OPTIONS, loss="mpo", loss_params={"eta": 2.0, "alpha": 0.2},
                    refresh_every=2, winrates="sampled", max_new_tokens=6, **({"lora": lora} if lora else {}))
    selfplay(config(path, tmp_path / "once", iterations=3, **settings))
    selfplay(config(path, tmp_path / "twice", iterations=1, **settings))
    selfplay(config(path, tmp_path / "twice", iterations=3, resume=True, **settings))
    for t in (1, 2, 3):  # resumed iterations sample exactly what the uninterrupted run sampled
        once, twice = (json.loads((tmp_path / run / f"iter-{t:04d}" / "samples.json").read_text())
                       for run in ("once", "twice"))
        assert once == twice, t
    samples = json.loads((tmp_path / "once" / "iter-0002" / "samples.json").read_text())["samples"]
    assert all(len(group) == 3 for group in samples) and any(s["ids"] for g in samples for s in g)
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    once, twice = (load_file(str(tmp_path / run / "final" / weights)) for run in ("once", "twice"))
    assert all(torch.equal(once[k], twice[k]) for k in once)


@pytest.mark.slow
def test_two_processes_with_an_engine_each_sample_what_one_process_samples_and_resume_exactly(pretrained, tmp_path):
    """`accelerate launch --num_processes 2` with generator: vllm: each process starts an engine of its own
    (vLLM's external launcher) and samples every other prompt, each prompt with its own seed; the samples equal a
    one-process run's (the same seeds and the same weights, to the rounding of DDP's gradient all-reduce in the
    second iteration). So do two processes that run one engine together (`tensor_parallel_size: 2`). Resumed after
    one iteration, the 2-process run ends bit for bit where it ends uninterrupted."""
    from test_selfplay_distributed import launch, weights

    vllm = ["generator=vllm", "vllm=" + json.dumps(OPTIONS)]
    one, two, parallel, resumed = (tmp_path / name for name in ("one", "two", "parallel", "resumed"))
    launch(pretrained[3], one, 1, "iterations=2", *vllm)
    launch(pretrained[3], two, 2, "iterations=2", *vllm)
    launch(pretrained[3], parallel, 2, "iterations=2", "generator=vllm",
           "vllm=" + json.dumps({**OPTIONS, "tensor_parallel_size": 2}))
    for t in (1, 2):
        a, b, c = ((run / f"iter-{t:04d}" / "samples.json").read_text() for run in (one, two, parallel))
        assert a == b == c, t
    a, b = weights(one), weights(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    launch(pretrained[3], resumed, 2, "iterations=1", *vllm)
    launch(pretrained[3], resumed, 2, "iterations=2", "--resume", *vllm)
    c = weights(resumed)
    assert all(torch.equal(b[k], c[k]) for k in b)


@pytest.mark.parametrize("name", ["mpo-vllm.yaml", "mpo-gpu.yaml"])
def test_the_example_vllm_configs_validate(name):
    from pathlib import Path

    from prefkit.train.config import load_config
    from prefkit.selfplay.config import SelfPlayConfig

    config = load_config(str(Path(__file__).parents[1] / "configs" / name), kind=SelfPlayConfig)
    assert config.generator == "vllm" and config.vllm["max_model_len"] in (64, 2048)


@pytest.fixture
def server(pretrained, tmp_path):
    """vLLM's OpenAI-compatible server on the loopback, started on the pre-trained model, with the reload endpoint."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
         "--model", pretrained[3], "--max-model-len", "64", "--dtype", "float32"], stdout=log, stderr=log,
        env={**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 600
    try:
        while True:
            assert process.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=5)
                break
            except OSError:
                time.sleep(2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_a_server_samples_and_reloads_the_saved_policy(pretrained, server, tmp_path):
    from prefkit.modeling.vllm_generator import ServerEngine

    task, model, tokenizer, path = pretrained
    engine = ServerEngine(path, VllmOptions(server=server))
    prompts = task.prompts(split="eval")[:4]
    groups, logps = sample(engine, model, path, tokenizer, prompts, 3, seed=1, max_new_tokens=6, logprobs=True)
    assert largest_gap(model, tokenizer, prompts, groups, logps) < TOLERANCE
    moved = type(model)(model.config)
    moved.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()})
    moved.save_pretrained(tmp_path / "policy")  # the server reloads what the run saved
    groups, logps = sample(engine, moved, tmp_path / "policy", tokenizer, prompts, 3, seed=1, max_new_tokens=6,
                           logprobs=True)
    assert largest_gap(moved, tokenizer, prompts, groups, logps) < TOLERANCE
    assert largest_gap(model, tokenizer, prompts, groups, logps) > 100 * TOLERANCE


@pytest.mark.slow
def test_two_processes_sharing_a_server_sample_what_one_engine_samples(pretrained, server, tmp_path):
    """Two processes, one server: the main process reloads it with each iteration's policy before either samples
    its share, so the samples equal a one-process run's with an engine of its own."""
    from test_selfplay_distributed import launch

    vllm = {"server": server, "timeout": 120}
    served, local = tmp_path / "served", tmp_path / "local"
    launch(pretrained[3], served, 2, "iterations=2", "generator=vllm", "vllm=" + json.dumps(vllm))
    launch(pretrained[3], local, 1, "iterations=2", "generator=vllm", "vllm=" + json.dumps(OPTIONS))
    for t in (1, 2):
        a, b = ((run / f"iter-{t:04d}" / "samples.json").read_text() for run in (served, local))
        assert a == b, t


@pytest.mark.slow
def test_a_server_reloads_a_lora_policy_as_merged_weights(pretrained, server, tmp_path):
    from prefkit.modeling.vllm_generator import ServerEngine

    task, model, tokenizer, path = pretrained
    policy = moved_lora_policy(path)
    saved = tmp_path / "iter-0001" / "policy"
    policy.save_pretrained(saved)  # what a LoRA run saves: the adapter alone
    prompts = task.prompts(split="eval")[:4]
    engine = ServerEngine(path, VllmOptions(server=server))
    groups, logps = sample(engine, policy, saved, tokenizer, prompts, 3, seed=2, max_new_tokens=6, logprobs=True)
    assert largest_gap(policy, tokenizer, prompts, groups, logps) < TOLERANCE
    assert largest_gap(model, tokenizer, prompts, groups, logps) > 100 * TOLERANCE  # the adapter was reloaded
    assert not (saved.parent / "vllm-weights").exists()  # the merged copy is gone once read
