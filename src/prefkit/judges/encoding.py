"""Token ids of (prompt, response) for a judge that prefkit trained: exactly the ids `prefkit.data.prepare` gave
it in training (prompt ids + completion ids, the completion ending with one EOS), so that the judge reads a
response the way it learned to. Unlike training data, any answer is read, including an empty one and one that
holds a special token's text (a policy writes both). The text path of the other model judges (render.py)
differs for plain-string rows, where the data pipeline appends the EOS that the judge's head then reads.
"""

from __future__ import annotations

from prefkit.data.formats import Record
from prefkit.data.tokenize import EMPTY_COMPLETION, Encoded, Encoder, RowProblem
from prefkit.judges.heads import HeadSettings
from prefkit.judges.render import is_conversation, messages


class TrainedEncoding:
    """`encoding(prompt, response) -> (prompt ids, prompt + response ids)`, as in training."""

    def __init__(self, tokenizer, settings: HeadSettings):
        self.tokenizer, self.settings = tokenizer, settings
        self._encoders: dict[str, Encoder] = {}

    def _encode(self, prompt, response):
        # trained on conversations, a judge reads strings as the user's and the assistant's messages, as the policy
        # that wrote them saw them (a self-play prompts file holds strings); one side a string: the same
        conversational = self.settings.style == "conversational" or is_conversation(prompt) or \
            is_conversation(response)
        style = "conversational" if conversational else "standard"
        if style == "conversational":
            prompt, response = messages(prompt, "user"), messages(response, "assistant")
        if style not in self._encoders:
            self._encoders[style] = Encoder(self.tokenizer, style, self.settings.max_length,
                                            self.settings.truncation, check_control=False)
        encoded = self._encode_with(self._encoders[style], prompt, response)
        if encoded is None:  # truncation: drop dropped it; a judge must still answer, so keep the start
            keep_start = Encoder(self.tokenizer, style, self.settings.max_length, "keep_start", check_control=False)
            encoded = self._encode_with(keep_start, prompt, response)
        return encoded

    def _encode_with(self, encoder: Encoder, prompt, response) -> Encoded | None:
        try:
            return encoder.encode(Record(0, prompt, {"completion": response}))
        except RowProblem as problem:
            if problem.reason != EMPTY_COMPLETION:
                raise
        # a policy may answer with EOS alone; training data holds no such row, but a judge must still answer: it
        # reads the prompt, then EOS (the prompt's ids come from encoding it with a one-character answer)
        filler = "." if isinstance(response, str) else [{"role": "assistant", "content": "."}]
        encoded = encoder.encode(Record(0, prompt, {"completion": filler}))
        return None if encoded is None else Encoded(encoded.prompt_ids, {"completion": [self.tokenizer.eos_token_id]},
                                                    encoded.events)

    def __call__(self, prompt, response) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(the prompt's ids, what the GPM gate reads; the ids of prompt + response), as tuples (hashable, so a
        judge scores each distinct text once)."""
        encoded = self._encode(prompt, response)
        return tuple(encoded.prompt_ids), tuple(encoded.prompt_ids + encoded.completions["completion"])
