"""Scored lists (K completions per prompt, each with a score): the two row layouts, how a list becomes pairs
(`list_pairs`: all, best_vs_worst, ties dropped) or stays a ranked list, and bad rows named by file, row and
field."""

import json

import pytest

from prefkit.data import DataFormat, prepare
from prefkit.errors import PrefkitError
from prefkit.modeling.tiny import tiny_tokenizer

CORPUS = ["The sky is blue. The sky is green. The sky is grey. Two plus two is four, not five or three."] * 4
SKY = {"prompt": "The sky is", "completions": [" blue.", " green.", " grey.", " red."], "scores": [9, 2, 5, 2]}
SUM = {"prompt": "Two plus two is", "completions": [" five.", " four.", " three."], "scores": [1.0, 8.5, 3.0]}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(CORPUS, vocab_size=320)


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def texts(tok, example):
    return [tok.decode(ids).removesuffix(tok.eos_token) for ids in example.completions]


def test_all_pairs_are_every_two_completions_with_different_scores_better_first(tmp_path, tok):
    data = prepare(write(tmp_path / "lists.jsonl", [SKY, SUM]), tok)
    assert data.format == DataFormat("scored-list", "explicit", "standard")
    # K(K-1)/2 pairs less the ties: 4·3/2 − 1 (green and red both score 2) + 3·2/2
    assert len(data.examples) == 5 + 3 and data.stats["tied_pairs"] == 1
    assert all(example.kind == "pair" for example in data.examples)
    got = {(example.row, *texts(tok, example)) for example in data.examples}
    assert got == {(1, " blue.", " green."), (1, " blue.", " grey."), (1, " blue.", " red."),
                   (1, " grey.", " green."), (1, " grey.", " red."),
                   (2, " four.", " three."), (2, " four.", " five."), (2, " three.", " five.")}


def test_best_vs_worst_gives_one_pair_per_list_and_none_when_every_score_ties(tmp_path, tok):
    flat = {"prompt": "The sky is", "completions": [" blue.", " grey."], "scores": [3, 3]}
    data = prepare(write(tmp_path / "lists.jsonl", [SKY, SUM, flat]), tok, list_pairs="best_vs_worst")
    # the worst of the tied green (2) and red (2) is the later one in the row: red
    assert [(e.row, *texts(tok, e)) for e in data.examples] == [(1, " blue.", " red."), (2, " four.", " five.")]
    assert data.stats["tied_pairs"] == 1


def test_kept_whole_a_list_is_ranked_best_first_with_its_scores(tmp_path, tok):
    data = prepare(write(tmp_path / "lists.jsonl", [SKY, SKY | {"scores": [1, 2, 3, 4]}]), tok, list_pairs=None)
    first, second = data.examples
    assert first.kind == "list" and texts(tok, first) == [" blue.", " grey.", " green.", " red."]
    assert first.completion_scores == (9.0, 5.0, 2.0, 2.0)  # tied green and red keep the row's order
    assert texts(tok, second) == [" red.", " grey.", " green.", " blue."]


def test_ultrafeedback_layout_with_instruction_and_scored_objects(tmp_path, tok):
    rows = [{"source": "sky", "instruction": "The sky is",
             "completions": [{"model": "a", "response": " blue.", "overall_score": 8.5},
                             {"model": "b", "response": " green.", "overall_score": 3}]},
            {"instruction": "Two plus two is",
             "completions": [{"text": " five.", "score": 1}, {"text": " four.", "score": 10}]}]
    data = prepare(write(tmp_path / "uf.jsonl", rows), tok)
    assert data.format == DataFormat("scored-list", "explicit", "standard", "instruction")
    assert [texts(tok, e) for e in data.examples] == [[" blue.", " green."], [" four.", " five."]]
    assert tok.decode(data.examples[0].prompt_ids).endswith("The sky is")


def test_conversational_lists(tmp_path, tok):
    def assistant(text):
        return [{"role": "assistant", "content": text}]

    row = {"prompt": [{"role": "user", "content": "The sky is"}], "completions": [assistant("blue."), assistant("red.")],
           "scores": [1, 0]}
    data = prepare(write(tmp_path / "chat.jsonl", [row]), tok)
    assert data.format.style == "conversational" and len(data.examples) == 1


@pytest.mark.parametrize("row, field, reason", [
    ({"prompt": "The sky is", "completions": [" blue."], "scores": [1]}, "completions", "at least 2 completions"),
    ({"prompt": "The sky is", "completions": [" blue.", " red."]}, "scores", "missing"),
    ({"prompt": "The sky is", "completions": [" blue.", " red."], "scores": [1]}, "scores", "a list of 2 numbers"),
    ({"prompt": "The sky is", "completions": [" blue.", " red."], "scores": [1, "high"]}, "scores[1]",
     "expected a number"),
    ({"prompt": "The sky is", "completions": [" blue.", ""], "scores": [1, 2]}, "completions[1]", "empty completion"),
    ({"prompt": "The sky is", "completions": [" blue.", " red.", " blue."], "scores": [1, 2, 3]}, "completions[2]",
     "identical to completions[0]"),
    ({"prompt": "The sky is", "completions": [{"response": " blue.", "overall_score": 2},
                                              {"response": " red.", "overall_score": "N/A"}]},
     "completions[1].overall_score", "expected a number"),
    ({"prompt": "The sky is", "completions": [{"response": " blue.", "overall_score": 2}, {"overall_score": 1}]},
     "completions[1]", "missing"),
])
def test_bad_rows_are_named_by_file_line_and_field(tmp_path, tok, row, field, reason):
    path = write(tmp_path / "lists.jsonl", [SKY, row])
    with pytest.raises(PrefkitError) as error:
        prepare(path, tok)
    message = str(error.value)
    assert f"lists.jsonl line 2, field '{field}': " in message and reason in message, message
    assert "line 1" not in message


def test_a_listwise_loss_needs_the_same_number_of_completions_in_every_row(tmp_path, tok):
    path = write(tmp_path / "lists.jsonl", [SKY, SKY, SUM])
    with pytest.raises(PrefkitError, match=r"lists.jsonl line 3, field 'completions': holds 3 completions; a "
                                           r"listwise loss needs the same number in every row \(4"):
        prepare(path, tok, list_pairs=None)
    data = prepare(path, tok, list_pairs=None, on_bad_rows="skip")
    assert [e.row for e in data.examples] == [1, 2] and data.stats["skipped"] == 1
    assert len(prepare(path, tok).examples) == 5 + 5 + 3  # as pairs every row counts


def test_pairs_from_lists_mix_with_preference_pairs_but_whole_lists_do_not(tmp_path, tok):
    lists = write(tmp_path / "lists.jsonl", [SKY])
    pairs = write(tmp_path / "pairs.jsonl", [{"prompt": "The sky is", "chosen": " blue.", "rejected": " red."}])
    mixed = prepare([{"path": str(lists)}, {"path": str(pairs)}], tok)
    assert len(mixed.examples) == 5 + 1
    with pytest.raises(PrefkitError, match="a mixture must give examples of one kind"):
        prepare([{"path": str(lists)}, {"path": str(pairs)}], tok, list_pairs=None)


def test_list_pairs_is_checked_and_names_the_fingerprint(tmp_path, tok):
    path = write(tmp_path / "lists.jsonl", [SKY])
    with pytest.raises(PrefkitError, match="list_pairs='some': use one of all, best_vs_worst"):
        prepare(path, tok, list_pairs="some")
    prints = {prepare(path, tok, list_pairs=how).fingerprint for how in ("all", "best_vs_worst", None)}
    assert len(prints) == 3
