"""Token ids with an exact prompt/completion boundary: the part most often silently wrong in preference training.

For each row the prompt is rendered and tokenized on its own (what generation sees), and so is prompt +
completion (what training sees). The rules, in order:

1. Rendering. Standard rows are plain text, no chat template: prompt_ids = the tokenizer's leading special
   tokens (BOS, if it adds one) + the prompt's tokens, full text = prompt + completion. Conversational rows go
   through `tokenizer.apply_chat_template`: the prompt with the generation prompt (when the completion starts
   with an assistant turn), the full conversation without it; the template's own text (its BOS included) is
   tokenized with add_special_tokens=False, so BOS is never added twice.
2. Boundary. When the prompt ids are a prefix of the full ids, the completion is the rest. When they are not
   (a BPE merge across the boundary), the completion text is tokenized on its own and appended to the prompt
   ids, as generation would produce it; the row counts in `prefix_mismatch`. When the template renders the
   prompt differently once an answer follows it (a system prompt that moves, a default one that appears), the
   completion text is what follows the prompt's last message and the generation prompt in the rendered
   conversation (else: the conversation from the first completion message's content on), tokenized on its
   own and appended to the prompt ids; the row counts in `template_mismatch`.
3. EOS. Each completion ends with exactly one EOS (`tokenizer.eos_token`): template text after the last EOS
   (ChatML's "\\n") is not generated and is dropped; a missing EOS is appended; a repeated one is collapsed. A
   completion whose text holds a special token's text (EOS before its end, a role marker) is a bad row: the
   tokenizer would read it as the control token. Truncated completions end where they are cut.
4. BOS. A prompt that starts with BOS twice (text that already holds it, plus the tokenizer's) keeps one.
5. Truncation to `max_length` prompt+completion tokens, per sequence: `keep_start` cuts the completion's end
   (TRL's default), `keep_end` cuts the prompt's start after its BOS (the shared prompt is cut to fit the
   longer completion), `drop` drops the row. A row with nothing of its completion (or prompt) left is bad.
   Fields are first cut to a number of characters that no max_length tokens can span, so a huge row is never
   tokenized whole; a row that fits is not changed by this.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from prefkit.data.formats import Record
from prefkit.errors import PrefkitError


EMPTY_COMPLETION = "empty completion (nothing but EOS)"


class RowProblem(Exception):
    """A row that cannot be tokenized as asked; `prepare` reports it as a bad row."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


@dataclass
class Encoded:
    prompt_ids: list[int]
    completions: dict[str, list[int]]
    events: set[str]  # truncated, prefix_mismatch, template_mismatch, eos_appended, double_bos_removed


