"""Format detection for every accepted format and source type, and bad-row reporting (prefkit.data)."""

import csv
import json
import math

import pytest

from prefkit.data import DataFormat, prepare
from prefkit.errors import PrefkitError
from prefkit.modeling.tiny import tiny_tokenizer

CORPUS = ["The sky is blue. The sky is green. Two plus two is four, not five.", "hello there, how are you?"] * 4


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(CORPUS, vocab_size=320)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# One data set per format; each has the same two rows, so every format must give the same texts back.
FORMATS = {
    DataFormat("preference", "explicit", "standard"): [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": "Two plus two is", "chosen": " four.", "rejected": " five.", "weight": 2.0, "margin": 0.5}],
    DataFormat("preference", "implicit", "standard"): [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "Two plus two is four.", "rejected": "Two plus two is five.", "weight": 2.0, "margin": 0.5}],
    DataFormat("preference", "explicit", "conversational"): [
        {"prompt": [user("The sky is")], "chosen": [assistant("blue.")], "rejected": [assistant("green.")]},
        {"prompt": [user("Two plus two is")], "chosen": [assistant("four.")], "rejected": [assistant("five.")],
         "weight": 2.0, "margin": 0.5}],
    DataFormat("preference", "implicit", "conversational"): [
        {"chosen": [user("The sky is"), assistant("blue.")], "rejected": [user("The sky is"), assistant("green.")]},
        {"chosen": [user("Two plus two is"), assistant("four.")],
         "rejected": [user("Two plus two is"), assistant("five.")], "weight": 2.0, "margin": 0.5}],
    DataFormat("unpaired", "explicit", "standard"): [
        {"prompt": "The sky is", "completion": " blue.", "label": True},
        {"prompt": "Two plus two is", "completion": " five.", "label": False, "weight": 2.0}],
    DataFormat("unpaired", "explicit", "conversational"): [
        {"prompt": [user("The sky is")], "completion": [assistant("blue.")], "label": True},
        {"prompt": [user("Two plus two is")], "completion": [assistant("five.")], "label": False, "weight": 2.0}],
}
# What the first row's prompt+first completion decodes to, by style.
EXPECTED_TEXT = {"standard": "The sky is blue.<|end|>", "conversational": "<s><|user|>The sky is<|end|><|assistant|>blue.<|end|>"}


def write(directory, source, rows):
    """Write `rows` as `source` (jsonl, json, parquet, csv or disk) and return the path to give prepare()."""
    path = directory / f"data.{source}"
    if source == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif source == "json":
        path.write_text(json.dumps(rows))
    elif source == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(same_keys(rows)), path)
    elif source == "csv":
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    elif source == "disk":
        import datasets
        datasets.Dataset.from_list(same_keys(rows)).save_to_disk(str(path))
    return path


