"""The final model: Hugging Face format (loadable by `AutoModelForCausalLM.from_pretrained`), the tokenizer,
and a model card naming the method, its hyper-parameters and the data (offline) or the judge and prompts
(self-play); written to a temporary directory and moved into place only when complete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from prefkit.losses import get
from prefkit.io import save_model

# the self-play settings a card lists beside the loss's hyper-parameters
SELFPLAY_SETTINGS = ("iterations", "refresh_every", "refresh_gap", "eta_final", "mixture_coef", "prompts_per_iteration",
                     "samples_per_prompt", "winrates", "pairs", "epochs", "batch_size", "learning_rate", "schedule",
                     "temperature", "top_p", "max_new_tokens", "generator", "seed")

def save_final(model, tokenizer, final: Path, config, data, metrics: dict, card: str | None = None) -> None:
    """`card` (the README) defaults to `model_card(config, data, metrics)`, the offline trainer's."""
    def write(folder: Path) -> None:
        (folder / "README.md").write_text(card if card is not None else model_card(config, data, metrics))
        (folder / "prefkit_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    save_model(model, tokenizer, final, extra=write)


def model_card(config, data, metrics: dict) -> str:
    """The card of a `prefkit train` model."""
    trained_on = f"on `{config.data}` ({len(data.examples)} {data.kind} examples, format: {data.format})"
    return _card(config, trained_on, ("learning_rate", "batch_size", "grad_accum", "max_steps", "epochs",
                                      "schedule", "warmup_steps", "reference", "seed"), metrics)


def selfplay_card(config, prompts: int, metrics: dict) -> str:
    """The card of a `prefkit selfplay` model: the loss, the judge, the prompts and the self-play settings."""
    trained_on = (f"in self-play against the judge `{config.judge}` on the prompts `{config.prompts}` ({prompts} "
                  f"prompts, {config.iterations} iterations)")
    return _card(config, trained_on, [k for k in SELFPLAY_SETTINGS if hasattr(config, k)], metrics,
                 tags=("self-play",))


def _card(config, trained_on: str, settings, metrics: dict, tags=()) -> str:
    names = [config.loss] if isinstance(config.loss, str) else list(config.loss)
    specs = [get(n) for n in names]
    weights = getattr(config, "loss_weights", None) or [1.0] * len(names)
    method = " + ".join(f"{w:g} x {s.name}" if len(names) > 1 else s.name for s, w in zip(specs, weights))
    hyper = {k: v for s in specs for k, v in s.check_hyperparameters(
        {p: q for p, q in config.loss_params.items() if p in s.defaults}).items()}
    lines = [
        "---", "library_name: transformers", "tags:", "- prefkit", *[f"- {n}" for n in (*tags, *names)], "---", "",
        f"# {Path(config.output_dir).name}", "",
        f"Trained with [prefkit](https://pypi.org/project/prefkit/) from `{config.model}` by **{method}** "
        f"{trained_on}.", "",
        "## Method", "", *[f"- `{s.name}` ({s.family}): {s.summary} Paper: {s.paper}." for s in specs], "",
        "## Hyper-parameters", "", "| parameter | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in hyper.items()], *[f"| {k} | {getattr(config, k)} |" for k in settings],
        "", "## Final training metrics", "", *[f"- {k}: {v:.4g}" for k, v in metrics.items()
                                              if isinstance(v, float)], "",
    ]
    return "\n".join(lines)
