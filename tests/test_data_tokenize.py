"""Token boundaries (prefix check, mismatch rules, EOS, BOS), two chat templates, truncation and fingerprints."""

import json

import pytest

from prefkit.data import prepare
from prefkit.errors import PrefkitError
from prefkit.modeling.tiny import tiny_tokenizer

CORPUS = ["The sky is blue. The sky is blue. The sky is green. Be brief. Be brief.",
          "hello there, how are you? What colour is the sky? blue blue blue"] * 8
# A Mistral-style template: the system prompt is glued to the *last* user message, so it moves once an answer
# follows the prompt (the rendered prompt is then not a prefix of the rendered conversation).
MISTRAL = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
           "{% set messages = messages[1:] %}{% endif %}{% for m in messages %}{% if m['role'] == 'user' %}"
           "[INST] {% if loop.last and system is defined %}{{ system }}\n\n{% endif %}{{ m['content'] }} [/INST]"
           "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
# ChatML-style with a newline after each end of turn (as Qwen's), so template text follows the EOS.
CHATML_NEWLINE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(CORPUS, vocab_size=400)


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def msg(role, text):
    return {"role": role, "content": text}


def full_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_standard_boundary_is_a_prefix_and_ends_with_one_eos(tmp_path, tok):
    rows = [{"prompt": "What colour is the sky?", "chosen": " blue.", "rejected": " green."},
            {"prompt": "What colour is the sky?", "chosen": " blue.<|end|>", "rejected": " green.<|end|><|end|>"}]
    data = prepare(write(tmp_path, rows), tok)
    for example in data.examples:
        assert example.prompt_ids == full_ids(tok, "What colour is the sky?")
        for completion in (example.chosen_ids, example.rejected_ids):
            assert completion[-1] == tok.eos_token_id and completion.count(tok.eos_token_id) == 1
        assert example.prompt_ids + example.chosen_ids[:-1] == full_ids(tok, "What colour is the sky? blue.")
    assert data.stats["eos_appended"] == 1 and data.stats["prefix_mismatch"] == 0


def test_bpe_merge_across_the_boundary_uses_the_mismatch_rule(tmp_path, tok):
    # "is " + "blue" : the prompt ends with a lone space token, the joined text merges it into " blue".
    assert full_ids(tok, "The sky is ")[-1] not in full_ids(tok, "The sky is blue.")
    data = prepare(write(tmp_path, [{"prompt": "The sky is ", "chosen": "blue.", "rejected": "green."}]), tok)
    example = data.examples[0]
    assert data.stats["prefix_mismatch"] == 1
    assert example.prompt_ids == full_ids(tok, "The sky is ")
    assert example.chosen_ids == full_ids(tok, "blue.") + [tok.eos_token_id]
    assert tok.decode(example.prompt_ids + example.chosen_ids) == "The sky is blue.<|end|>"


def test_eos_inside_a_standard_completion_is_a_bad_row(tmp_path, tok):
    rows = [{"prompt": "q", "chosen": " blue<|end|> and more", "rejected": " green"},
            {"prompt": "q", "chosen": "<|end|>", "rejected": " green"}]
    with pytest.raises(PrefkitError) as caught:
        prepare(write(tmp_path, rows), tok)
    assert "line 1, field 'chosen': contains the EOS token '<|end|>' before its end" in str(caught.value)
    assert "line 2, field 'chosen': empty completion (nothing but EOS)" in str(caught.value)


def test_chatml_template_boundary_without_double_bos_or_eos(tmp_path, tok):
    rows = [{"prompt": [msg("system", "Be brief."), msg("user", "What colour is the sky?")],
             "chosen": [msg("assistant", "blue")], "rejected": [msg("assistant", "green")]}]
    example = prepare(write(tmp_path, rows), tok).examples[0]
    prompt_text = "<s><|system|>Be brief.<|end|><|user|>What colour is the sky?<|end|><|assistant|>"
    assert example.prompt_ids == full_ids(tok, prompt_text)
    assert example.prompt_ids.count(tok.bos_token_id) == 1 and example.prompt_ids[0] == tok.bos_token_id
    assert tok.decode(example.chosen_ids) == "blue<|end|>"
    assert example.chosen_ids.count(tok.eos_token_id) == 1


