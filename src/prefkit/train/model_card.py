"""The final model as the hub expects it: Hugging Face format (loadable by `AutoModelForCausalLM.from_pretrained`,
or peft's `AutoPeftModelForCausalLM` for an adapter), the tokenizer, and a model card written with
huggingface_hub's ModelCard (base_model, datasets, library_name, tags; the loss and its hyper-parameters, the
adapter's settings, the final metrics). Written to a temporary directory and moved into place only when complete.
With `merge_lora`, the adapter merged into its base is written beside it (`merged/`); `push_to_hub` uploads both.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from prefkit.errors import PrefkitError
from prefkit.io import save_model
from prefkit.losses import get


def save_final(model, tokenizer, final: Path, config, data, metrics: dict, weights: dict | None = None) -> None:
    """`final/` (the model, or the adapter with a LoRA run) and, with `merge_lora`, `merged/` beside it. `data` is
    the PreparedData of an offline run, None for self-play; `config` a TrainConfig or SelfPlayConfig. `weights`:
    the model's full state dict where FSDP shards it (prefkit.train.checkpoint.full_weights)."""
    adapter = hasattr(model, "peft_config")  # a peft model: save_pretrained writes the adapter
    if adapter:  # the base as the user named it (a hub id stays a hub id), not the path it was loaded from
        for options in model.peft_config.values():
            options.base_model_name_or_path = config.model
    card = model_card(config, data, metrics, adapter=adapter)
    _write(final, model, tokenizer, card, config, **({} if weights is None else {"state_dict": weights}))
    if adapter and getattr(config, "merge_lora", False):
        merged = model.merge_and_unload()  # training is over: the adapter's weights go into the base layers
        _write(final.with_name("merged"), merged, tokenizer, model_card(config, data, metrics, adapter=False), config)


def _write(directory: Path, model, tokenizer, card, config, **options) -> None:
    def extra(folder: Path) -> None:
        card.save(folder / "README.md")
        (folder / "prefkit_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    save_model(model, tokenizer, directory, extra=extra, **options)


def hub_id(name) -> str | None:
    """`name` if it reads as a hub id (not a local path), else None: card metadata only names hub repositories."""
    if not isinstance(name, str) or not name or os.path.exists(os.path.expanduser(name)):
        return None
    return name if name.count("/") <= 1 and not name.startswith((".", "/", "~")) else None


def _sources(config) -> list[str]:
    """The data a run learned from: the offline data sources, or the self-play prompts."""
    data = getattr(config, "data", getattr(config, "prompts", ""))
    data = data if isinstance(data, list) else [{"path": data}]
    return [str(entry.get("path")) for entry in data]


# The training settings a card lists, those the config has (offline or self-play).
SETTINGS = ("learning_rate", "batch_size", "grad_accum", "max_steps", "epochs", "schedule", "warmup_steps",
            "warmup_ratio", "reference", "iterations", "prompts_per_iteration", "samples_per_prompt",
            "refresh_every", "winrates", "pairs", "temperature", "seed")


def _summary(config, data, method: str) -> str:
    sources = ", ".join(f"`{s}`" for s in _sources(config))
    if data is None:  # self-play: sampled and judged, not read from a data set
        return (f"Trained with [prefkit](https://pypi.org/project/prefkit/) from `{config.model}` by self-play "
                f"**{method}** against the judge `{config.judge}` on the prompts {sources} ({config.iterations} "
                "iterations).")
    return (f"Trained with [prefkit](https://pypi.org/project/prefkit/) from `{config.model}` by **{method}** on "
            f"{sources} ({len(data.examples)} {data.kind} examples, format: {data.format}).")


def model_card(config, data, metrics: dict, *, adapter: bool):
    from huggingface_hub import ModelCard, ModelCardData

    names = [config.loss] if isinstance(config.loss, str) else list(config.loss)
    specs = [get(n) for n in names]
    weights = getattr(config, "loss_weights", None) or [1.0] * len(names)
    method = " + ".join(f"{w:g} x {s.name}" if len(names) > 1 else s.name for s, w in zip(specs, weights))
    hyper = {k: v for s in specs for k, v in s.check_hyperparameters(
        {p: q for p, q in config.loss_params.items() if p in s.defaults}).items()}
    card_data = ModelCardData(
        base_model=hub_id(config.model), datasets=[d for d in map(hub_id, _sources(config))
                                                   if d and d.split(":")[0] != "task"] or None,  # not the bundled task
        library_name="peft" if adapter else "transformers", pipeline_tag="text-generation",
        model_name=Path(config.output_dir).name,
        tags=["prefkit", *(["self-play"] if data is None else []), *dict.fromkeys(s.name for s in specs),
              *(["lora"] if adapter else [])])
    lines = [
        f"# {Path(config.output_dir).name}", "", _summary(config, data, method), "",
        "## Method", "", *[f"- `{s.name}` ({s.family}): {s.summary} Paper: {s.paper}." for s in specs], "",
        "## Hyper-parameters", "", "| parameter | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()],
        *[f"| {k} | {getattr(config, k)} |" for k in SETTINGS if hasattr(config, k)],
        "", *(_adapter_section(config) if adapter else []),
        "## Final training metrics", "", *[f"- {k}: {v:.4g}" for k, v in metrics.items()
                                          if isinstance(v, float)], "",
        "## Use", "", "```python", *_usage(adapter), "```", "",
    ]
    return ModelCard("---\n" + card_data.to_yaml() + "\n---\n\n" + "\n".join(lines))


def _adapter_section(config) -> list[str]:
    from prefkit.modeling.load import LORA_DEFAULTS

    options = {**LORA_DEFAULTS, **(config.lora or {})}
    return ["## LoRA adapter", "", f"A peft LoRA adapter on `{config.model}`"
            + (" (the merged model is in `merged/` beside it)." if config.merge_lora else "."), "",
            "| parameter | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in options.items()], ""]


def _usage(adapter: bool) -> list[str]:
    if adapter:
        return ["from peft import AutoPeftModelForCausalLM", "",
                'model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_HUB_ID")']
    return ["from transformers import AutoModelForCausalLM", "",
            'model = AutoModelForCausalLM.from_pretrained("PATH_OR_HUB_ID")']


def push_to_hub(config, final: Path) -> str:
    """Upload `final/` (and `merged/` when written, to its `merged` folder) to `hub_model_id` (default: the output
    directory's name under the user's account); returns the repository id."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo = config.hub_model_id or Path(config.output_dir).resolve().name
    try:
        repo = api.create_repo(repo, private=config.hub_private_repo, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo, folder_path=str(final), commit_message="prefkit: final model")
        merged = final.with_name("merged")
        if merged.is_dir():
            api.upload_folder(repo_id=repo, folder_path=str(merged), path_in_repo="merged",
                              commit_message="prefkit: merged model")
    except Exception as error:  # HfHubHTTPError, network errors: the model is saved locally either way
        raise PrefkitError(f"push_to_hub: could not upload {final} to {repo}: {type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''} (the model is saved in {final})") \
            from error
    return repo
