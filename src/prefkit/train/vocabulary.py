"""TRL's, transformers' and peft's argument names, read as prefkit's config keys.

A TRL recipe (DPOConfig / KTOConfig, TrainingArguments, ModelConfig, ScriptArguments) runs with `prefkit train
--config` as it is: each of its names that means what a prefkit key means is translated to that key here, and
nowhere else, so the rest of prefkit knows one name per setting. A name prefkit knows but cannot honour with the
value given is a problem that says why; an unknown name gets the closest name of the whole vocabulary (prefkit's
keys and these). Every problem is collected, so one error lists them all, before anything loads. The table in
docs/training.md ("Coming from TRL") lists these names; tests/test_vocabulary.py checks it against this module.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import MISSING, fields
from typing import Any, Callable

# name -> prefkit key, where the value means the same thing.
RENAMES = {
    "model_name_or_path": "model",                  # ModelConfig
    "torch_dtype": "dtype",                         # transformers' older name of dtype
    "dataset_name": "data",                         # ScriptArguments
    "dataset_train_split": "split",
    "dataset_test_split": "eval_split",
    "per_device_train_batch_size": "batch_size",    # TrainingArguments
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "lr_scheduler_type": "schedule",
    "lr_scheduler_kwargs": "schedule_kwargs",
    "save_total_limit": "keep_checkpoints",
    "overwrite_output_dir": "overwrite",
    "loss_type": "loss",                            # DPOConfig / KTOConfig (TRL's loss names are prefkit aliases)
    "truncation_mode": "truncation",
    "padding_free": "packing",
    "ref_model_sync_steps": "ref_sync_steps",
    "ref_model_mixup_alpha": "ref_mixup_alpha",
}

# DPOConfig / KTOConfig hyper-parameters of the loss -> loss_params.NAME, with TRL's defaults. At its default, a
# parameter that no chosen loss takes is dropped (a TRL recipe often spells out label_smoothing: 0.0).
LOSS_PARAMS = {"beta": 0.1, "label_smoothing": 0.0, "desirable_weight": 1.0, "undesirable_weight": 1.0,
               "discopop_tau": 0.05}

# ModelConfig's peft options -> lora.NAME, with TRL's defaults; as in TRL they apply only with use_peft: true
# (or when a prefkit `lora:` mapping is given).
LORA = {"lora_r": ("r", 16), "lora_alpha": ("alpha", 32), "lora_dropout": ("dropout", 0.05),
        "lora_target_modules": ("target_modules", None), "lora_modules_to_save": ("modules_to_save", None),
        "use_rslora": ("use_rslora", False), "use_dora": ("use_dora", False)}

# Names accepted only with the values that describe what prefkit does anyway, and why.
SAME = {
    "optim": (("adamw_torch", "adamw_torch_fused"), "prefkit's optimizer is torch's AdamW"),
    "adam_beta1": ((0.9,), "prefkit's AdamW uses betas (0.9, 0.999)"),
    "adam_beta2": ((0.999,), "prefkit's AdamW uses betas (0.9, 0.999)"),
    "adam_epsilon": ((1e-8,), "prefkit's AdamW uses eps 1e-8"),
    "logging_strategy": (("steps",), "prefkit logs every logging_steps"),
    "eval_on_start": ((False,), "prefkit evaluates every eval_steps and at the end"),
    "lora_task_type": (("CAUSAL_LM",), "prefkit trains causal LMs"),
    "use_liger_kernel": ((False,), "prefkit has its own chunked output head (logprob_chunk_size)"),
    "load_in_8bit": ((False,), "use load_in_4bit (QLoRA)"),
    "model_revision": (("main", None), "pin a revision by downloading it and passing its path as model"),
    "dataset_config": ((None,), "save the configuration you need with datasets' save_to_disk and pass its path"),
    "dataset_streaming": ((False,), "prefkit validates every row before training"),
    "attn_implementation": ((None, "sdpa"), "prefkit chooses the attention (packing: sdpa with its mask)"),
    "max_prompt_length": ((None,), "prefkit truncates prompt + completion to max_length (truncation)"),
    "max_completion_length": ((None,), "prefkit truncates prompt + completion to max_length (truncation)"),
    "rpo_alpha": ((None,), "write loss: [dpo, sft] with loss_weights: [1.0, ALPHA]"),
    "save_safetensors": ((True,), "prefkit always saves safetensors"),
    "hub_token": ((None,), "a token does not belong in a config file: set HF_TOKEN or run `hf auth login`"),
    "hub_strategy": (("end",), "prefkit pushes the final model at the end"),
    "use_logits_to_keep": ((False,), "prefkit's output head runs only at completion positions anyway"),
    "generate_during_eval": ((False,), "use `prefkit eval` on the saved model"),
    "gradient_checkpointing_kwargs": ((None, {"use_reentrant": False}), "prefkit checkpoints with "
                                      "use_reentrant: false"),
    "tf32": ((None, False), "set torch.backends.cuda.matmul.allow_tf32 in your own launcher"),
}

# Names that change nothing prefkit computes, and why they may be given.
IGNORED = {
    "dataset_num_proc": "data preparation runs in one process",
    "dataloader_num_workers": "batches are collated in the training process",
    "remove_unused_columns": "prefkit reads only the columns of its data formats",
    "do_train": "a flag of transformers' example scripts",
    "do_eval": "a flag of transformers' example scripts",
    "log_level": "prefkit's own output",
}


class Refused(Exception):
    """A known name with a value prefkit cannot honour."""


def _switch(updates: dict) -> Callable[[Any], dict]:
    """A boolean name that turns on prefkit settings when true; false leaves prefkit's defaults."""

    def apply(value):
        if not isinstance(value, bool):
            raise Refused("must be true or false")
        return dict(updates) if value else {}

    return apply


