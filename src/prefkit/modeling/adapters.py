"""One base model, several LoRA adapter states: what self-play with LoRA keeps in memory instead of model copies.

A LoRA policy is a peft model whose trainable adapter is named `default`. Other states of the same policy live
beside it as further named adapters on the same base layers (peft's multi-adapter API: `add_adapter`,
`load_adapter`, `set_adapter`), or as the base itself with the adapter switched off (`disable_adapter`): a state
costs the adapter's weights, never a second base model. `use_state` runs code under one state and restores the
trainable one; `copy_adapter` copies adapter weights from one slot to another; `merged_weights` gives the full
weights of the merged model, tensor by tensor, without touching the model (for an engine that only takes full
weights, vLLM); `load_saved_adapter` puts a saved adapter back on its base for a resumed run.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch

from prefkit.modeling.matmul import route_linears

TRAINED = "default"  # peft's name for the adapter get_peft_model creates: the one being trained


def is_adapter(model) -> bool:
    """Whether `model` is a peft model (its weights a base plus adapters)."""
    return hasattr(model, "peft_config")


@contextlib.contextmanager
def use_state(model, adapter: str | None):
    """`model` computing under the adapter named `adapter` (frozen while active), or under its base alone when
    `adapter` is None; the trained adapter is active (and trainable) again afterwards."""
    if adapter is None:
        with model.disable_adapter():
            yield model
        return
    model.set_adapter(adapter, inference_mode=True)
    try:
        yield model
    finally:
        model.set_adapter(TRAINED)  # trainable again: the optimizer of the next fit takes what requires grad


@torch.no_grad()
def copy_adapter(model, source: str, target: str) -> None:
    """Adapter `target` becomes a copy of adapter `source` (created, frozen, the first time): the weights are
    copied in place, so the copy computes bit for bit what the source computed."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if target not in model.peft_config:
        with torch.random.fork_rng(devices=[]):  # the new adapter's random init is overwritten: leave the RNG alone
            model.add_adapter(target, copy.deepcopy(model.peft_config[source]))
        model.set_adapter(TRAINED)  # peft leaves the active adapter alone; this also freezes every other one
        route_linears(model)  # the new slot's projections compute as the source's do (prefkit.modeling.matmul)
    weights = get_peft_model_state_dict(model, adapter_name=source)
    result = set_peft_model_state_dict(model, weights, adapter_name=target)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(f"adapter {target!r}: weights of {source!r} not taken: {result.unexpected_keys[:3]}")


def load_saved_adapter(model, path: str, adapter: str = TRAINED, trainable: bool = True):
    """The adapter saved in `path` on `model`: a base model becomes a peft model whose `adapter` is trainable;
    on a peft model the adapter is added beside the others (frozen unless `trainable`)."""
    from peft import PeftModel

    if not is_adapter(model):
        model = PeftModel.from_pretrained(model, path, adapter_name=adapter, is_trainable=trainable)
    else:
        model.load_adapter(path, adapter_name=adapter, is_trainable=trainable)
        model.set_adapter(TRAINED)
    route_linears(model)  # its projections compute as a fresh adapter's do (prefkit.modeling.matmul)
    return model


def drop_adapter(model, adapter: str) -> None:
    """Remove adapter `adapter` and its weights, if there is one."""
    if adapter in model.peft_config:
        model.delete_adapter(adapter)


@torch.no_grad()
def merged_weights(model, adapter: str = TRAINED) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the full model with `adapter` merged into its base, named as the base model names
    them: what peft's `merge_and_unload` would leave, computed one tensor at a time, out of place, so the model
    is not changed (merging then unmerging in place would not restore the base weights bit for bit) and the
    merged copy of only one weight exists at a time."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    base = model.get_base_model()
    layers = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    saved = {name for name, module in base.named_modules() if isinstance(module, ModulesToSaveWrapper)}
    for key, tensor in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner.endswith(".base_layer") and owner.removesuffix(".base_layer") in layers:
            name = owner.removesuffix(".base_layer")
            yield f"{name}.{leaf}", _merged(layers[name], adapter, tensor) if leaf == "weight" else tensor
        elif any(key.startswith(f"{name}.") for name in layers):
            continue  # the adapters' own weights (lora_A, lora_B, DoRA's magnitudes)
        elif any(key.startswith(f"{name}.") for name in saved):
            name = next(name for name in saved if key.startswith(f"{name}."))
            prefix = f"{name}.modules_to_save.{adapter}."
            if key.startswith(prefix):  # a module trained whole (modules_to_save): the adapter's copy
                yield f"{name}.{key.removeprefix(prefix)}", tensor
        else:
            yield key, tensor


def _merged(layer, adapter: str, weight: torch.Tensor) -> torch.Tensor:
    """`layer`'s base weight with `adapter` merged, as peft's merge computes it, into a new tensor."""
    if adapter not in layer.lora_A and adapter not in getattr(layer, "lora_embedding_A", {}):
        return weight
    if adapter in layer.lora_variant:  # DoRA and the other variants merge their own way
        return layer.lora_variant[adapter].merge_safe(layer, adapter, weight.clone())
    return (weight + layer.get_delta_weight(adapter)).to(weight.dtype)  # as peft's in-place `weight += delta`


def full_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of `model` as a full model: its own state dict, or with LoRA the trained adapter merged."""
    if is_adapter(model):
        return merged_weights(model)
    return ((name, tensor.detach()) for name, tensor in model.state_dict().items())