def test_template_text_after_the_eos_is_not_part_of_the_completion(tmp_path):
    tok = tiny_tokenizer(CORPUS, vocab_size=400, chat_template=CHATML_NEWLINE)
    rows = [{"prompt": [msg("user", "hi")], "chosen": [msg("assistant", "blue")],
             "rejected": [msg("assistant", "green"), msg("user", "sure?"), msg("assistant", "yes")]}]
    example = prepare(write(tmp_path, rows), tok).examples[0]
    assert tok.decode(example.chosen_ids) == "blue<|end|>"  # not "blue<|end|>\n"
    # a multi-turn completion keeps its inner turns; it still ends with exactly one EOS
    assert tok.decode(example.rejected_ids) == "green<|end|>\n<|user|>sure?<|end|>\n<|assistant|>yes<|end|>"


def test_duplicated_system_prompt_in_implicit_conversations_appears_once(tmp_path, tok):
    system, question = msg("system", "Be brief."), msg("user", "What colour is the sky?")
    rows = [{"chosen": [system, question, msg("assistant", "blue")],
             "rejected": [system, question, msg("assistant", "green")]}]
    example = prepare(write(tmp_path, rows), tok).examples[0]
    assert tok.decode(example.prompt_ids).count("Be brief.") == 1
    assert tok.decode(example.prompt_ids).endswith("<|assistant|>")
    assert tok.decode(example.rejected_ids) == "green<|end|>"


def test_a_system_prompt_that_moves_uses_the_template_mismatch_rule(tmp_path):
    tok = tiny_tokenizer(CORPUS, vocab_size=400, chat_template=MISTRAL)
    rows = [{"prompt": [msg("system", "Be brief."), msg("user", "What colour is the sky?")],
             "chosen": [msg("assistant", "blue")], "rejected": [msg("assistant", "green")]},
            {"prompt": [msg("user", "What colour is the sky?")],  # no system prompt: an ordinary prefix
             "chosen": [msg("assistant", "blue")], "rejected": [msg("assistant", "green")]}]
    data = prepare(write(tmp_path, rows), tok)
    moved, plain = data.examples
    assert data.stats["template_mismatch"] == 1
    # the prompt is what generation sees (system prompt included, once); the completion is what follows it
    assert tok.decode(moved.prompt_ids) == "<s>[INST] Be brief.\n\nWhat colour is the sky? [/INST]"
    assert tok.decode(moved.chosen_ids) == " blue<|end|>" and tok.decode(moved.rejected_ids) == " green<|end|>"
    assert tok.decode(plain.prompt_ids) == "<s>[INST] What colour is the sky? [/INST]"
    assert plain.chosen_ids == moved.chosen_ids


def test_the_same_rows_under_two_templates_keep_the_completion_text(tmp_path, tok):
    mistral = tiny_tokenizer(CORPUS, vocab_size=400, chat_template=MISTRAL)
    rows = [{"prompt": [msg("user", "hi")], "completion": [msg("assistant", "hello there")], "label": True}]
    chatml_example = prepare(write(tmp_path, rows), tok).examples[0]
    mistral_example = prepare(write(tmp_path, rows), mistral).examples[0]
    assert tok.decode(chatml_example.completion_ids) == "hello there<|end|>"
    assert mistral.decode(mistral_example.completion_ids) == " hello there<|end|>"
    assert tok.decode(chatml_example.prompt_ids) != mistral.decode(mistral_example.prompt_ids)


