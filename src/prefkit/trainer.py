"""`prefkit.Trainer`: TRL's trainer interface for notebooks, on the engine `prefkit train` runs.

    from prefkit import Trainer
    trainer = Trainer(model="Qwen/Qwen2-0.5B-Instruct", args={"output_dir": "runs/dpo", "beta": 0.1},
                      train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

The keyword names are TRL's (`model`, `args`, `train_dataset`, `eval_dataset`, `processing_class`,
`peft_config`); `args` is a TrainConfig or a dict of the YAML keys (TRL's names too), validated at once, before
anything loads. Training is `prefkit.train.offline.fit`: the same loop, metrics, checkpoints and final model as
the command line (docs/trainer.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from prefkit.errors import PrefkitError


class Trainer:
    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None, processing_class=None,
                 peft_config=None):
        from prefkit.train.config import load_config

        values = _values(args)
        self.model = None if isinstance(model, (str, os.PathLike)) else model
        values["model"] = str(model) if self.model is None else (getattr(model, "name_or_path", "") or "model")
        if self.model is not None:  # weights in memory may differ from any files: never reuse a cached reference
            values["cache_dir"] = tempfile.mkdtemp(prefix="prefkit-reference-")
        self.train_dataset = _dataset(train_dataset, values, "data")
        self.eval_dataset = _dataset(eval_dataset, values, "eval_data")
        if peft_config is not None:
            values["lora"] = lora_options(peft_config)
        values.setdefault("output_dir", "trainer_output")  # transformers' default
        if not {"loss", "loss_type"} & set(values) and _unpaired(self.train_dataset):
            values["loss"] = "kto"  # TRL's KTOTrainer for unpaired rows, as TRL users would pick it
        self.args = load_config(values=values)
        self.processing_class = processing_class
        self.final: Path | None = None

    def train(self) -> Path:
        """Train as `prefkit train` does; returns the directory of the final model (`output_dir/final`)."""
        from prefkit.train.offline import fit

        _fresh_accelerator()
        self.final = fit(self.args, model=self.model, tokenizer=self.processing_class,
                         train_dataset=self.train_dataset, eval_dataset=self.eval_dataset)
        return self.final

    def evaluate(self, eval_dataset=None, **options) -> dict:
        """`prefkit eval`'s metrics of the trained model (`prefkit.eval.evaluate_model`: ranking accuracy, and
        reward margins against the initial model when it was given by name) on `eval_dataset` (default: the
        Trainer's), flattened to `eval_SECTION/NAME` numbers as TRL prefixes evaluation metrics."""
        from prefkit.eval.evaluate import evaluate_model
        from prefkit.modeling.load import load_model, load_tokenizer

        data = eval_dataset if eval_dataset is not None else self.eval_dataset
        if data is None:
            data = self.args.eval_data
        if data is None:
            raise PrefkitError("evaluate: no eval_dataset (give one here or to the Trainer)")
        final = self._trained()
        model = _load_final(final).eval()
        # the initial model is the reference of the reward margins; a model object given was trained in place
        reference = load_model(self.args.model, dtype=self.args.dtype).eval() if self.model is None else None
        tokenizer = self.processing_class or load_tokenizer(str(final))
        results = evaluate_model(model, tokenizer, data=_prepared(data, tokenizer, self.args), reference=reference,
                                 **{"beta": self.args.loss_params.get("beta", 0.1), **options})
        return {f"eval_{section}/{key}": value for section, numbers in results["sections"].items()
                for key, value in numbers.items() if isinstance(value, (int, float))}

    def save_model(self, output_dir) -> Path:
        """Copy the final model (with its tokenizer and model card) to `output_dir`, atomically."""
        from prefkit.io import replace_dir

        final, target = self._trained(), Path(output_dir)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(final, tmp)
        replace_dir(tmp, target)
        return target

    def push_to_hub(self) -> str:
        """Upload the final model to `hub_model_id` (default: the output directory's name); returns the repo id."""
        from prefkit.train.model_card import push_to_hub

        return push_to_hub(self.args, self._trained())

    def _trained(self) -> Path:
        if self.final is None:
            raise PrefkitError("the Trainer has no trained model yet: call train() first")
        return self.final


def _values(args) -> dict:
    from prefkit.train.config import TrainConfig

    if args is None:
        return {}
    if isinstance(args, Mapping):
        return dict(args)
    if isinstance(args, TrainConfig):
        return dict(vars(args))
    raise PrefkitError(f"args: expected a prefkit TrainConfig or a dict of its keys (TRL's names too), got a "
                       f"{type(args).__name__}")


def _dataset(data, values: dict, key: str):
    """Record `data` in `values[key]`: a path or hub id by name; a Dataset (or a list of row dicts, made one) is
    returned to be passed to the engine as it is, with a name for messages and the model card."""
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)):
        values[key] = str(data)
        return None
    if isinstance(data, list):
        import datasets

        data = datasets.Dataset.from_list(data)
    values.setdefault(key, getattr(getattr(data, "info", None), "dataset_name", None) or "in-memory dataset")
    return data


def _unpaired(data) -> bool:
    columns = getattr(data, "column_names", None) or []
    return {"completion", "label"} <= set(columns) and "chosen" not in columns


def lora_options(peft_config) -> dict:
    """prefkit's `lora` mapping from a peft LoraConfig (or a dict of its arguments)."""
    from prefkit.modeling.load import LORA_ARGUMENTS

    given = peft_config if isinstance(peft_config, Mapping) else vars(peft_config)
    options = {key: given[name] for key, name in LORA_ARGUMENTS.items() if name in given}
    if isinstance(options.get("target_modules"), set):
        options["target_modules"] = sorted(options["target_modules"])
    return options


def _fresh_accelerator() -> None:
    """accelerate keeps one state per process and refuses a second mixed precision; a notebook that trains twice
    with different settings starts each run afresh (not under `accelerate launch`, whose state it must keep)."""
    if "WORLD_SIZE" in os.environ:
        return
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _load_final(final: Path):
    if (final / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(final))
    from prefkit.modeling.load import load_model

    return load_model(str(final))


def _prepared(data, tokenizer, config):
    from prefkit.data import prepare

    return prepare(data, tokenizer, split=config.eval_split, max_length=config.max_length,
                   truncation=config.truncation, list_pairs=config.list_pairs)
