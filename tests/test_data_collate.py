"""prefkit.data.examples: one Example type (K completions) and its typed Batch: layout, right padding and the
completion mask for pairs (K = 2), single completions (K = 1) and ranked lists (K = 3)."""

import pytest
import torch

from prefkit.data import Batch, Example, collate
from prefkit.errors import PrefkitError

PAD = 0


def test_pairs_are_chosen_rows_then_rejected_rows_right_padded():
    examples = [Example.pair([1, 5], [7, 8, 2], [9, 2], row=1, weight=0.5, margin=1.0),
                Example.pair([1, 5, 6, 6], [3, 2], [4, 4, 4, 2], row=4, margin=2.0)]
    batch = collate(examples, PAD)
    assert isinstance(batch, Batch) and batch.num_completions == 2 and batch.size == 2
    assert batch.input_ids.tolist() == [
        [1, 5, 7, 8, 2, 0, 0, 0],        # prompt 0 + chosen 0
        [1, 5, 6, 6, 3, 2, 0, 0],        # prompt 1 + chosen 1
        [1, 5, 9, 2, 0, 0, 0, 0],        # prompt 0 + rejected 0
        [1, 5, 6, 6, 4, 4, 4, 2]]        # prompt 1 + rejected 1
    assert batch.attention_mask.tolist() == [[1] * 5 + [0] * 3, [1] * 6 + [0] * 2, [1] * 4 + [0] * 4, [1] * 8]
    assert batch.completion_mask.tolist() == [
        [0, 0, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1]]
    for name in ("input_ids", "attention_mask", "completion_mask"):
        assert getattr(batch, name).dtype == torch.long and getattr(batch, name).shape == (4, 8)
    assert batch.weights.tolist() == [0.5, 1.0] and batch.weights.dtype == torch.float32
    assert batch.margins.tolist() == [1.0, 2.0]
    assert batch.labels is None
    assert collate(examples[1:], PAD).margins.tolist() == [2.0]
    assert collate([Example.pair([1], [2], [3], row=1)], PAD).margins is None  # only when every example has one


def test_a_pair_is_a_view_of_two_completions_chosen_first():
    pair = Example.pair([1], [7, 2], [8, 2], row=3)
    assert pair.completions == ([7, 2], [8, 2]) and pair.kind == "pair"
    assert (pair.chosen_ids, pair.rejected_ids) == ([7, 2], [8, 2])
    single = Example.single([1], [9, 2], label=False, row=4)
    assert single.completions == ([9, 2],) and single.kind == "single" and single.completion_ids == [9, 2]


def test_completion_mask_covers_exactly_the_completion_tokens_with_eos():
    examples = [Example.pair([1, 5, 6], [7, 2], [8, 8, 2], row=1)]
    batch = collate(examples, PAD)
    for row, completion in enumerate(examples[0].completions):
        mask = batch.completion_mask[row].bool()
        assert batch.input_ids[row][mask].tolist() == completion
        assert batch.input_ids[row][mask][-1].item() == 2


def test_unpaired_batch():
    examples = [Example.single([1, 5], [7, 2], label=True, row=1),
                Example.single([1], [9, 9, 9, 2], label=False, row=2, weight=3.0)]
    batch = collate(examples, pad_token_id=99)
    assert batch.num_completions == 1
    assert batch.input_ids.tolist() == [[1, 5, 7, 2, 99], [1, 9, 9, 9, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch.completion_mask.tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]
    assert batch.labels.tolist() == [True, False] and batch.labels.dtype == torch.bool
    assert batch.weights.tolist() == [1.0, 3.0]


def test_ranked_lists_are_sorted_best_first_and_stacked_completion_major():
    ranked = Example.ranked([1], [[3, 2], [4, 2], [5, 2]], scores=[1.0, 7.5, 1.0], row=2)
    # best first; the two tied completions keep the row's order (a stable sort)
    assert ranked.completions == ([4, 2], [3, 2], [5, 2]) and ranked.completion_scores == (7.5, 1.0, 1.0)
    assert ranked.kind == "list" and (ranked.chosen_ids, ranked.rejected_ids) == ([4, 2], [5, 2])
    other = Example.ranked([1, 6], [[8, 2], [9, 9, 2], [7, 2]], scores=[3, 2, 1], row=5)
    batch = collate([ranked, other], PAD)
    assert batch.num_completions == 3 and batch.input_ids.shape == (6, 5)
    assert [row[:4] for row in batch.input_ids.tolist()] == [[1, 4, 2, 0], [1, 6, 8, 2], [1, 3, 2, 0],
                                                             [1, 6, 9, 9], [1, 5, 2, 0], [1, 6, 7, 2]]
    values = torch.arange(6.0)  # one value per row -> [B, K]: example b's completion k at [b, k]
    assert batch.per_example(values).tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]


def test_collate_rejects_an_empty_batch_no_pad_id_or_mixed_sizes():
    with pytest.raises(PrefkitError, match="empty batch"):
        collate([], PAD)
    with pytest.raises(PrefkitError, match="pad_token_id is None"):
        collate([Example.single([1], [2], True, 1)], None)
    with pytest.raises(PrefkitError, match="different numbers of completions"):
        collate([Example.single([1], [2], True, 1), Example.pair([1], [2], [3], 2)], PAD)