def test_a_tokenizer_that_adds_bos_never_gives_two(tmp_path):
    from tokenizers import processors
    tok = tiny_tokenizer(CORPUS, vocab_size=400)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    assert tok("sky")["input_ids"][0] == tok.bos_token_id
    rows = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            {"prompt": "<s>The sky is", "chosen": " blue.", "rejected": " green."}]
    data = prepare(write(tmp_path, rows), tok)
    for example in data.examples:
        assert example.prompt_ids[0] == tok.bos_token_id and example.prompt_ids.count(tok.bos_token_id) == 1
        assert example.prompt_ids == [tok.bos_token_id] + full_ids(tok, "The sky is")
    assert data.stats["double_bos_removed"] == 1


def test_an_empty_prompt_without_bos_is_a_bad_row(tmp_path, tok):
    with pytest.raises(PrefkitError, match="line 1, field 'prompt': the prompt has no tokens"):
        prepare(write(tmp_path, [{"prompt": "", "chosen": " blue", "rejected": " green"}]), tok)


def test_conversational_data_needs_a_chat_template(tmp_path):
    tok = tiny_tokenizer(CORPUS, vocab_size=400, chat_template=None)
    rows = [{"prompt": [msg("user", "hi")], "chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]}]
    with pytest.raises(PrefkitError, match="conversational data needs a tokenizer with a chat template"):
        prepare(write(tmp_path, rows), tok)


LONG = {"prompt": "The sky is blue. The sky is green.", "chosen": " blue blue blue blue blue blue.",
        "rejected": " green."}


def lengths(example):
    return len(example.prompt_ids), len(example.chosen_ids), len(example.rejected_ids)


def test_keep_start_cuts_the_end_of_the_completion(tmp_path, tok):
    full = lengths(prepare(write(tmp_path, [LONG]), tok, max_length=None).examples[0])
    data = prepare(write(tmp_path, [LONG]), tok, max_length=full[0] + 3)
    example = data.examples[0]
    assert lengths(example) == (full[0], 3, min(3, full[2]))
    assert tok.eos_token_id not in example.chosen_ids  # cut text does not end: no EOS, as TRL does
    assert data.stats["truncated"] == 1


def test_keep_end_cuts_the_start_of_the_prompt_and_keeps_bos(tmp_path, tok):
    rows = [{"prompt": [msg("user", LONG["prompt"])], "chosen": [msg("assistant", LONG["chosen"])],
             "rejected": [msg("assistant", LONG["rejected"])]}]
    untruncated = prepare(write(tmp_path, rows), tok, max_length=None).examples[0]
    p, c, r = lengths(untruncated)
    data = prepare(write(tmp_path, rows), tok, max_length=c + 4, truncation="keep_end")
    example = data.examples[0]
    assert (example.chosen_ids, example.rejected_ids) == (untruncated.chosen_ids, untruncated.rejected_ids)
    assert example.prompt_ids == untruncated.prompt_ids[:1] + untruncated.prompt_ids[-3:]
    assert example.prompt_ids[0] == tok.bos_token_id
    assert data.stats["truncated"] == 1


def test_drop_drops_the_row_and_counts_it(tmp_path, tok):
    short = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}
    data = prepare(write(tmp_path, [LONG, short]), tok, max_length=12, truncation="drop")
    assert [e.row for e in data.examples] == [2]
    assert data.stats["dropped"] == 1 and data.stats["skipped"] == 0 and data.stats["truncated"] == 0


def test_nothing_left_after_truncation_is_a_bad_row(tmp_path, tok):
    prompt_length = len(full_ids(tok, LONG["prompt"]))
    with pytest.raises(PrefkitError, match=f"line 1, field 'prompt': the prompt alone has {prompt_length} tokens "
                                           f"and max_length is {prompt_length}: nothing of the completion is left"):
        prepare(write(tmp_path, [LONG]), tok, max_length=prompt_length)
    chosen_length = len(full_ids(tok, LONG["chosen"])) + 1
    with pytest.raises(PrefkitError, match=f"line 1, field 'chosen': the completion alone has {chosen_length} "
                                           "tokens and max_length is 5: no prompt token is left"):
        prepare(write(tmp_path, [LONG]), tok, max_length=5, truncation="keep_end")


def test_fingerprint_follows_the_examples_and_the_settings(tmp_path, tok):
    path = write(tmp_path, [LONG])
    base = prepare(path, tok).fingerprint
    assert len(base) == 64 and base == prepare(path, tok).fingerprint
    assert prepare(path, tok, max_length=12).fingerprint != base
    assert prepare(path, tok, truncation="keep_end").fingerprint != base
    other = write(tmp_path, [dict(LONG, rejected=" grey.")], name="other.jsonl")
    assert prepare(other, tok).fingerprint != base
    weighted = write(tmp_path, [dict(LONG, weight=0.5)], name="weighted.jsonl")
    assert prepare(weighted, tok).fingerprint != base


class CountingTokenizer:
    """The tokenizer, recording the length of every text it is asked to tokenize."""

    def __init__(self, tokenizer):
        self._tokenizer, self.lengths = tokenizer, []

    def __call__(self, text, **kwargs):
        self.lengths.append(len(text))
        return self._tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def encode_both(tok, record, max_length, truncation):
    """(the outcome with the character cap, the outcome for the whole row) of one record: the encoding, or the
    bad-row problem."""
    from prefkit.data.tokenize import Encoder, RowProblem

    style = "standard" if isinstance(record.prompt, str) else "conversational"
    capped, whole = Encoder(tok, style, max_length, truncation), Encoder(tok, style, max_length, truncation)
    whole.max_chars = None
    outcomes = []
    for encoder in (capped, whole):
        try:
            outcomes.append(encoder.encode(record))
        except RowProblem as problem:
            outcomes.append((problem.field, problem.reason))
    return outcomes


WORDS = "The sky is blue. hello there, how are you? What colour is the sky? ".split()


@pytest.mark.parametrize("truncation", ["keep_start", "keep_end", "drop"])
def test_the_character_cap_changes_no_row_that_fits(tok, truncation):
    import random

    from prefkit.data.formats import Record

    rng = random.Random(0)
    for _ in range(40):  # lengths around max_length, on both sides of it
        text = lambda n: " " + " ".join(rng.choices(WORDS, k=n))  # noqa: E731
        record = Record(1, text(rng.randint(1, 30)).strip(), {"chosen": text(rng.randint(1, 30)),
                                                              "rejected": text(rng.randint(1, 30))})
        capped, whole = encode_both(tok, record, 24, truncation)
        assert capped == whole


def test_a_huge_conversational_row_is_cut_before_it_is_tokenized(tok):
    from prefkit.data.formats import Record
    from prefkit.data.tokenize import Encoder

    huge = "The sky is blue. " * 600_000  # 10 MB in one message
    record = Record(1, [msg("user", "What colour is the sky?")], {"chosen": [msg("assistant", huge)],
                                                                  "rejected": [msg("assistant", "green.")]})
    counting = CountingTokenizer(tok)
    encoder = Encoder(counting, "conversational", 64, "keep_start")
    encoded = encoder.encode(record)
    assert max(counting.lengths) < encoder.max_chars + 200 < 10_000  # the template adds a few characters
    short = Record(1, record.prompt, {"chosen": [msg("assistant", huge[:2000])], "rejected": [msg("assistant", "green.")]})
    assert encoded == Encoder(tok, "conversational", 64, "keep_start").encode(short)
    assert "truncated" in encoded.events and len(encoded.prompt_ids) + len(encoded.completions["chosen"]) == 64


def test_a_huge_prompt_under_keep_end_keeps_its_end(tok):
    from prefkit.data.formats import Record

    record = Record(1, "hello there, " * 5_000 + "What colour is the sky?", {"chosen": " blue.", "rejected": " green."})
    capped, whole = encode_both(tok, record, 32, "keep_end")
    assert capped == whole  # whole tokenizes 65 kB; capped only the prompt's last characters
    assert encode_both(tok, record, 32, "drop")[0] is None
