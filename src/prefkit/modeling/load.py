"""Loading a causal LM and its tokenizer from a local path or a hub id, optionally with a LoRA adapter.

Nothing reaches the network unless the user names a hub id; `trust_remote_code` stays off unless asked.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from prefkit.errors import PrefkitError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_local(name_or_path: str) -> None:
    """A path that is clearly local but missing gets a plain message, not the hub's repo-id rules."""
    if (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1) and not os.path.exists(
            os.path.expanduser(name_or_path)):
        raise PrefkitError(f"model path not found: {name_or_path}")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    _check_local(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PrefkitError(f"could not load a tokenizer from '{name_or_path}': {error}") from None
    if tokenizer.pad_token is None:  # right padding is masked out, so any id will do; EOS is the convention
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, *, dtype: str = "float32", trust_remote_code: bool = False,
               lora: dict[str, Any] | None = None, load_in_4bit: bool = False, gradient_checkpointing: bool = False,
               fuse: bool = True):
    """An `AutoModelForCausalLM`, with a fresh LoRA adapter when `lora` is given (QLoRA with `load_in_4bit`) and,
    with `fuse`, the leaner norm and MLP of `prefkit.modeling.fused` wherever they compute the same values."""
    from transformers import AutoModelForCausalLM

    _check_local(name_or_path)
    if dtype not in DTYPES:
        raise PrefkitError(f"config: 'dtype' must be one of {', '.join(DTYPES)} (got {dtype!r})")
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=DTYPES[dtype])
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise PrefkitError(f"could not load a causal LM from '{name_or_path}': {error}") from None
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model = add_lora(model, lora, quantized=load_in_4bit)
    if fuse:  # after LoRA: adapted projections are no longer plain nn.Linear, so their MLPs keep peft's forward
        from prefkit.modeling.fused import fuse as fuse_modules

        fuse_modules(model)
    return model


def add_lora(model, options: dict[str, Any], quantized: bool = False):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    allowed = {"r", "alpha", "dropout", "target_modules"}
    unknown = set(options) - allowed
    if unknown:
        raise PrefkitError(f"config: lora has unknown key '{sorted(unknown)[0]}' (keys: {', '.join(sorted(allowed))})")
    if quantized:
        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(r=int(options.get("r", 16)), lora_alpha=float(options.get("alpha", 32)),
                        lora_dropout=float(options.get("dropout", 0.0)),
                        target_modules=options.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    return get_peft_model(model, config)
