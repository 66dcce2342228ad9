"""Padding-free packing: a batch's prompts once each, their completions as branches of a tree, in one row.

A batch of G prompts with K completions each (chosen and rejected: K = 2) becomes one row of
N = Σ (|prompt| + Σ |completion|) tokens: no padding, each prompt once, position ids restarting where each
completion leaves its prompt. The linear layers, nearly all of the compute, then run on exactly the tokens
that exist. Attention is the one operation that needs the structure: a completion sees its prompt and its own
earlier tokens, never a sibling. That is plain causal attention over the row prompt + completion, so attention
runs on a [R, W] layout of R branch rows (each completion after its own copy of its prompt's keys and values,
right-padded, which causal attention never lets a real token see) with `is_causal` and no mask at all, through
transformers' own `sdpa` function. Memory grows with the number of tokens, not with the square of a segment's
length, and SDPA can take its flash kernels (no mask to expand). That function is reached
through transformers' AttentionInterface, so every decoder written against it (Llama, Mistral, Qwen, Gemma,
Phi, ...) packs with no model code here; other models fall back to the padded forward (`supports_packing`), and
so do models with layers that mix tokens outside attention, which `prefkit.modeling.probe` finds out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

Tensor = torch.Tensor
ATTENTION = "prefkit_sdpa"  # transformers' sdpa, plus the packed layout when a forward passes `packing=`


@dataclass
class PackedBatch:
    input_ids: Tensor     # [1, N] every prompt once, each followed by its completions
    position_ids: Tensor  # [1, N] each completion continues from the end of its prompt
    branches: Tensor      # [R, W] index in N of each branch row's tokens: a prompt, then one completion (0 after)
    unpack_index: Tensor  # [N] where token n's attention output sits in the flattened [R*W] branch layout
    predictors: Tensor    # [M] for every completion token, the position whose hidden state predicts it
    targets: Tensor       # [M] that token's id
    rows: Tensor          # [M] the completion it belongs to, in the caller's row order
    lengths: Tensor       # [R] predicted tokens per completion
    longest: int          # longest prompt + completion, for models with a sliding attention window

    def to(self, device) -> "PackedBatch":
        return PackedBatch(**{f.name: getattr(self, f.name).to(device) if f.name != "longest" else self.longest
                              for f in fields(self)})


def pack(groups: list[tuple[list[int], list[list[int]]]], group_major: bool = False) -> PackedBatch:
    """Pack (prompt ids, [completion ids, ...]) groups. By default each group has the same number K of
    completions and completion k of group g becomes row k·G + g of the outputs: all first completions, then all
    second ones (chosen, then rejected, as `prefkit.data.examples` orders a pair batch). With `group_major`, rows follow the
    groups' own order (group by group, completion by completion) and K may differ between groups."""
    num_groups = len(groups)
    next_row = 0
    ids, positions, branches, predictors, targets, rows = [], [], [], [], [], []
    lengths = [0] * sum(len(c) for _, c in groups)
    longest = 0
    for g, (prompt, completions) in enumerate(groups):
        prompt_at = list(range(len(ids), len(ids) + len(prompt)))
        ids += prompt
        positions += range(len(prompt))
        branches += [prompt_at] if not completions else []
        for k, completion in enumerate(completions):
            row, offset = next_row if group_major else k * num_groups + g, len(ids)
            next_row += 1
            ids += completion
            positions += range(len(prompt), len(prompt) + len(completion))
            branches.append(prompt_at + list(range(offset, offset + len(completion))))
            # token j is predicted by the state before it: the prompt's last token for j = 0 (none if no prompt)
            before = [prompt_at[-1] if prompt else -1] + list(range(offset, offset + len(completion) - 1))
            first = 0 if prompt else 1
            predictors += before[first:]
            targets += completion[first:]
            rows += [row] * (len(completion) - first)
            lengths[row] = len(completion) - first
            longest = max(longest, len(prompt) + len(completion))
    layout, unpack_index = branch_layout(branches, len(ids))
    return PackedBatch(torch.tensor([ids]), torch.tensor([positions]), layout, unpack_index,
                       torch.tensor(predictors, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                       torch.tensor(rows, dtype=torch.long), torch.tensor(lengths, dtype=torch.long), longest)


def branch_layout(branches: list[list[int]], num_tokens: int) -> tuple[Tensor, Tensor]:
    """[R, W] token indices of the branch rows (right-padded with 0) and, for each of the `num_tokens` tokens,
    where its attention output is read in the flattened layout: a prompt token from its first branch row (every
    row computes the same causal attention for it), a completion token from its own row."""
    width = max((len(b) for b in branches), default=1)
    layout = torch.zeros(len(branches), width, dtype=torch.long)
    unpack_index = torch.full((num_tokens,), -1, dtype=torch.long)
    for r, branch in enumerate(branches):
        at = torch.tensor(branch, dtype=torch.long)
        layout[r, :len(branch)] = at
        first = unpack_index[at] < 0
        unpack_index[at[first]] = r * width + torch.arange(len(branch))[first]
    return layout, unpack_index


def packed_inputs(packed: PackedBatch) -> dict:
    """The keyword arguments of a decoder's (or causal LM's) forward that run the packed layout."""
    tokens = packed.input_ids.shape[1]
    # a 4-D mask makes transformers' mask builders stand aside; this one is a stride-0 view of one element, since
    # packed_attention never reads it: no [N, N] mask is ever built
    placeholder = torch.ones((), dtype=torch.bool, device=packed.input_ids.device).expand(1, 1, tokens, tokens)
    return dict(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=placeholder,
                packing=packed)


def supports_packing(model, packed: PackedBatch) -> bool:
    """Whether `model` can run the packed layout: it dispatches attention through transformers'
    AttentionInterface with sdpa, and no prompt + completion outgrows an attention window or chunk (the branch
    rows' causal attention has neither; these are the two restrictions transformers' mask builders know).
    Whether every layer is attention under that layout is for the log-prob engine's probe to find out
    (`prefkit.modeling.probe`)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and packed.longest > window and getattr(config, "use_sliding_window", True):
        return False
    chunk = getattr(config, "attention_chunk_size", None)
    if isinstance(chunk, int) and packed.longest > chunk:
        return False
    if config._attn_implementation == ATTENTION:
        return True
    if config._attn_implementation != "sdpa" or not getattr(model, "_supports_attention_backend", False):
        return False
    if not _register():  # transformers before 4.53 builds masks its own way: keep the padded forward there
        return False
    config._attn_implementation = ATTENTION  # the same sdpa everywhere else: generation, eval, saving
    return True


def packed_attention(module, query, key, value, attention_mask, packing: PackedBatch | None = None, **kwargs):
    """transformers' sdpa attention; with `packing`, [1, H, N, D] states are laid out in branch rows first and
    attend causally within each row (no mask)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packing is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and (attention_mask.dtype != torch.bool or any(attention_mask.stride())):
        # the layer made a mask of its own from packed_inputs' placeholder (Doge adds a learned one): the branch
        # rows cannot apply it, so the probe refuses packing for this model
        raise ValueError("the attention layers change the attention mask; the packed layout cannot apply it")
    flat = packing.branches.reshape(-1)
    query, key, value = (x[0].index_select(1, flat).unflatten(1, packing.branches.shape).transpose(0, 1)
                         for x in (query, key, value))  # [R, H, W, D]
    kwargs.pop("is_causal", None)
    out, _ = sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)  # [R, W, H, D]
    return out.flatten(0, 1).index_select(0, packing.unpack_index)[None], None


_registered = False


def _register() -> bool:
    global _registered
    if not _registered:
        try:
            from transformers import AttentionInterface
            from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        except ImportError:
            return False
        AttentionInterface.register(ATTENTION, packed_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
        _registered = True
    return True
