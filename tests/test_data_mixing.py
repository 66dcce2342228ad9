"""Data settings that came with issue 14: several sources mixed with weights, a chat-template override (file or
string), `prefkit eval --split`, and no empty skipped_rows.jsonl when nothing was skipped."""

import json

import pytest

from prefkit.cli import main
from prefkit.data import prepare
from prefkit.errors import PrefkitError
from prefkit.modeling.load import load_tokenizer
from train_fixtures import tiny_workspace, write_preferences, write_unpaired

# The task's template without the <|end|> after each message: a visible change in the prompt's tokens.
NO_END = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixing")
    return {**tiny_workspace(root), "small": str(write_preferences(root / "small.jsonl", n=8, seed=1))}


@pytest.fixture(scope="module")
def tok(workspace):
    return load_tokenizer(workspace["model"])


def test_a_mixture_takes_each_source_weight_times(workspace, tok):
    big, small = workspace["data"], workspace["small"]
    whole = prepare(big, tok).examples
    mixed = prepare([{"path": big, "weight": 0.5}, {"path": small, "weight": 2}], tok)
    assert len(mixed.examples) == 8 + 16 and mixed.stats["kept"] == 24
    halves = mixed.examples[:8]
    assert all(example in whole for example in halves) and len({e.row for e in halves}) == 8  # a subset, no repeat
    again = prepare([{"path": big, "weight": 0.5}, {"path": small, "weight": 2}], tok)
    assert [vars(e) for e in again.examples] == [vars(e) for e in mixed.examples]  # the same share every run
    assert mixed.fingerprint != prepare([{"path": big}, {"path": small}], tok).fingerprint
    assert mixed.source == f"0.5 x {big} + 2 x {small}"


def test_a_mixture_reports_bad_rows_of_every_source_at_once_and_records_them(workspace, tok, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"prompt": "say red", "chosen": "red", "rejected": 3}) + "\n"
                     + json.dumps({"prompt": "say sun", "chosen": "sun", "rejected": "moon"}) + "\n")
    second.write_text("not json\n" + json.dumps({"prompt": "say cat", "chosen": "cat", "rejected": "dog"}) + "\n")
    sources = [{"path": str(first)}, {"path": str(second)}]
    with pytest.raises(PrefkitError) as error:
        prepare(sources, tok)
    assert f"{first}: 1 bad row out of 2" in str(error.value) and f"{second}: 1 bad row out of 2" in str(error.value)
    data = prepare(sources, tok, on_bad_rows="skip", run_dir=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(r["file"], r["row"]) for r in records] == [(str(first), 1), (str(second), 1)]
    assert len(data.examples) == 2


def test_a_mixture_of_pairs_and_unpaired_rows_is_refused(workspace, tok, tmp_path):
    unpaired = write_unpaired(tmp_path / "u.jsonl")
    with pytest.raises(PrefkitError, match="a mixture must give examples of one kind") as error:
        prepare([{"path": workspace["data"]}, {"path": str(unpaired)}], tok)
    assert "(pairs)" in str(error.value) and "(single completions)" in str(error.value)


def test_nothing_skipped_writes_no_skipped_rows_file(workspace, tok, tmp_path):
    prepare(workspace["data"], tok, on_bad_rows="skip", run_dir=tmp_path)
    assert not (tmp_path / "skipped_rows.jsonl").exists()


def test_a_mixture_trains_from_the_command_line(workspace, tmp_path):
    mixture = json.dumps([{"path": workspace["data"], "weight": 0.5}, {"path": workspace["small"]}])
    assert main(["train", "--model", workspace["model"], "--output-dir", str(tmp_path), f"data={mixture}",
                 "max_steps=1", "batch_size=4", "progress=false", "on_bad_rows=skip"]) == 0
    assert set(json.loads((tmp_path / "run.json").read_text())["files"]) >= {"model", "data[0]", "data[1]"}
    assert not (tmp_path / "skipped_rows.jsonl").exists()


@pytest.mark.parametrize("as_file", [False, True], ids=["string", "file"])
def test_a_chat_template_override_shapes_the_prompt_and_is_saved(initial, task, tmp_path, as_file):
    from prefkit.tasks import preference_rows

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in preference_rows(task, task.prompts("transitive")[:8],
                                                                              3, seed=0)))
    template = NO_END
    if as_file:
        (tmp_path / "template.jinja").write_text(NO_END)
        template = str(tmp_path / "template.jinja")
    default, override = load_tokenizer(initial), load_tokenizer(initial, chat_template=template)
    end = default.convert_tokens_to_ids("<|end|>")
    assert end in prepare(data, default).examples[0].prompt_ids
    assert end not in prepare(data, override).examples[0].prompt_ids
    assert main(["train", "--model", initial, "--data", str(data), "--output-dir", str(tmp_path / "run"),
                 f"chat_template={json.dumps(template)}", "max_steps=1", "batch_size=4", "progress=false"]) == 0
    assert load_tokenizer(str(tmp_path / "run" / "final")).chat_template == NO_END


def test_prefkit_eval_reads_the_split_it_is_given(workspace, tmp_path, capsys):
    import datasets

    rows = [json.loads(line) for line in open(workspace["data"])]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:12]),
                          "test": datasets.Dataset.from_list(rows[12:])}).save_to_disk(str(tmp_path / "dd"))
    for split, pairs in (("test", 4), ("train", 12)):
        assert main(["eval", "--model", workspace["model"], "--data", str(tmp_path / "dd"), "--split", split,
                     "--out", str(tmp_path / split), "--grad-pairs", "2", "--max-prompts", "1", "--samples", "1",
                     "--max-new-tokens", "2"]) == 0
        results = json.loads((tmp_path / split / "eval.json").read_text())
        assert results["sections"]["ranking"]["pairs"] == pairs and results["inputs"]["split"] == split
    assert main(["eval", "--model", workspace["model"], "--data", str(tmp_path / "dd"), "--split", "dev"]) == 2
    assert "no split 'dev'; it has train, test" in capsys.readouterr().err