def _choice(table: dict) -> Callable[[Any], dict]:
    """A name whose accepted values each set prefkit keys (markers starting with '@' are resolved later)."""

    def apply(value):
        if value not in table:
            raise Refused(f"must be one of {', '.join(map(str, table))} in prefkit")
        return dict(table[value])

    return apply


def _disable_tqdm(value) -> dict:
    if not isinstance(value, bool):
        raise Refused("must be true or false")
    return {"progress": not value}


# Names whose value sets one or more prefkit keys.
TRANSFORMS: dict[str, Callable[[Any], dict]] = {
    "bf16": _switch({"mixed_precision": "bf16"}),
    "fp16": _switch({"mixed_precision": "fp16"}),
    "use_peft": _switch({"@peft": True}),
    "precompute_ref_log_probs": _switch({"reference": "precomputed"}),
    "sync_ref_model": _switch({"reference": "copy", "@sync": True}),
    "disable_tqdm": _disable_tqdm,
    "eval_strategy": _choice({"no": {"@eval": False}, "steps": {"@eval": True}}),
    "save_strategy": _choice({"no": {"@save": False}, "steps": {}}),
}
TRANSFORMS["evaluation_strategy"] = TRANSFORMS["eval_strategy"]  # transformers' name before 4.46


def report_to(value):
    """transformers' forms: one name, "none", "all" (every installed tracker), or a list."""
    from prefkit.train.tracking import BACKENDS

    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        return value  # validation names the type
    if "none" in names:
        return []
    if "all" in names:
        return [b for b in BACKENDS if b == "jsonl" or importlib.util.find_spec(b) is not None]
    return names


# prefkit keys whose value may also be written as transformers writes it.
NORMALIZE = {"report_to": report_to, "max_steps": lambda value: None if value == -1 else value}


def vocabulary(names: set[str]) -> set[str]:
    """Every name a config may use: prefkit's keys and those translated here."""
    return names | set(RENAMES) | set(LOSS_PARAMS) | set(LORA) | set(SAME) | set(IGNORED) | set(TRANSFORMS)


def translate(given: list[tuple[Any, Any, str]], kind: type) -> tuple[dict[str, Any], list[str]]:
    """(values of `kind`'s fields, problems) from (name, value, where) in increasing priority: a later source
    overrides an earlier one; two names for one setting in the same source must agree."""
    names = {f.name for f in fields(kind)}
    values: dict[str, Any] = {}
    problems: list[str] = []
    origin: dict[str, tuple[str, str, Any]] = {}  # target -> (where, name, value) of its last setting
    for key, value, where in given:
        key = str(key)[:80]
        try:
            updates = _negated(key, value, names)
        except Refused as refusal:
            problems.append(f"{where}: '{key}' {refusal}")
            continue
        except KeyError:
            problems.append(f"{where}: unknown key '{key}'{_hint(key, names)}")
            continue
        for target, new in updates.items():
            before = origin.get(target)
            if before and before[0] == where and before[1] != key and before[2] != new:
                problems.append(f"{where}: '{before[1]}' and '{key}' both set {target.lstrip('@')} "
                                f"({before[2]!r} and {new!r})")
            origin[target] = (where, key, new)
            _put(values, target, new)
    problems += _derive(values, names, kind)
    return values, problems


def _negated(key: str, value, names: set[str]) -> dict[str, Any]:
    """transformers' command-line form `--no_NAME` (NAME: false) for a boolean name, else `_updates`."""
    try:
        return _updates(key, value, names)
    except KeyError:
        if key.startswith("no_") and value is True:
            return _updates(key[3:], False, names)
        raise