class Encoder:
    def __init__(self, tokenizer, style: str, max_length: int | None, truncation: str, check_control: bool = True):
        if truncation not in TRUNCATIONS:
            raise PrefkitError(f"truncation={truncation!r}: use one of {', '.join(TRUNCATIONS)}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 2):
            raise PrefkitError(f"max_length={max_length!r}: use an integer >= 2, or None for no limit")
        if tokenizer.eos_token_id is None:
            raise PrefkitError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token: completions need one")
        if style == "conversational" and not getattr(tokenizer, "chat_template", None):
            raise PrefkitError(f"conversational data needs a tokenizer with a chat template; "
                               f"{tokenizer.name_or_path!r} has none")
        self.tokenizer, self.style, self.max_length, self.truncation = tokenizer, style, max_length, truncation
        self.eos, self.bos = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.leading = _leading_special_ids(tokenizer) if style == "standard" else []
        # data must not hold a special token's text (see _check_control_text); a judge reads any answer as it is
        self.control = _control_pattern(tokenizer) if check_control else None
        # No token spans more characters than the vocabulary's longest entry, so a field longer than this has
        # more than max_length tokens; the factor 2 leaves room for normalizers that drop characters.
        longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
        self.max_chars = None if max_length is None else 2 * max_length * max(longest, 1)

    def encode(self, record: Record) -> Encoded | None:
        """The row's ids, or None when the `drop` policy drops it. Raises RowProblem for a bad row."""
        events: set[str] = set()
        record, capped = self._capped(record)
        if capped and self.truncation == "drop":
            return None
        self._check_control_text(record)
        prompt_text, full_texts = _RENDERERS[self.style](self, record)
        raw_prompt = self.leading + self._ids(prompt_text)
        prompt = raw_prompt
        while self.bos is not None and len(prompt) >= 2 and prompt[0] == prompt[1] == self.bos:
            prompt = prompt[1:]
            events.add("double_bos_removed")
        if not prompt:
            raise RowProblem("prompt", "the prompt has no tokens and the tokenizer adds no BOS: the first "
                                       "completion token would have no context")
        completions = {}
        for name, full_text in full_texts.items():
            ids = self._split(prompt_text, raw_prompt, full_text, record, name, events)
            completions[name] = self._end_with_eos(ids, name, events)
        total = len(prompt) + max(len(ids) for ids in completions.values())
        if self.max_length is None or total <= self.max_length:
            return Encoded(prompt, completions, events)
        truncated = TRUNCATIONS[self.truncation](prompt, completions, self.max_length, self.bos)
        if truncated is None:
            return None
        events.add("truncated")
        return Encoded(*truncated, events)

    def _capped(self, record: Record) -> tuple[Record, bool]:
        """(the row cut to `max_chars` characters per field, whether anything was cut), so that a huge row costs
        no more than truncation keeps of it. Each field is cut on the side truncation would cut: the prompt's
        start under keep_end, else ends. A row that fits is never cut (see `max_chars`)."""
        limit = self.max_chars
        if limit is None or all(_length(value) <= limit for value in (record.prompt, *record.completions.values())):
            return record, False
        prompt = _cut(record.prompt, limit, keep_end=self.truncation == "keep_end")
        completions = {name: _cut(value, limit, keep_end=False) for name, value in record.completions.items()}
        return dataclasses.replace(record, prompt=prompt, completions=completions), True

    def _check_control_text(self, record: Record) -> None:
        """A completion must not hold the text of a special token (EOS, a role marker): the tokenizer would turn
        it into the control token, and training would teach the model to emit it mid-answer. EOS text at the very
        end of a text is allowed: it says where the answer ends, as the EOS appended anyway does."""
        if self.control is None:
            return
        eos = self.tokenizer.eos_token
        for name, value in record.completions.items():
            for text in [value] if isinstance(value, str) else [message["content"] for message in value]:
                while eos and text.endswith(eos):
                    text = text[:-len(eos)]
                found = self.control.search(text)
                if found and found.group() == eos:
                    raise RowProblem(name, f"contains the EOS token {eos!r} before its end")
                if found:
                    raise RowProblem(name, f"contains {found.group()!r}, the text of one of the tokenizer's special "
                                           "tokens (a control token, not data)")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _split(self, prompt_text, prompt_ids, full_text, record, name, events) -> list[int]:
        if full_text.startswith(prompt_text):
            full_ids = self.leading + self._ids(full_text)
            if full_ids[:len(prompt_ids)] == prompt_ids:
                return full_ids[len(prompt_ids):]
            events.add("prefix_mismatch")
            return self._ids(full_text[len(prompt_text):])
        events.add("template_mismatch")
        return self._ids(_locate_completion(prompt_text, full_text, record, name))

    def _end_with_eos(self, ids: list[int], name: str, events: set[str]) -> list[int]:
        eos = self.eos
        if self.style == "conversational" and eos in ids:
            ids = ids[:len(ids) - ids[::-1].index(eos)]
        ended = bool(ids) and ids[-1] == eos
        while ids and ids[-1] == eos:
            ids = ids[:-1]
        if not ids:
            raise RowProblem(name, EMPTY_COMPLETION)
        if self.style == "standard" and eos in ids:
            raise RowProblem(name, f"contains the EOS token {self.tokenizer.eos_token!r} before its end")
        if not ended:
            events.add("eos_appended")
        return ids + [eos]


def _render_standard(encoder: Encoder, record: Record) -> tuple[str, dict[str, str]]:
    return record.prompt, {name: record.prompt + text for name, text in record.completions.items()}


def _render_chat(encoder: Encoder, record: Record) -> tuple[str, dict[str, str]]:
    template = encoder.tokenizer.apply_chat_template
    generation = all(messages[0]["role"] == "assistant" for messages in record.completions.values())
    field, full = "prompt", {}
    try:
        prompt = template(record.prompt, tokenize=False, add_generation_prompt=generation)
        for field, messages in record.completions.items():
            full[field] = template(record.prompt + messages, tokenize=False)
    except Exception as error:  # jinja raises whatever the template author chose (TemplateError, ...)
        raise RowProblem(field, f"the chat template failed: {error}") from None
    return prompt, full


_RENDERERS = {"standard": _render_standard, "conversational": _render_chat}


def _locate_completion(prompt_text: str, full_text: str, record: Record, name: str) -> str:
    """The completion's text when the rendered prompt is not a prefix of the rendered conversation: what follows
    the prompt's last message and the generation prompt in the conversation (so a template's " " before the
    answer is kept), else the conversation from the completion's first content on. Both are searched from the
    end, since the completion is the conversation's tail (a prompt that quotes the answer does not confuse it)."""
    start = len(full_text)
    for message in reversed(record.completions[name]):
        start = full_text.rfind(message["content"], 0, start)
        if start < 0:
            raise RowProblem(name, "the chat template renders the prompt differently when a completion follows "
                                   "it, and the completion's text cannot be found in the rendered conversation")
    anchor = record.prompt[-1]["content"] if record.prompt else ""
    in_prompt, in_full = prompt_text.rfind(anchor), full_text.rfind(anchor, 0, start)
    if anchor and in_prompt >= 0 and in_full >= 0:
        generation_prompt = prompt_text[in_prompt + len(anchor):]
        after = in_full + len(anchor)
        if full_text.startswith(generation_prompt, after) and after + len(generation_prompt) <= start:
            return full_text[after + len(generation_prompt):]
    return full_text[start:]


def _control_pattern(tokenizer) -> re.Pattern | None:
    """What finds the text of the tokenizer's special tokens, or None when it has none or reads them as text."""
    if getattr(tokenizer, "split_special_tokens", False):
        return None
    added = getattr(tokenizer, "added_tokens_decoder", {})
    specials = {token.content for token in added.values() if token.special} | set(tokenizer.all_special_tokens)
    specials.discard("")
    if not specials:
        return None
    return re.compile("|".join(re.escape(token) for token in sorted(specials, key=len, reverse=True)))


def _length(value) -> int:
    return len(value) if isinstance(value, str) else sum(len(message["content"]) for message in value)


def _cut(value, limit: int, keep_end: bool):
    """`value` cut to `limit` characters: a string, or messages whose contents share the limit (messages past
    it keep their place, empty, so the template renders the same turns)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[len(value) - limit:] if keep_end else value[:limit]
    out = []
    for message in reversed(value) if keep_end else value:
        content = _cut(message["content"], limit, keep_end)
        limit -= len(content)
        out.append({**message, "content": content})
    return out[::-1] if keep_end else out


def _leading_special_ids(tokenizer) -> list[int]:
    """The special ids the tokenizer puts before any text (BOS for Llama-style tokenizers, often nothing)."""
    with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return with_special[:start]
    return []


def _keep_start(prompt, completions, max_length, bos):
    room = max_length - len(prompt)
    if room < 1:
        raise RowProblem("prompt", f"the prompt alone has {len(prompt)} tokens and max_length is {max_length}: "
                                   "nothing of the completion is left (truncation='keep_start')")
    return prompt, {name: ids[:room] for name, ids in completions.items()}


def _keep_end(prompt, completions, max_length, bos):
    name, longest = max(((name, len(ids)) for name, ids in completions.items()), key=lambda item: item[1])
    if longest >= max_length:
        raise RowProblem(name, f"the completion alone has {longest} tokens and max_length is {max_length}: "
                               "no prompt token is left (truncation='keep_end')")
    cut = len(prompt) + longest - max_length
    keep = prompt[:1] if bos is not None and prompt[0] == bos else []
    return keep + prompt[len(keep) + cut:], completions


def _drop(prompt, completions, max_length, bos):
    return None


TRUNCATIONS = {"keep_start": _keep_start, "keep_end": _keep_end, "drop": _drop}
