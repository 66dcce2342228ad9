"""collate_pairs / collate_unpaired: layout, right padding and the completion mask."""

import pytest
import torch

from prefkit.data import PairExample, UnpairedExample, collate_pairs, collate_unpaired
from prefkit.errors import PrefkitError

PAD = 0


def test_pairs_are_chosen_rows_then_rejected_rows_right_padded():
    examples = [PairExample([1, 5], [7, 8, 2], [9, 2], row=1, weight=0.5, margin=1.0),
                PairExample([1, 5, 6, 6], [3, 2], [4, 4, 4, 2], row=4, margin=2.0)]
    batch = collate_pairs(examples, PAD)
    assert batch["input_ids"].tolist() == [
        [1, 5, 7, 8, 2, 0, 0, 0],        # prompt 0 + chosen 0
        [1, 5, 6, 6, 3, 2, 0, 0],        # prompt 1 + chosen 1
        [1, 5, 9, 2, 0, 0, 0, 0],        # prompt 0 + rejected 0
        [1, 5, 6, 6, 4, 4, 4, 2]]        # prompt 1 + rejected 1
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] * 6 + [0] * 2, [1] * 4 + [0] * 4, [1] * 8]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1]]
    for name in ("input_ids", "attention_mask", "completion_mask"):
        assert batch[name].dtype == torch.long and batch[name].shape == (4, 8)
    assert batch["weights"].tolist() == [0.5, 1.0] and batch["weights"].dtype == torch.float32
    assert batch["margins"].tolist() == [1.0, 2.0]
    assert "scores" not in batch  # only when every example has one


def test_completion_mask_covers_exactly_the_completion_tokens_with_eos():
    examples = [PairExample([1, 5, 6], [7, 2], [8, 8, 2], row=1)]
    batch = collate_pairs(examples, PAD)
    for row, completion in enumerate((examples[0].chosen_ids, examples[0].rejected_ids)):
        mask = batch["completion_mask"][row].bool()
        assert batch["input_ids"][row][mask].tolist() == completion
        assert batch["input_ids"][row][mask][-1].item() == 2


def test_unpaired_batch():
    examples = [UnpairedExample([1, 5], [7, 2], label=True, row=1),
                UnpairedExample([1], [9, 9, 9, 2], label=False, row=2, weight=3.0)]
    batch = collate_unpaired(examples, pad_token_id=99)
    assert batch["input_ids"].tolist() == [[1, 5, 7, 2, 99], [1, 9, 9, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [True, False] and batch["labels"].dtype == torch.bool
    assert batch["weights"].tolist() == [1.0, 3.0]


def test_collate_rejects_an_empty_batch_or_no_pad_id():
    with pytest.raises(PrefkitError, match="empty batch"):
        collate_pairs([], PAD)
    with pytest.raises(PrefkitError, match="pad_token_id is None"):
        collate_unpaired([UnpairedExample([1], [2], True, 1)], None)
