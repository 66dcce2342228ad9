"""What the log-prob engine may assume about a model, found by asking the model itself, once per model.

The engine (`prefkit.modeling.logprobs`) takes two shortcuts around a causal LM's own forward: it runs the
decoder and then the output head only where a completion token is predicted, and it packs a batch
(`prefkit.modeling.packing`). Architectures differ in exactly the places those shortcuts skip: between the
decoder and the logits (Cohere multiplies by `logit_scale`, Granite divides by `logits_scaling`, Falcon-H1
multiplies by `lm_head_multiplier`, MiniCPM3 scales the hidden states, Gemma 2 soft-caps), and in what their
layers see (convolutions, Mamba and linear-attention layers run along the whole packed row, across the tree
mask). Rather than keep a list of names, `plan(model)` probes the model on a tiny input:

- the head: the decoder's last hidden state through the output embeddings is compared with the model's own
  `forward(...).logits`. The one scalar between them, whatever the architecture calls it, is measured and the
  result validated; when no scalar makes them equal, the engine runs the model's own forward with
  `logits_to_keep` instead (exact, but the head is no longer chunked).
- packing: the packed log-probs must equal the padded ones, and no completion's log-prob may depend on a token
  it must not see (a sibling, another prompt): its gradient with respect to those tokens' input embeddings must
  be exactly zero. Masked attention guarantees that; any layer that mixes tokens outside attention breaks it,
  however small its weights.

Plans are cached per model instance (never per class), keyed by what they depend on: the attention
implementation and the head's dtype, so the same model cast to another dtype is probed again.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prefkit.modeling.load import sharded
from prefkit.modeling.packing import ATTENTION, pack, packed_inputs, supports_packing

Tensor = torch.Tensor
RELATIVE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}  # half precisions: HALF_TOLERANCE
HALF_TOLERANCE = 2e-2
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Plan:
    """How to compute exact log-probs with one model."""

    decoder: nn.Module | None  # None: the model's own forward computes the logits (`forward_logits`)
    scale: float = 1.0  # the model multiplies the head's logits by this, before any soft-capping
    softcap: float | None = None
    packs: bool = False
    head_note: str = ""  # why the head path was refused, for logs and the architecture table
    packing_note: str = ""  # why packing was refused


def plan(model) -> Plan:
    """The cached `Plan` of `model`, probing it first if it is new or its attention or dtype changed. A model that
    FSDP2 shards is probed before it is sharded (prefkit.train.engine.PolicyLogps) and never again: the probe's
    backward pass inside FSDP's forward would reshard the weights, and FSDP's mixed precision casts them to the
    compute dtype for each forward, which changes the key but not the architecture the plan describes."""
    cached = _plans.get(model)
    if cached is not None and cached[0] != _key(model) and sharded(model):
        return cached[1]
    if cached is None or cached[0] != _key(model):
        with _inference(model):
            found = _probe(model)
        _plans[model] = cached = (_key(model), found)
    return cached[1]


def _key(model) -> tuple:
    attention = model.config._attn_implementation
    return ("sdpa" if attention == ATTENTION else attention, model.get_input_embeddings().weight.dtype)


@contextmanager
def _inference(model):
    """Eval mode (no dropout, no router noise, no recomputation) for the probe; each module's own mode after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode(False), torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _probe(model) -> Plan:
    embeddings = model.get_input_embeddings()
    vocab = min(embeddings.num_embeddings, 1000)
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()  # noqa: E731
    groups = [(ids(5), [ids(4), ids(3)]), (ids(3), [ids(2), ids(5)])]  # a longer later sibling sees more
    padded = {k: v.to(embeddings.weight.device) for k, v in pad_groups(groups).items()}
    try:
        decoder = find_decoder(model)
        head = dict(decoder=decoder, **_measure_head(model, decoder, padded))
    except Exception as error:  # any failure of the shortcut leaves the model's own forward, which is exact
        head = dict(decoder=None, head_note=_note(error))
    packing_note = _packing_note(model, groups, padded)
    return Plan(**head, packs=not packing_note, packing_note=packing_note)


def _note(error: Exception) -> str:
    return str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {str(error)[:200]}"


def find_decoder(model) -> nn.Module:
    """The module that maps input ids to the last hidden state: `get_decoder()` where that is a pretrained model
    other than the causal LM itself (Llama4ForCausalLM answers itself, ModernBERT's decoder its head), else the
    one pretrained-model child of the causal LM."""
    from transformers import PreTrainedModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the causal LM
    decoder = model.get_decoder()
    if isinstance(decoder, PreTrainedModel) and decoder is not base:
        return decoder
    children = [child for child in base.children() if isinstance(child, PreTrainedModel)]
    if len(children) != 1:
        raise ValueError(f"{type(base).__name__}: no single decoder module to run")
    return children[0]


