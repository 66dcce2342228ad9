"""What a row of preference data looks like, and which rows are bad.

The accepted formats are TRL's, so data sets made for TRL load as they are:

- preference, explicit prompt:  {"prompt", "chosen", "rejected"}
- preference, implicit prompt:  {"chosen", "rejected"}  (the shared prefix becomes the prompt)
- unpaired:                     {"prompt", "completion", "label": bool}
- scored list:                  {"prompt", "completions": [...], "scores": [numbers]}, or UltraFeedback's
                                {"prompt" | "instruction", "completions": [{"response" | "text",
                                "overall_score" | "score"}, ...]}: K >= 2 completions of one prompt, each scored

each either *standard* (strings) or *conversational* (lists of {"role", "content"} messages), with optional
per-row "score", "margin" and "weight" (finite numbers). The format is detected once from the columns; each
row is then checked on its own, and every problem is reported as a `BadRow` (row, field, reason), never only
the first one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from prefkit.errors import PrefkitError

# The fields that hold completions, by kind; their presence in the columns decides the kind.
COMPLETION_FIELDS = {"preference": ("chosen", "rejected"), "unpaired": ("completion",), "scored-list": ("completions",)}
# Columns a kind cannot do without (the prompt is optional only for preference data: then it is implicit).
REQUIRED_COLUMNS = {"preference": ("chosen", "rejected"), "unpaired": ("prompt", "completion", "label"),
                    "scored-list": ("prompt", "completions")}
# A scored list's completion may be an object (UltraFeedback's layout): its text and its score, first key found.
ITEM_TEXT_KEYS, ITEM_SCORE_KEYS = ("response", "text"), ("overall_score", "score")
LIST_PROMPT_FIELDS = ("prompt", "instruction")  # UltraFeedback names the prompt `instruction`
NUMBER_FIELDS = {"score": None, "margin": None, "weight": 0.0}  # optional numeric fields and their minimum


@dataclass(frozen=True)
class DataFormat:
    """preference|unpaired|scored-list, explicit|implicit prompt, standard|conversational; `prompt_field` is the
    column that holds an explicit prompt."""

    kind: str
    prompt: str
    style: str
    prompt_field: str = "prompt"

    def __str__(self) -> str:
        return f"{self.kind}, {self.prompt} prompt, {self.style}"


@dataclass(frozen=True)
class BadRow:
    """One problem with one row. `field` is None when the row itself is unreadable (a JSONL line that is not
    JSON). `row` is the 1-based line for JSONL and the 1-based row index for every other source."""

    row: int
    field: str | None
    reason: str


@dataclass
class Record:
    """A valid row, normalised: the prompt made explicit, completions by field name."""

    row: int
    prompt: str | list[dict]
    completions: dict[str, str | list[dict]]
    label: bool | None = None
    numbers: dict[str, float] = field(default_factory=dict)  # score / margin / weight, those given
    scores: list[float] | None = None  # a scored list's: one per completion, in the row's order


def detect_format(rows: list[tuple[int, object]], source: str) -> DataFormat:
    """The format, from the columns that have a value in at least one row and from the first completion."""
    dicts = [raw for _, raw in rows if isinstance(raw, dict)]
    if not dicts:
        raise PrefkitError(f"{source}: no rows to read")
    columns = {key for raw in dicts for key, value in raw.items() if value is not None}
    kinds = [kind for kind, fields in COMPLETION_FIELDS.items() if columns & set(fields)]
    if len(kinds) != 1:
        raise PrefkitError(
            f"{source}: cannot tell the format from the columns {sorted(columns)}: expected preference rows "
            "(prompt, chosen, rejected; prompt optional), unpaired rows (prompt, completion, label) or scored "
            "lists (prompt, completions, scores)")
    kind = kinds[0]
    fields = LIST_PROMPT_FIELDS if kind == "scored-list" else ("prompt",)
    prompt_field = next((name for name in fields if name in columns), "prompt")
    present = columns | {"prompt"} if prompt_field in columns else columns
    missing = [name for name in REQUIRED_COLUMNS[kind] if name not in present]
    if missing:
        raise PrefkitError(f"{source}: {kind} data needs the column(s) {', '.join(missing)}; "
                           f"found {', '.join(sorted(columns))}")
    first = next((text for text in (_first_completion(raw, kind) for raw in dicts) if isinstance(text, (str, list))),
                 "")
    style = "conversational" if isinstance(first, list) else "standard"
    return DataFormat(kind, "explicit" if prompt_field in columns else "implicit", style, prompt_field)


def _first_completion(raw: dict, kind: str):
    value = raw.get(COMPLETION_FIELDS[kind][0])
    if kind == "scored-list":
        return _item_text(value[0]) if isinstance(value, list) and value else None
    return value


def parse_row(raw: object, row: int, fmt: DataFormat) -> tuple[Record | None, list[BadRow]]:
    """The row as a `Record`, or every problem found in it."""
    if not isinstance(raw, dict):
        return None, [BadRow(row, None, f"expected an object with named fields, got {type(raw).__name__}")]
    if fmt.kind == "scored-list":
        return _parse_list(raw, row, fmt)
    problems: list[BadRow] = []
    names = (("prompt",) if fmt.prompt == "explicit" else ()) + COMPLETION_FIELDS[fmt.kind]
    for name in names:
        reason = _check_text(raw.get(name), fmt.style, is_prompt=name == "prompt")
        if reason:
            problems.append(BadRow(row, name, reason))
    label = raw.get("label")
    if fmt.kind == "unpaired" and not isinstance(label, bool):
        problems.append(BadRow(row, "label", "missing" if label is None else f"expected true or false, got {label!r}"))
    numbers, number_problems = _numbers(raw, row)
    problems += number_problems
    if problems:
        return None, problems

    completions = {name: raw[name] for name in COMPLETION_FIELDS[fmt.kind]}
    if fmt.kind == "preference" and completions["chosen"] == completions["rejected"]:
        return None, [BadRow(row, "rejected", "identical to chosen")]
    prompt = raw.get("prompt")
    if fmt.prompt == "implicit":
        split = split_implicit_prompt(completions["chosen"], completions["rejected"])
        if split is None:
            return None, [BadRow(row, "chosen", "implicit prompt: chosen and rejected share no prefix")]
        prompt, completions["chosen"], completions["rejected"] = split
        problems = [BadRow(row, name, "empty completion once the shared prompt is removed")
                    for name, value in completions.items() if _is_empty(value)]
        if problems:
            return None, problems
    return Record(row, prompt, completions, label if fmt.kind == "unpaired" else None, numbers), []


def _numbers(raw: dict, row: int) -> tuple[dict[str, float], list[BadRow]]:
    """The row's optional score / margin / weight, and the problems with them."""
    numbers, problems = {}, []
    for name, minimum in NUMBER_FIELDS.items():
        value = raw.get(name)
        reason = _check_number(name, value, minimum)
        if reason:
            problems.append(BadRow(row, name, reason))
        elif value is not None:
            numbers[name] = float(value)
    return numbers, problems


