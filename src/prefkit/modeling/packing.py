"""Padding-free packing: a batch's prompts once each, their completions as branches of a tree, in one row.

A batch of G prompts with K completions each (chosen and rejected: K = 2) becomes one row of
N = Σ (|prompt| + Σ |completion|) tokens: no padding, each prompt once, position ids restarting where each
completion leaves its prompt. The linear layers, nearly all of the compute, then run on exactly the tokens
that exist. Attention is the one operation that needs the structure: it runs segment by segment (a segment is
one prompt and its completions) in a padded [S, L] layout under a tree mask (a completion sees its prompt and
its own earlier tokens, never a sibling), through transformers' own `sdpa` function. That function is reached
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
    segments: Tensor      # [S, L] index in N of each segment's tokens (0 beyond the segment's end)
    segment_mask: Tensor  # [S, 1, L, L] bool: may query i attend to key j of the same segment
    unpack_index: Tensor  # [N] where token n sits in the flattened [S*L] layout
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
    second ones (chosen, then rejected, as `collate_pairs` orders them). With `group_major`, rows follow the
    groups' own order (group by group, completion by completion) and K may differ between groups."""
    num_groups = len(groups)
    next_row = 0
    ids, positions, branch, segment_of, predictors, targets, rows = [], [], [], [], [], [], []
    lengths = [0] * sum(len(c) for _, c in groups)
    longest = 0
    for g, (prompt, completions) in enumerate(groups):
        start = len(ids)
        ids += prompt
        positions += range(len(prompt))
        branch += [0] * len(prompt)
        for k, completion in enumerate(completions):
            row, offset = next_row if group_major else k * num_groups + g, len(ids)
            next_row += 1
            ids += completion
            positions += range(len(prompt), len(prompt) + len(completion))
            branch += [k + 1] * len(completion)
            # token j is predicted by the state before it: the prompt's last token for j = 0 (none if no prompt)
            before = [start + len(prompt) - 1] + list(range(offset, offset + len(completion) - 1))
            first = 0 if prompt else 1
            predictors += before[first:]
            targets += completion[first:]
            rows += [row] * (len(completion) - first)
            lengths[row] = len(completion) - first
            longest = max(longest, len(prompt) + len(completion))
        segment_of.append((start, len(ids) - start))
    width = max(size for _, size in segment_of)
    segments = torch.zeros(num_groups, width, dtype=torch.long)
    seg_branch = torch.full((num_groups, width), -1, dtype=torch.long)
    unpack_index = torch.empty(len(ids), dtype=torch.long)
    branch_t = torch.tensor(branch, dtype=torch.long)
    for s, (start, size) in enumerate(segment_of):
        segments[s, :size] = torch.arange(start, start + size)
        seg_branch[s, :size] = branch_t[start:start + size]
        unpack_index[start:start + size] = torch.arange(s * width, s * width + size)
    return PackedBatch(torch.tensor([ids]), torch.tensor([positions]), segments, tree_mask(seg_branch), unpack_index,
                       torch.tensor(predictors, dtype=torch.long), torch.tensor(targets, dtype=torch.long),
                       torch.tensor(rows, dtype=torch.long), torch.tensor(lengths, dtype=torch.long), longest)


def tree_mask(branch: Tensor) -> Tensor:
    """[S, 1, L, L] from branch ids [S, L] (0 prompt, k completion k, -1 padding): key j is visible to query i
    when it comes no later and is in the prompt or in i's own branch. Padding sees itself only, so no softmax
    row is empty."""
    width = branch.shape[1]
    order = torch.arange(width)
    causal = order[None, :, None] >= order[None, None, :]
    query, key = branch[:, :, None], branch[:, None, :]
    allowed = causal & (query >= 0) & ((key == 0) | (key == query))
    return (allowed | torch.eye(width, dtype=torch.bool)[None])[:, None]


def packed_inputs(packed: PackedBatch) -> dict:
    """The keyword arguments of a decoder's (or causal LM's) forward that run the packed layout."""
    return dict(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=packed.segment_mask,
                packing=packed)


def supports_packing(model, packed: PackedBatch) -> bool:
    """Whether `model` can run the packed layout: it dispatches attention through transformers'
    AttentionInterface with sdpa, and no segment outgrows an attention window or chunk (the tree mask has
    neither; these are the two restrictions transformers' mask builders know). Whether every layer is attention
    under that mask is for the log-prob engine's probe to find out (`prefkit.modeling.probe`)."""
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
    """transformers' sdpa attention; with `packing`, [1, H, N, D] states are laid out per segment first."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packing is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    flat = packing.segments.reshape(-1)
    query, key, value = (x[0].index_select(1, flat).unflatten(1, packing.segments.shape).transpose(0, 1)
                         for x in (query, key, value))  # [S, H, L, D]
    out, _ = sdpa_attention_forward(module, query, key, value, packing.segment_mask, **kwargs)  # [S, L, H, D]
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
