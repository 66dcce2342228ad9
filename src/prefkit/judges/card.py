"""The final judge on disk: the model and tokenizer in Hugging Face format, the run's config, and a model card
(huggingface_hub's `ModelCard`) naming the kind, base model, data, settings and eval metrics; written to a
temporary directory and moved into place only when complete."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from prefkit.io import save_model

_KINDS = {
    "bt": ("Bradley-Terry reward model", "reward-model", "reward",
           "P(a ≻ b | x) = σ(r(x, a) − r(x, b)), r the head's one output on the last token of prompt + response."),
    "gpm": ("general preference model (GPM; Zhang et al. 2024, arXiv 2410.02197)", "general-preference-model",
            "gpm",
            "P(a ≻ b | x) = σ(v_aᵀ R(x) v_b / τ): v the unit-norm embedding of prompt + response (the head's "
            "first "
            "`embedding_dim` outputs), R(x) skew-symmetric block-diagonal with the prompt's eigenvalue gate "
            "softmax(the head's last embedding_dim/2 outputs on the prompt alone) when `prompt_scaling` is on."),
}
_SETTINGS = {"bt": ("learning_rate", "batch_size", "grad_accum", "max_steps", "epochs", "schedule", "warmup_steps",
                    "max_length", "seed", "lora"),
             "gpm": ("embedding_dim", "prompt_scaling", "temperature", "learning_rate", "batch_size", "grad_accum",
                     "max_steps", "epochs", "schedule", "warmup_steps", "max_length", "seed", "lora")}


def save_judge(model, tokenizer, final: Path, config, data, metrics: dict) -> None:
    def card(folder: Path) -> None:
        judge_card(config, data, metrics).save(folder / "README.md")
        (folder / "prefkit_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    save_model(model, tokenizer, final, extra=card)


def judge_card(config, data, metrics: dict):
    from huggingface_hub import ModelCard, ModelCardData

    title, tag, spec, formula = _KINDS[config.kind]
    local = os.path.exists(os.path.expanduser(config.model))
    meta = ModelCardData(library_name="transformers", pipeline_tag="text-classification",
                         tags=["prefkit", tag], base_model=None if local else config.model)
    evaluated = {k.removeprefix("eval/"): v for k, v in metrics.items() if k.startswith("eval/")}
    lines = [
        f"# {Path(config.output_dir).name}", "",
        f"A {title} trained with [prefkit](https://pypi.org/project/prefkit/) (`prefkit judge train`) from "
        f"`{config.model}` on `{config.data}` ({len(data.examples)} preference pairs, format: {data.format}).", "",
        formula, "",
        "Load it as a judge: `prefkit.judges.load_judge(\"" + spec + ":PATH\")`; the settings are in config.json "
        "under `prefkit_judge`.", "",
        "## Settings", "", "| setting | value |", "|---|---|",
        *[f"| {key} | {getattr(config, key)} |" for key in _SETTINGS[config.kind]], "",
        "## Evaluation", "",
        *([f"On `{config.eval_data}` at step {metrics.get('step')}:", "", "| metric | value |", "|---|---|",
           *[f"| {key} | {value:.4g} |" for key, value in evaluated.items()]] if evaluated
          else ["No eval split was given (`eval_data`)."]), "",
    ]
    return ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines))
