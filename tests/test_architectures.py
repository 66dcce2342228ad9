"""Every decoder the installed transformers can build with `AutoModelForCausalLM`, tiny and in float64:
`prefkit.modeling.score` equals the model's own log-probs, packed and padded, with the same gradients, and two
DPO steps train it. Architectures that cannot be built tiny are listed in NOT_BUILDABLE with the reason.

`python tests/test_architectures.py` prints the table of docs/training.md ("Architectures") from the same checks.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import pytest
import torch

from prefkit.modeling import score
from prefkit.modeling.fused import fuse
from prefkit.modeling.probe import plan

VOCAB = 128
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256, moe_intermediate_size=32,
             shared_expert_intermediate_size=32, num_experts=4, num_local_experts=4, n_routed_experts=4,
             num_experts_per_tok=2, num_experts_per_token=2, n_group=1, topk_group=1, shared_intermediate_size=32,
             moe_shared_expert_intermediate_size=32, router_hidden_size=32, rotary_dim=8,
             kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16,
             first_k_dense_replace=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             # state-space and linear-attention layers: expand x hidden = heads x head size
             mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_chunk_size=16, mamba_d_ssm=128,
             mamba_num_heads=8, mamba_head_dim=16, ssm_state_size=16, state_size=16, num_heads=8, n_groups=1,
             chunk_size=16, time_step_rank=8, linear_key_head_dim=16, linear_value_head_dim=16,
             linear_num_key_heads=2, linear_num_value_heads=4, linear_head_dim=16, linear_num_heads=4,
             # the decoder halves of encoder-decoder families, under their own names
             d_model=64, d_ff=128, dff=128, decoder_layers=2, encoder_layers=2, decoder_attention_heads=4,
             encoder_attention_heads=4, decoder_ffn_dim=128, encoder_ffn_dim=128, num_decoder_layers=2,
             num_encoder_layers=2, num_decoder_attention_heads=4, num_encoder_attention_heads=4,
             # output scalings away from their defaults of 1 (or none), so that a head that ignores one fails
             logit_scale=0.25, logits_scaling=4.0, lm_head_multiplier=0.5, dim_model_base=16,
             final_logit_softcapping=2.0)
# per architecture, on top of SMALL: hybrids whose default config has one layer kind only get every kind
OVERRIDES: dict[str, dict] = {
    "lfm2": dict(layer_types=["conv", "full_attention"], full_attn_idxs=[1]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], full_attn_idxs=[1], num_dense_layers=1),
    "granitemoehybrid": dict(layer_types=["mamba", "attention"]),
    # multi-head latent attention: as many key-value heads as query heads
    **{name: dict(num_key_value_heads=4) for name in ("axk1", "axk2", "bailing_hybrid", "deepseek_v2", "deepseek_v3",
                                                      "deepseek_v32", "glm4_moe_lite", "glm_moe_dsa", "longcat_flash",
                                                      "minicpm3", "sarvam_mla", "youtu")},
}
MAX_PARAMETERS = 2_000_000  # a tiny model; a default config that stays large is a missing override
WRAPPER = "a multimodal wrapper (vision / audio towers); its text decoder is swept"
LARGE = "stays large with the small sizes (sub-configs or embeddings under names of its own)"
NOT_BUILDABLE: dict[str, str] = {  # what the generic tiny config cannot build, or no batched path can make exact
    **{name: WRAPPER + f" as {text}" for name, text in [
        ("gemma3", "gemma3_text"), ("llama4", "llama4_text"), ("qwen3_5", "qwen3_5_text"),
        ("qwen3_5_moe", "qwen3_5_moe_text")]},
    **{name: WRAPPER + " where one builds" for name in (
        "dots3_note", "emu3", "fuyu", "gemma4", "gemma4_unified", "gemma4_unified_assistant", "git", "got_ocr2",
        "mllama", "moss_transcribe_diarize", "phi4_multimodal", "qwen4_exp")},
    "gemma3n": WRAPPER + " where one builds (needs timm, not a dependency)",
    **{name: LARGE for name in ("blt", "cpmant", "inkling2_loop_text", "inkling2_text", "longcat_flash",
                                "roc_bert")},
    **{name: "per-layer configs (config.per_layer_config) that the generic sizes cannot reach"
       for name in ("dots3_note_text", "gemma4_text", "gemma4_unified_text")},
    "gemma4_assistant": "its config validation needs hidden_size_per_layer_input from the full model",
    "gemma3n_text": "two layers cannot hold both its cache-producing and cache-sharing layer types",
    "cohere_compass_text": "its default layer types name no full-attention layer, which its rotary setup needs",
    "dbrx": "its nested attention config loses rope_theta when built from keyword sizes",
    "dots1": "its config derives a size from one it leaves unset (None) at these sizes",
    "kimi_linear": "its MLA and linear-attention head sizes need their own tiny values",
    "qwen4_exp_text": "its config derives head counts from sizes it leaves unset (None) at these sizes",
    "xlnet": "not a causal LM over positions: its config refuses a sequence-length limit",
    "zaya": "its config validation rejects the small sizes",
    "zamba": "its shared transformer block cannot be tied with two layers",
    "musicgen": "predicts audio codebooks: input ids are [batch x codebooks, length], not text",
    "musicgen_melody": "predicts audio codebooks: input ids are [batch x codebooks, length], not text",
    "moshi": "a speech-text model: " + LARGE,
    "reformer": "needs axial position shapes that match the sequence length, and is_decoder set",
    "xmod": "needs a language adapter chosen (set_default_language) before any forward",
    "prophetnet": "its own forward returns NaN logits whenever an attention mask is passed (transformers' "
                  "ProphetNet), so no batched path can match it",
}
TOLERANCE = 1e-6  # summed log-probs, nats


def _all_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def tiny_config(model_type: str):
    """The architecture's default config with every size it has shrunk, and its per-layer lists (layer types:
    attention, convolution, mamba, ...) cut to one layer of each kind, so hybrids keep all their kinds."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    sizes = {k: v for k, v in {**SMALL, **OVERRIDES.get(model_type, {})}.items()
             if hasattr(default, k) and not isinstance(getattr(type(default), k, None), property)}  # derived
    layers = getattr(default, "num_hidden_layers", None)
    for name, value in vars(default).items():
        if name in sizes or not (isinstance(value, list) and layers and len(value) == layers > 2):
            continue
        kinds = list(dict.fromkeys(map(str, value)))
        sizes[name] = [value[list(map(str, value)).index(kind)] for kind in kinds] if len(kinds) > 1 else value[:2]
        sizes["num_hidden_layers"] = len(sizes[name])
    return AutoConfig.for_model(model_type, **sizes)