def _parse_list(raw: dict, row: int, fmt: DataFormat) -> tuple[Record | None, list[BadRow]]:
    """A scored list: at least two completions, each with a finite score (from `scores`, or from the completion
    object's own key), no two the same. Problems name the field: completions[2], scores[0],
    completions[1].overall_score."""
    problems = [BadRow(row, fmt.prompt_field, reason) for reason in
                [_check_text(raw.get(fmt.prompt_field), fmt.style, is_prompt=True)] if reason]
    numbers, number_problems = _numbers(raw, row)
    problems += number_problems
    items, scores = raw.get("completions"), raw.get("scores")
    if not isinstance(items, list) or len(items) < 2:
        return None, problems + [BadRow(row, "completions", "expected a list of at least 2 completions, got "
                                                            f"{items!r:.60}")]
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(items)):
        return None, problems + [BadRow(row, "scores", f"expected a list of {len(items)} numbers (one per "
                                                       f"completion), got {scores!r:.60}")]
    if scores is None and not all(isinstance(item, dict) for item in items):
        return None, problems + [BadRow(row, "scores", "missing: give a 'scores' list, or completions as objects "
                                                       f"with one of {', '.join(ITEM_SCORE_KEYS)}")]
    texts, values = {}, []
    for i, item in enumerate(items):
        name, text = f"completions[{i}]", _item_text(item)
        score_field, score = _item_score(item, i, scores)
        same = next((other for other, seen in texts.items() if seen == text), None)
        text_problem = _check_text(text, fmt.style, is_prompt=False) or (same and f"identical to {same}")
        score_problem = "missing" if score is None else _check_number("score", score, None)
        problems += [BadRow(row, where, reason) for where, reason in ((name, text_problem), (score_field, score_problem))
                     if reason]
        texts[name] = text
        values.append(score)
    if problems:
        return None, problems
    return Record(row, raw[fmt.prompt_field], texts, None, numbers, [float(v) for v in values]), []


def _item_text(item):
    """A scored list's completion: itself (a string or messages), or its object's text."""
    if isinstance(item, dict):
        return next((item[key] for key in ITEM_TEXT_KEYS if key in item), None)
    return item


def _item_score(item, i: int, scores: list | None) -> tuple[str, object]:
    """(the field that holds completion i's score, the score)."""
    if scores is not None:
        return f"scores[{i}]", scores[i]
    key = next((key for key in ITEM_SCORE_KEYS if key in item), ITEM_SCORE_KEYS[0])
    return f"completions[{i}].{key}", item.get(key)


def split_implicit_prompt(chosen, rejected):
    """(prompt, chosen rest, rejected rest), or None when nothing is shared.

    Conversational: the longest shared prefix of whole messages. Standard: the longest shared prefix of the
    strings, cut back to the start of its last whitespace run so that no word is split and the whitespace goes
    with the completion (where byte-level BPE vocabularies attach it: " blue", not "blue"); a shared prefix
    with no whitespace at all is kept as it is (TRL's rule)."""
    if isinstance(chosen, list):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        return (chosen[:n], chosen[n:], rejected[n:]) if n else None
    common = os.path.commonprefix([chosen, rejected])
    last_space = re.search(r"\s+\S*$", common)
    cut = last_space.start() if last_space and last_space.start() > 0 else len(common)
    return (chosen[:cut], chosen[cut:], rejected[cut:]) if cut else None


def _check_text(value, style: str, *, is_prompt: bool) -> str | None:
    if value is None:
        return "missing"
    if style == "standard":
        if not isinstance(value, str):
            return f"expected a string (standard format), got {_type_name(value)}"
    else:
        if not isinstance(value, list):
            return f"expected a list of {{role, content}} messages (conversational format), got {_type_name(value)}"
        for i, message in enumerate(value, 1):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"message {i}: expected an object with a 'role' string, got {message!r:.60}"
            if not isinstance(message.get("content"), str):
                return f"message {i}: 'content' must be a string, got {_type_name(message.get('content'))}"
    if not is_prompt and _is_empty(value):
        return "empty completion"
    return None


def _is_empty(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return not any(message["content"].strip() for message in value)


def _check_number(name: str, value, minimum: float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {value!r:.40}"
    if not math.isfinite(value):
        return f"not a finite number: {value}"
    if minimum is not None and value < minimum:
        return f"{name} must be >= {minimum:g}, got {value}"
    return None


def _type_name(value) -> str:
    return {str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(type(value),
                                                                                         type(value).__name__)
