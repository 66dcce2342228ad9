"""Loading a causal LM and its tokenizer from a local path or a hub id, optionally with a LoRA adapter.

Nothing reaches the network unless the user names a hub id; `trust_remote_code` stays off unless asked.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from prefkit.io import quiet_transformers
from prefkit.errors import PrefkitError

# `auto`: the dtype the checkpoint was saved in (transformers' dtype="auto", TRL's model_init_kwargs default)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def _check_local(name_or_path: str) -> None:
    """A path that is clearly local but missing gets a plain message, not the hub's repo-id rules."""
    if (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1) and not os.path.exists(
            os.path.expanduser(name_or_path)):
        raise PrefkitError(f"model path not found: {name_or_path}")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, chat_template: str | None = None):
    """The tokenizer; `chat_template` (a file path or Jinja text) replaces its chat template."""
    from transformers import AutoTokenizer

    _check_local(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PrefkitError(f"could not load a tokenizer from '{name_or_path}': {one_line(error)}") from None
    except Exception as error:  # a damaged tokenizer.json fails with whatever the parser hit (KeyError, ...)
        raise PrefkitError(f"could not load a tokenizer from '{name_or_path}': {type(error).__name__}: "
                           f"{one_line(error)} (is tokenizer.json damaged?)") from error
    if tokenizer.pad_token is None:  # right padding is masked out, so any id will do; EOS is the convention
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        file = Path(chat_template)
        tokenizer.chat_template = file.read_text(encoding="utf-8") if "{" not in chat_template else chat_template
    return tokenizer


def load_model(name_or_path, *, dtype: str = "float32", trust_remote_code: bool = False,
               lora: dict[str, Any] | None = None, load_in_4bit: bool = False, gradient_checkpointing: bool = False,
               fuse: bool = True, cpu_matmul: str = "auto"):
    """An `AutoModelForCausalLM`, with a fresh LoRA adapter when `lora` is given (QLoRA with `load_in_4bit`) and,
    with `fuse`, the leaner norm and MLP of `prefkit.modeling.fused` wherever they compute the same values;
    `cpu_matmul` chooses the library of float32 products on the CPU (prefkit.modeling.matmul).
    `name_or_path` may also be a model object already loaded (prefkit.Trainer): it is used as it is (its dtype
    too), and only the steps after loading apply."""
    if dtype not in DTYPES:
        raise PrefkitError(f"config: 'dtype' must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if isinstance(name_or_path, (str, os.PathLike)):
        model = _load(str(name_or_path), dtype, trust_remote_code, load_in_4bit)
    else:
        model = name_or_path
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model = add_lora(model, lora, quantized=load_in_4bit)
    if fuse:  # after LoRA: adapted projections are no longer plain nn.Linear, so their MLPs keep peft's forward
        from prefkit.modeling.fused import fuse as fuse_modules

        fuse_modules(model)
    from prefkit.modeling.matmul import route_linears, set_cpu_matmul

    set_cpu_matmul(cpu_matmul)
    route_linears(model)
    return model


def _load(name_or_path: str, dtype: str, trust_remote_code: bool, load_in_4bit: bool):
    from transformers import AutoModelForCausalLM

    _check_local(name_or_path)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=_compute_dtype(dtype))
    return from_pretrained(AutoModelForCausalLM, name_or_path, "a causal LM", **kwargs)


def _compute_dtype(dtype: str):
    """4-bit layers compute in the weights' dtype; with `auto`, in bfloat16 (QLoRA's choice)."""
    return torch.bfloat16 if dtype == "auto" else DTYPES[dtype]


def from_pretrained(auto_class, name_or_path: str, what: str, **kwargs):
    """`auto_class.from_pretrained(name_or_path, **kwargs)`; a failure is one line naming the model, or the
    weights file when that is what is wrong (damaged, or a pickle that holds code)."""
    check_weights(name_or_path)
    try:
        with quiet_transformers():  # no "Loading weights" bar at every self-play iteration
            return auto_class.from_pretrained(name_or_path, **kwargs)
    except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refused a pickle that holds code
        raise PrefkitError(f"{_weight_files(name_or_path, ('.bin', '.pt', '.pth'))}: holds more than tensors "
                           f"({_refusal(error)}); prefkit does not unpickle it, since that could run code. Use "
                           "safetensors weights from a source you trust") from error
    except (OSError, ValueError, ImportError) as error:
        raise PrefkitError(f"could not load {what} from '{name_or_path}': {one_line(error)}") from None
    except Exception as error:  # a damaged weights file: safetensors, torch and transformers raise many types
        raise PrefkitError(f"could not load {what} from '{name_or_path}': {type(error).__name__}: "
                           f"{one_line(error)}") from error


def check_weights(name_or_path: str) -> None:
    """A local model folder's safetensors files, checked by their headers only (cheap: nothing is read into
    memory), so that a damaged file is one error naming it, before anything heavy loads."""
    from safetensors import safe_open

    folder = Path(os.path.expanduser(name_or_path))
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:  # SafetensorError, or OSError for an unreadable file
            raise PrefkitError(f"{file}: not a readable safetensors file ({one_line(error)}); the file is "
                               "damaged or incomplete (download or save it again)") from error


def one_line(error: BaseException) -> str:
    """The first line of an error's message: the CLI prints one line, and some libraries write paragraphs."""
    return next(iter(_lines(error)), type(error).__name__)


def _lines(error: BaseException) -> list[str]:
    return [line.strip() for line in str(error).splitlines() if line.strip()]


def _refusal(error: BaseException) -> str:
    """torch's reason for refusing a pickle (the line naming the blocked global), without its advice to load
    the file with weights_only=False."""
    return next((line for line in _lines(error) if "GLOBAL" in line or "Unsupported" in line), one_line(error))


def _weight_files(name_or_path: str, suffixes: tuple[str, ...]) -> str:
    folder = Path(os.path.expanduser(name_or_path))
    files = sorted(str(f) for f in folder.glob("*") if f.suffix in suffixes) if folder.is_dir() else []
    return ", ".join(files) or name_or_path


# prefkit's `lora` keys -> peft's LoraConfig arguments, and prefkit's defaults for them
LORA_ARGUMENTS = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "target_modules": "target_modules",
                  "modules_to_save": "modules_to_save", "use_rslora": "use_rslora", "use_dora": "use_dora"}
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def lora_config(options: dict[str, Any], task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig from prefkit's `lora` mapping (target_modules: null lets peft pick per architecture)."""
    from peft import LoraConfig

    unknown = set(options) - set(LORA_ARGUMENTS)
    if unknown:
        raise PrefkitError(f"config: lora has unknown key '{sorted(unknown)[0]}' (keys: {', '.join(LORA_ARGUMENTS)})")
    values = {**LORA_DEFAULTS, **options}
    return LoraConfig(task_type=task_type, **{LORA_ARGUMENTS[k]: v for k, v in values.items()})


def add_lora(model, options: dict[str, Any], quantized: bool = False, task_type: str = "CAUSAL_LM"):
    """A fresh LoRA adapter on `model`; task_type SEQ_CLS (a judge) also trains the classification head."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = lora_config(options, task_type)
    if quantized:
        model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, config)


def sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP2 shards `model`'s weights (torch's fully_shard, what accelerate's FSDP2 applies on GPUs)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())