def build(model_type: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type)
    with torch.device("meta"):
        size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    if size > MAX_PARAMETERS:
        raise ValueError(f"{size} parameters with the small sizes: not tiny")
    torch.manual_seed(seed)
    # float64 throughout; MoE experts default to torch's grouped matmul, which has no float64 kernel
    return AutoModelForCausalLM.from_config(config, dtype=torch.float64, experts_implementation="eager").eval()


def _groups(seed: int, sizes=((4, (5, 3)), (2, (2, 6)), (0, (3, 4)))) -> list:
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(3, VOCAB, (n,), generator=g).tolist()  # noqa: E731  (0-2: pad, bos, eos)
    return [(ids(p), [ids(c) for c in completions]) for p, completions in sizes]


def own_logps(model, groups) -> torch.Tensor:
    """The plain computation: each prompt + completion alone through the model's forward, full logits (in the
    dtype the model returns them: a few return float32 logits even in float64)."""
    out = []
    for prompt, completions in groups:
        for completion in completions:
            ids = torch.tensor([prompt + completion])
            logps = model(input_ids=ids, use_cache=False).logits[0, :-1].log_softmax(-1)
            picked = logps.gather(-1, ids[0, 1:, None])[:, 0]
            out.append(picked[max(len(prompt) - 1, 0):].sum())
    return torch.stack(out)


