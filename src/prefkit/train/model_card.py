"""The final model: Hugging Face format (loadable by `AutoModelForCausalLM.from_pretrained`), the tokenizer,
and a model card naming the method, its hyper-parameters and the data; written to a temporary directory and
moved into place only when complete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from prefkit.losses import get
from prefkit.io import save_model


def save_final(model, tokenizer, final: Path, config, data, metrics: dict) -> None:
    def card(folder: Path) -> None:
        (folder / "README.md").write_text(model_card(config, data, metrics))
        (folder / "prefkit_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    save_model(model, tokenizer, final, extra=card)


def model_card(config, data, metrics: dict) -> str:
    names = [config.loss] if isinstance(config.loss, str) else list(config.loss)
    specs = [get(n) for n in names]
    weights = config.loss_weights or [1.0] * len(names)
    method = " + ".join(f"{w:g} x {s.name}" if len(names) > 1 else s.name for s, w in zip(specs, weights))
    hyper = {k: v for s in specs for k, v in s.check_hyperparameters(
        {p: q for p, q in config.loss_params.items() if p in s.defaults}).items()}
    lines = [
        "---", "library_name: transformers", "tags:", "- prefkit", *[f"- {n}" for n in names], "---", "",
        f"# {Path(config.output_dir).name}", "",
        f"Trained with [prefkit](https://pypi.org/project/prefkit/) from `{config.model}` by **{method}** "
        f"on `{config.data}` ({len(data.examples)} {data.kind} examples, format: {data.format}).", "",
        "## Method", "", *[f"- `{s.name}` ({s.family}): {s.summary} Paper: {s.paper}." for s in specs], "",
        "## Hyper-parameters", "", "| parameter | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()],
        *[f"| {k} | {getattr(config, k)} |" for k in ("learning_rate", "batch_size", "grad_accum", "max_steps",
                                                       "epochs", "schedule", "warmup_steps", "reference", "seed")],
        "", "## Final training metrics", "", *[f"- {k}: {v:.4g}" for k, v in metrics.items()
                                              if isinstance(v, float)], "",
    ]
    return "\n".join(lines)
