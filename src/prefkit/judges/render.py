"""Turning prompts and responses into the text a model judge reads.

Prompts and responses come as TRL rows carry them: plain strings (the standard format) or conversational lists of
{"role", "content"} messages. As in TRL, strings are used as they are and conversations go through the judge
tokenizer's chat template; a tokenizer without one gets the message contents joined by blank lines.
"""

from __future__ import annotations

from prefkit.errors import PrefkitError


def is_conversation(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in value)


def messages(value, role: str) -> list[dict]:
    """`value` as a list of messages; a string becomes one message with `role`."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if is_conversation(value):
        return [dict(m) for m in value]
    raise PrefkitError(f"expected a string or a list of {{'role', 'content'}} messages; got {type(value).__name__} "
                       f"{str(value)[:60]!r}")


def content(value) -> str:
    """The text of a response: the string itself, or its messages' contents joined by blank lines."""
    return value if isinstance(value, str) else "\n\n".join(m["content"] for m in messages(value, "assistant"))


def exchange(tokenizer, prompt, response) -> str:
    """Prompt followed by response, as a reward model reads it: concatenated strings, or the whole conversation
    (user turn(s) then the assistant turn) through the chat template when either side is conversational."""
    if isinstance(prompt, str) and isinstance(response, str):
        return prompt + response
    turns = messages(prompt, "user") + messages(response, "assistant")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False)
    return "\n\n".join(m["content"] for m in turns)


def prompt_text(tokenizer, prompt) -> str:
    """A prompt on its own (the pairwise judge's prompt slot): the string, or the conversation through the chat
    template with the generation prompt (what the policy saw), without a leading BOS since the judge's whole
    input gets one when the tokenizer adds it."""
    if isinstance(prompt, str):
        return prompt
    turns = messages(prompt, "user")
    if not getattr(tokenizer, "chat_template", None):
        return "\n\n".join(m["content"] for m in turns)
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return text[len(bos):] if bos and text.startswith(bos) else text