def hidden_states(decoder: nn.Module, **inputs) -> Tensor:
    out = decoder(**inputs, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def forward_logits(model, keep: Tensor, **inputs) -> Tensor:
    """The model's own logits at sequence positions `keep`, [B, len(keep), V]; positions are selected by the
    model (`logits_to_keep`) where it can, so the other positions' logits are never made."""
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    return logits if logits.shape[1] == len(keep) else logits[:, keep]


def gathered_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log-softmax over the last dimension, in at least float32, gathered at `targets`."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def pad_groups(groups: list[tuple[list[int], list[list[int]]]]) -> dict[str, Tensor]:
    """Right-padded prompt + completion rows, group by group, completion by completion (the pad id is masked)."""
    from prefkit.data.examples import pad_sequences

    return pad_sequences([(prompt, completion) for prompt, completions in groups for completion in completions], 0)


def _tolerance(dtype: torch.dtype) -> float:
    return RELATIVE_TOLERANCE.get(dtype, HALF_TOLERANCE)


def _measure_head(model, decoder: nn.Module, padded: dict[str, Tensor]) -> dict:
    """The scale s (and the configured soft cap c) with logits = c·tanh(s·head(h)/c) that reproduce the model's
    own logits; a ValueError when none does (a bias added after scaling, a non-linear head, ...)."""
    inputs = dict(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"])
    real = padded["attention_mask"].bool()
    reference = model(**inputs, use_cache=False).logits[real].double()
    head = model.get_output_embeddings()
    raw = F.linear(hidden_states(decoder, **inputs)[real], head.weight, head.bias).double()
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    target = softcap * torch.atanh((reference / softcap).clamp(-1 + 1e-12, 1 - 1e-12)) if softcap else reference
    scale = float((raw * target).sum() / (raw * raw).sum())  # least squares: the scalar, whatever it is called
    tolerance = _tolerance(head.weight.dtype)
    if abs(scale - 1) <= tolerance:  # no scaling: the measurement's rounding is not a scale
        scale = 1.0
    predicted = raw * scale
    if softcap:
        predicted = softcap * torch.tanh(predicted / softcap)
    error = float((predicted - reference).abs().max() / reference.abs().max().clamp(min=1))
    if not error <= tolerance:
        raise ValueError(f"the output head, scaled, differs from the model's logits by {error:.2g} (relative)")
    return dict(scale=scale, softcap=softcap)


def _packing_note(model, groups: list, padded: dict[str, Tensor]) -> str:
    """Why the packed layout is not exact for `model`: "" when it is."""
    packed = pack(groups, group_major=True).to(padded["input_ids"].device)
    if not supports_packing(model, packed):
        return f"attention ({model.config._attn_implementation}) does not run through transformers' sdpa interface"
    try:
        note = _packing_differs(model, groups, packed, padded)
    except Exception as error:
        note = _note(error)
    if note:  # keep the model's own attention setting where packing will never be used
        model.config._attn_implementation = "sdpa"
    return note


def _packing_differs(model, groups: list, packed, padded: dict[str, Tensor]) -> str:
    shifted = padded["input_ids"][:, 1:]
    keep = padded["completion_mask"][:, 1:].bool()
    expected = gathered_logps(model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                                    use_cache=False).logits[:, :-1][keep], shifted[keep])
    expected = expected.new_zeros(len(keep)).index_add(0, keep.nonzero()[:, 0], expected)
    with torch.enable_grad(), _watching(model.get_input_embeddings()) as watched:
        per_token = gathered_logps(forward_logits(model, packed.predictors, **packed_inputs(packed))[0],
                                   packed.targets)
        if not watched:
            return "the input embeddings are never run, so the probe cannot see what each token depends on"
        logps = per_token.new_zeros(len(packed.lengths)).index_add(0, packed.rows, per_token)
        error = float((logps.detach() - expected).abs().max() / expected.abs().max().clamp(min=1))
        if not error <= _tolerance(model.get_input_embeddings().weight.dtype):
            return f"packed log-probs differ from the padded forward's by {error:.2g} (relative)"
        for row, visible in enumerate(_visible_positions(groups)):
            grads = torch.autograd.grad(logps[row], watched, retain_graph=True, allow_unused=True)
            hidden_from = torch.ones(packed.input_ids.shape[1], dtype=torch.bool, device=logps.device)
            hidden_from[visible] = False
            if any(grad is not None and grad.shape[:2] == (1, len(hidden_from)) and grad[0, hidden_from].count_nonzero()
                   for grad in grads):
                return "a completion depends on tokens outside its prompt and itself: some layer mixes tokens " \
                       "outside attention (convolution, state-space or linear attention)"
    return ""


def _visible_positions(groups: list) -> list[list[int]]:
    """For each completion (group-major), the packed positions it may depend on: its prompt and itself."""
    visible, offset = [], 0
    for prompt, completions in groups:
        prompt_positions = list(range(offset, offset + len(prompt)))
        offset += len(prompt)
        for completion in completions:
            visible.append(prompt_positions + list(range(offset, offset + len(completion))))
            offset += len(completion)
    return visible


@contextmanager
def _watching(embeddings: nn.Module):
    """Makes each output of `embeddings` a leaf that requires grad and collects it: what each log-prob depends on
    is then its gradient with respect to these leaves, whether or not the weights are trainable."""
    watched: list[Tensor] = []

    def hook(module, args, output):
        leaf = output.detach().requires_grad_()
        watched.append(leaf)
        return leaf

    handle = embeddings.register_forward_hook(hook)
    try:
        yield watched
    finally:
        handle.remove()
