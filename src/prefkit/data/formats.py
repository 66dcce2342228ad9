"""What a row of preference data looks like, and which rows are bad.

The accepted formats are TRL's, so data sets made for TRL load as they are:

- preference, explicit prompt:  {"prompt", "chosen", "rejected"}
- preference, implicit prompt:  {"chosen", "rejected"}  (the shared prefix becomes the prompt)
- unpaired:                     {"prompt", "completion", "label": bool}

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
COMPLETION_FIELDS = {"preference": ("chosen", "rejected"), "unpaired": ("completion",)}
# Columns a kind cannot do without (the prompt is optional only for preference data: then it is implicit).
REQUIRED_COLUMNS = {"preference": ("chosen", "rejected"), "unpaired": ("prompt", "completion", "label")}
NUMBER_FIELDS = {"score": None, "margin": None, "weight": 0.0}  # optional numeric fields and their minimum


@dataclass(frozen=True)
class DataFormat:
    """preference|unpaired, explicit|implicit prompt, standard|conversational."""

    kind: str
    prompt: str
    style: str

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
            "(prompt, chosen, rejected; prompt optional) or unpaired rows (prompt, completion, label)")
    kind = kinds[0]
    missing = [name for name in REQUIRED_COLUMNS[kind] if name not in columns]
    if missing:
        raise PrefkitError(f"{source}: {kind} data needs the column(s) {', '.join(missing)}; "
                           f"found {', '.join(sorted(columns))}")
    first_field = COMPLETION_FIELDS[kind][0]
    first = next((raw[first_field] for raw in dicts if isinstance(raw.get(first_field), (str, list))), "")
    style = "conversational" if isinstance(first, list) else "standard"
    return DataFormat(kind, "explicit" if "prompt" in columns else "implicit", style)


def parse_row(raw: object, row: int, fmt: DataFormat) -> tuple[Record | None, list[BadRow]]:
    """The row as a `Record`, or every problem found in it."""
    if not isinstance(raw, dict):
        return None, [BadRow(row, None, f"expected an object with named fields, got {type(raw).__name__}")]
    problems: list[BadRow] = []
    names = (("prompt",) if fmt.prompt == "explicit" else ()) + COMPLETION_FIELDS[fmt.kind]
    for name in names:
        reason = _check_text(raw.get(name), fmt.style, is_prompt=name == "prompt")
        if reason:
            problems.append(BadRow(row, name, reason))
    label = raw.get("label")
    if fmt.kind == "unpaired" and not isinstance(label, bool):
        problems.append(BadRow(row, "label", "missing" if label is None else f"expected true or false, got {label!r}"))
    numbers = {}
    for name, minimum in NUMBER_FIELDS.items():
        value = raw.get(name)
        reason = _check_number(name, value, minimum)
        if reason:
            problems.append(BadRow(row, name, reason))
        elif value is not None:
            numbers[name] = float(value)
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