def _grads(model, value: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    value.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def check(model_type: str) -> dict:
    """Builds the tiny model and compares; returns the table row (raises AssertionError on any mismatch)."""
    model = build(model_type)
    groups = _groups(seed=1)
    expected = own_logps(model, groups)
    # a model that rounds its own logits to float32 is matched to that rounding (2 float32 ulps), no closer
    rtol = 0.0 if expected.dtype == torch.float64 else 2 * torch.finfo(torch.float32).eps
    fused = fuse(model)
    packed, padded = score(model, groups), score(model, groups, packing=False)
    for got in packed, padded:
        assert torch.allclose(got, expected.to(got.dtype), rtol=rtol, atol=TOLERANCE), (got - expected).abs().max()
    weights = torch.linspace(1, 2, len(expected))  # a gradient that tells the rows apart
    got, want = _grads(model, (weights * packed).sum()), _grads(model, (weights * own_logps(model, groups)).sum())
    for (name, _), a, b in zip(model.named_parameters(), got, want):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7 * (1 + b.abs().max().item())), name
    row = _row(model, fused, float32_logits=rtol > 0)
    _train(model, _groups(seed=2, sizes=((3, (4, 2)), (2, (3, 3)))))
    return row


def _row(model, fused: int, float32_logits: bool) -> dict:
    how = plan(model)
    head = "model's forward" if how.decoder is None else "chunked"
    head += f", x{how.scale:.4g}" if how.decoder is not None and how.scale != 1 else ""
    head += f", soft cap {how.softcap:g}" if how.decoder is not None and how.softcap else ""
    exact = "to float32 (its own logits)" if float32_logits else "yes"
    return dict(model=type(model).__name__, layout="packed" if how.packs else "padded", head=head, fused=fused,
                exact=exact, note=how.head_note or how.packing_note)


def _train(model, pairs, steps: int = 2, beta: float = 0.5) -> list[float]:
    """DPO steps (in train mode: dropout, router noise) against the starting policy: finite losses, moved
    weights."""
    reference = score(model, pairs, packing=False).detach()
    model.train()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        margin = (score(model, pairs) - reference).view(-1, 2)
        loss = -torch.nn.functional.logsigmoid(beta * (margin[:, 0] - margin[:, 1])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert all(math.isfinite(x) for x in losses), losses
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), start))
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("model_type", [t for t in _all_types() if t not in NOT_BUILDABLE])
def test_score_is_exact_and_trains(model_type):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(model_type)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(NOT_BUILDABLE))
def test_listed_architectures_still_fail(model_type):
    """An entry that transformers (or a better tiny config) has fixed must leave the list, not hide a success."""
    assert model_type in _all_types()
    torch.set_num_threads(1)
    with warnings.catch_warnings(), pytest.raises(Exception):
        warnings.simplefilter("ignore")
        check(model_type)


def test_the_list_of_unbuildable_architectures_does_not_grow_silently():
    assert len(NOT_BUILDABLE) == 42 and len(_all_types()) - len(NOT_BUILDABLE) == 154, (
        "an architecture moved in or out of NOT_BUILDABLE: update the counts here and the table in "
        "docs/training.md (python tests/test_architectures.py)")


def table(types: list[str]) -> str:
    lines = ["| architecture | class | layout | output head | fused modules | exact |", "|---|---|---|---|---|---|"]
    for model_type in types:
        if model_type in NOT_BUILDABLE:
            lines.append(f"| {model_type} | | | | | not built: {NOT_BUILDABLE[model_type]} |")
            continue
        started = time.perf_counter()
        try:
            row = check(model_type)
        except Exception as error:  # the sweep reports; the test above is what fails
            lines.append(f"| {model_type} | | | | | no: {type(error).__name__}: {str(error)[:160]} |")
            print(lines[-1], f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
            continue
        print(model_type, row, f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        lines.append(f"| {model_type} | {row['model']} | {row['layout']} | {row['head']} | {row['fused']} "
                     f"| {row['exact']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # as tests/conftest.py: buffers made at init follow it (XGLM's)
    print(table(sys.argv[1:] or _all_types()))