def _updates(key: str, value, names: set[str]) -> dict[str, Any]:
    """The prefkit keys (dotted for one entry of a mapping) that `key: value` sets; raises KeyError for an unknown
    name, Refused for a value prefkit cannot honour."""
    head = key.partition(".")[0]
    if head in names:
        return {key: NORMALIZE.get(key, lambda v: v)(value)}
    if key in RENAMES:
        target = RENAMES[key]
        if target not in names:
            raise Refused(f"(prefkit's '{target}') is not a setting of this command")
        return {target: NORMALIZE.get(target, lambda v: v)(value)}
    if key in LOSS_PARAMS or key in LORA:
        target = f"loss_params.{key}" if key in LOSS_PARAMS else f"lora.{LORA[key][0]}"
        if target.partition(".")[0] not in names:
            raise Refused(f"(prefkit's '{target}') is not a setting of this command")
        return {target: value, f"@trl.{key}": value} if key in LOSS_PARAMS else {f"@lora.{LORA[key][0]}": value}
    if key in SAME:
        allowed, why = SAME[key]
        if not any(value == a and type(value) is type(a) or value is a for a in allowed):
            shown = " or ".join(repr(a) for a in allowed)
            raise Refused(f"can only be {shown} in prefkit (got {value!r}): {why}")
        return {}
    if key in IGNORED:
        return {}
    if key in TRANSFORMS:
        updates = TRANSFORMS[key](value)
        unknown = [t for t in updates if not t.startswith("@") and t not in names]
        if unknown:
            raise Refused(f"(prefkit's '{unknown[0]}') is not a setting of this command")
        return updates
    raise KeyError(key)


def _put(values: dict, target: str, value) -> None:
    """Set `target` ("key" or "key.entry"); a mapping given whole is merged into the entries set so far."""
    head, _, entry = target.partition(".")
    before = values.get(head)
    if entry:
        values[head] = {**(before if isinstance(before, dict) else {}), entry: value}
    elif isinstance(before, dict) and isinstance(value, dict):
        values[head] = {**before, **value}
    else:
        values[head] = value


def _hint(key: str, names: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(vocabulary(names)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _default(kind: type, name: str):
    field = next(f for f in fields(kind) if f.name == name)
    return field.default if field.default is not MISSING else field.default_factory()


# marker -> the prefkit key it sets, and the TRL names that set it
MARKERS = {"@eval": "eval_steps", "@save": "save_steps", "@sync": "ref_sync_steps", "@peft": "lora"}
MARKER_NAMES = {"@eval": "eval_strategy", "@save": "save_strategy", "@sync": "sync_ref_model", "@peft": "use_peft"}


def _derive(values: dict, names: set[str], kind: type) -> list[str]:
    """Resolve the markers: settings TRL derives from others (LoRA from use_peft, the evaluation data from the
    training data, the reference sync interval); drop TRL loss defaults that no chosen loss takes."""
    problems: list[str] = []
    for marker, needed in MARKERS.items():  # a derived setting this command does not have
        if marker in values and needed not in names:
            values.pop(marker)
            problems.append(f"'{MARKER_NAMES[marker]}' (prefkit's '{needed}') is not a setting of this command")
    peft, lora = values.pop("@peft", None), values.pop("@lora", None)
    if (lora is not None or peft) and (peft or isinstance(values.get("lora"), dict)):
        defaults = {entry: default for entry, default in LORA.values()} if peft else {}
        values["lora"] = {**defaults, **(values.get("lora") or {}), **(lora or {})}
    if values.pop("@save", True) is False:  # as in transformers, "no" wins over save_steps
        values["save_steps"] = None
    evaluate = values.pop("@eval", None)
    if evaluate is False:
        values["eval_steps"] = None
    if evaluate:  # TRL: evaluate on the data's test split every eval_steps (else logging_steps)
        values.setdefault("eval_steps", values.get("logging_steps", _default(kind, "logging_steps")))
        if values.get("eval_data") is None:
            values["eval_data"] = values.get("data")
            values.setdefault("eval_split", "test")
    if values.pop("@sync", None):
        values.setdefault("ref_sync_steps", 512)  # TRL's ref_model_sync_steps default
    trl = values.pop("@trl", {})
    taken = _loss_parameters(values.get("loss", _default(kind, "loss"))) if trl else None
    for key, value in trl.items():
        if taken is not None and key not in taken and value == LOSS_PARAMS[key]:
            values["loss_params"].pop(key, None)
    return problems


def _loss_parameters(loss) -> set[str] | None:
    """The hyper-parameters the named loss(es) take; None while a name is unknown (validation reports it)."""
    from prefkit import losses
    from prefkit.errors import PrefkitError

    try:
        specs = [losses.get(n) for n in ([loss] if isinstance(loss, str) else list(loss))]
    except (PrefkitError, TypeError):
        return None
    return {p for s in specs for p in s.defaults}