def same_keys(rows):
    """Every row with every column (None where absent): arrow's from_pylist reads the columns of row 1 only."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: row.get(key) for key in columns} for row in rows]


SOURCES = ["jsonl", "json", "parquet", "csv", "disk"]
CASES = [(fmt, source) for fmt in FORMATS for source in SOURCES
         if not (source == "csv" and fmt.style == "conversational")]  # CSV cells hold text, not message lists


@pytest.mark.parametrize("fmt,source", CASES, ids=[f"{f.kind}-{f.prompt}-{f.style}-{s}" for f, s in CASES])
def test_every_format_is_detected_from_every_source(tmp_path, tok, fmt, source):
    data = prepare(write(tmp_path, source, FORMATS[fmt]), tok)
    assert data.format == fmt
    assert data.kind == fmt.kind
    assert data.stats["rows"] == data.stats["kept"] == 2
    first, second = data.examples
    completion = first.chosen_ids if fmt.kind == "preference" else first.completion_ids
    assert tok.decode(first.prompt_ids + completion) == EXPECTED_TEXT[fmt.style]
    assert (first.row, second.row) == (1, 2)
    assert (first.weight, second.weight) == (1.0, 2.0)
    if fmt.kind == "unpaired":
        assert (first.label, second.label) == (True, False)
    else:
        assert second.margin == 0.5 and first.margin is None
        assert tok.decode(second.rejected_ids) == (" five.<|end|>" if fmt.style == "standard" else "five.<|end|>")


def test_explicit_and_implicit_prompts_give_the_same_ids(tmp_path, tok):
    for style in ("standard", "conversational"):
        explicit = prepare(write(tmp_path, "jsonl", FORMATS[DataFormat("preference", "explicit", style)]), tok)
        implicit = prepare(write(tmp_path, "json", FORMATS[DataFormat("preference", "implicit", style)]), tok)
        assert [vars(e) for e in explicit.examples] == [vars(e) for e in implicit.examples]


def test_implicit_standard_prompt_is_cut_at_a_word_boundary(tmp_path, tok):
    rows = [{"chosen": "The sky is blue", "rejected": "The sky is bright"},  # shared "The sky is b"
            {"chosen": "2+2=4", "rejected": "2+2=5"}]                        # no whitespace: kept as is
    data = prepare(write(tmp_path, "jsonl", rows), tok)
    assert tok.decode(data.examples[0].prompt_ids) == "The sky is"
    assert tok.decode(data.examples[0].rejected_ids) == " bright<|end|>"
    assert tok.decode(data.examples[1].prompt_ids) == "2+2="


def test_json_object_with_a_split_and_json_lines_saved_as_json(tmp_path, tok):
    rows = FORMATS[DataFormat("preference", "explicit", "standard")]
    (tmp_path / "split.json").write_text(json.dumps({"train": rows[:1], "test": rows}))
    assert len(prepare(tmp_path / "split.json", tok).examples) == 1
    assert len(prepare(tmp_path / "split.json", tok, split="test").examples) == 2
    (tmp_path / "lines.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert prepare(tmp_path / "lines.json", tok).unit == "line"


def test_save_to_disk_dataset_dict_picks_the_split(tmp_path, tok):
    import datasets
    rows = FORMATS[DataFormat("preference", "explicit", "standard")]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(prepare(tmp_path / "dd", tok, split="test").examples) == 1
    with pytest.raises(PrefkitError, match="no split 'validation'; it has train, test"):
        prepare(tmp_path / "dd", tok, split="validation")


def test_csv_cells_are_converted_like_json_values(tmp_path, tok):
    (tmp_path / "u.csv").write_text("prompt,completion,label,weight\nThe sky is, blue.,true,2\n"
                                    "The sky is, green.,False,\nThe sky is, blue.,maybe,heavy\n")
    data = prepare(tmp_path / "u.csv", tok, on_bad_rows="skip")
    assert [(e.label, e.weight) for e in data.examples] == [(True, 2.0), (False, 1.0)]
    assert {(p.row, p.field) for p in data.bad_rows} == {(3, "label"), (3, "weight")}


def test_columns_that_fit_no_format_are_one_clear_error(tmp_path, tok):
    with pytest.raises(PrefkitError, match=r"cannot tell the format from the columns \['answer', 'question'\]"):
        prepare(write(tmp_path, "jsonl", [{"question": "q", "answer": "a"}]), tok)
    with pytest.raises(PrefkitError, match="unpaired data needs the column.s. label"):
        prepare(write(tmp_path, "jsonl", [{"prompt": "q", "completion": "a"}]), tok)
    with pytest.raises(PrefkitError, match="no such file"):
        prepare(tmp_path / "missing.jsonl", tok)
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(PrefkitError, match="unsupported file type .txt"):
        prepare(tmp_path / "data.txt", tok)


BAD_JSONL = "\n".join([
    json.dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}),        # 1 good
    json.dumps({"prompt": "The sky is", "chosen": " blue."}),                               # 2 no rejected
    json.dumps({"prompt": "The sky is", "chosen": 42, "rejected": " green."}),              # 3 wrong type
    json.dumps({"prompt": "The sky is", "chosen": "", "rejected": " green."}),              # 4 empty
    json.dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " blue."}),         # 5 identical
    '{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "margin": NaN}',    # 6 not finite
    '{"prompt": "The sky is", "chosen": " blue.",',                                         # 7 not JSON
    "",                                                                                     # 8 blank: skipped
    json.dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "weight": -1}),   # 9
    json.dumps({"prompt": ["The sky is"], "chosen": " blue.", "rejected": " green.", "score": "high"}),  # 10
    json.dumps({"prompt": "Two plus two is", "chosen": " four.", "rejected": " five."}),  # 11 good
]) + "\n"
EXPECTED_BAD = [
    (2, "rejected", "missing"),
    (3, "chosen", "expected a string (standard format), got int"),
    (4, "chosen", "empty completion"),
    (5, "rejected", "identical to chosen"),
    (6, "margin", "not a finite number: nan"),
    (7, None, "not valid JSON"),
    (9, "weight", "weight must be >= 0, got -1"),
    (10, "prompt", "expected a string (standard format), got a list"),
    (10, "score", "expected a number, got 'high'"),
]


def test_error_lists_every_bad_row_with_file_line_and_field(tmp_path, tok):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_JSONL)
    with pytest.raises(PrefkitError) as caught:
        prepare(path, tok, run_dir=tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"{path}: 8 bad rows out of 10")
    for row, field, reason in EXPECTED_BAD:
        where = f"{path} line {row}, field '{field}': " if field else f"{path} line {row}: "
        assert where + reason in message, where + reason
    assert "line 1," not in message and "line 11" not in message
    assert not (tmp_path / "run" / "skipped_rows.jsonl").exists()


def test_skip_keeps_good_rows_and_records_the_skipped_ones(tmp_path, tok):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_JSONL)
    run = tmp_path / "run"
    data = prepare(path, tok, on_bad_rows="skip", run_dir=run)
    assert [e.row for e in data.examples] == [1, 11]
    assert data.stats["skipped"] == 8 and data.stats["kept"] == 2 and data.stats["rows"] == 10
    records = [json.loads(line) for line in (run / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"]) for r in records] == [(row, field) for row, field, _ in EXPECTED_BAD]
    assert all(r["file"] == str(path) and r["reason"] for r in records)
    assert [p.name for p in run.iterdir()] == ["skipped_rows.jsonl"]  # no temp file left behind


def test_more_bad_rows_than_shown_are_counted(tmp_path, tok):
    rows = [{"prompt": "q", "chosen": "", "rejected": " b"}] * 25
    with pytest.raises(PrefkitError) as caught:
        prepare(write(tmp_path, "parquet", rows), tok)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 5 more"
    assert lines[1].endswith("data.parquet row 1, field 'chosen': empty completion")


def test_conversational_bad_rows(tmp_path, tok):
    rows = [{"prompt": [user("hi")], "chosen": [{"role": "assistant"}], "rejected": [assistant("b")]},
            {"prompt": [user("hi")], "chosen": "a string", "rejected": [assistant("b")]},
            {"prompt": [user("hi")], "chosen": [assistant("  ")], "rejected": [assistant("b")]},
            {"chosen": [user("a"), assistant("b")], "rejected": [user("c"), assistant("b")]},
            {"prompt": [user("hi")], "completion": [assistant("b")], "label": "yes"}]
    with pytest.raises(PrefkitError) as caught:
        prepare(write(tmp_path, "jsonl", rows[:3]), tok)
    message = str(caught.value)
    assert "line 1, field 'chosen': message 1: 'content' must be a string, got null" in message
    assert "line 2, field 'chosen': expected a list of {role, content} messages (conversational format)" in message
    assert "line 3, field 'chosen': empty completion" in message
    with pytest.raises(PrefkitError, match=r"line 1, field 'chosen': implicit prompt: chosen and rejected share "
                                           "no prefix"):
        prepare(write(tmp_path, "jsonl", rows[3:4]), tok)
    with pytest.raises(PrefkitError, match=r"line 1, field 'label': expected true or false, got 'yes'"):
        prepare(write(tmp_path, "jsonl", rows[4:]), tok)


def test_implicit_standard_with_no_shared_prefix_is_bad(tmp_path, tok):
    rows = [{"chosen": "blue", "rejected": "green"}, {"chosen": "The sky is blue.", "rejected": "The sky "}]
    with pytest.raises(PrefkitError) as caught:
        prepare(write(tmp_path, "json", rows), tok)
    assert "data.json row 1, field 'chosen': implicit prompt: chosen and rejected share no prefix" in str(caught.value)
    assert "data.json row 2, field 'rejected': empty completion once the shared prompt is removed" in str(caught.value)


def test_bad_arguments_are_rejected(tmp_path, tok):
    path = write(tmp_path, "jsonl", FORMATS[DataFormat("preference", "explicit", "standard")])
    with pytest.raises(PrefkitError, match="on_bad_rows='ignore'"):
        prepare(path, tok, on_bad_rows="ignore")
    with pytest.raises(PrefkitError, match="truncation='middle'"):
        prepare(path, tok, truncation="middle")
    assert math.isfinite(prepare(path, tok).examples[0].weight)
