"""`prepare`: rows in, tokenized examples out, with every bad row accounted for before any training starts.

Bad rows either stop the run with one error that lists them all (file, row, field, reason), or are skipped and
recorded in `run_dir/skipped_rows.jsonl` (only when a row was skipped). Several sources can be mixed with
weights (`[{path, weight, split}]`). Scored lists become pairs (`list_pairs`: all, or best vs worst; ties
dropped) or stay whole, ranked best first, for a listwise loss. The fingerprint names the tokenized examples and
the settings that made them, so a cache of reference log-probs keyed on it is never reused for different data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prefkit.data.examples import LIST_PAIRS, Example
from prefkit.data.formats import BadRow, DataFormat, Record, detect_format, parse_row
from prefkit.data.sources import load_rows
from prefkit.data.tokenize import Encoded, Encoder, RowProblem
from prefkit.errors import PrefkitError
from prefkit.io import progress, write_jsonl

BAD_ROWS_SHOWN = 20
FINGERPRINT_VERSION = "prefkit.data/1"  # bump when a tokenization rule changes: old caches become stale
_ON_BAD_ROWS = ("error", "skip")
# Per-row events counted in stats (rows, not sequences: a pair whose two sides both mismatch counts once).
EVENTS = ("truncated", "prefix_mismatch", "template_mismatch", "eos_appended", "double_bos_removed")


@dataclass
class PreparedData:
    format: DataFormat
    examples: list[Example]                            # all of one kind (Example.kind)
    stats: dict[str, int]
    fingerprint: str
    source: str = ""
    unit: str = "row"                                  # "line" for JSONL sources
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.format.kind


def prepare(source, tokenizer, *, split: str = "train", max_length: int | None = 1024,
            truncation: str = "keep_start", on_bad_rows: str = "error", run_dir=None,
            list_pairs: str | None = "all") -> PreparedData:
    """Load, detect the format, validate and tokenize `source`: a path, a hub id, a `datasets.Dataset`, or a
    mixture `[{path, weight, split}, ...]` (see docs/data.md). Bad rows of every source are reported together,
    or skipped and recorded in `run_dir/skipped_rows.jsonl` (written only when a row was skipped). Scored lists
    become pairs by `list_pairs` ("all" or "best_vs_worst", ties dropped), or stay whole lists with None."""
    if on_bad_rows not in _ON_BAD_ROWS:
        raise PrefkitError(f"on_bad_rows={on_bad_rows!r}: use one of {', '.join(_ON_BAD_ROWS)}")
    if list_pairs is not None and list_pairs not in LIST_PAIRS:
        raise PrefkitError(f"list_pairs={list_pairs!r}: use one of {', '.join(LIST_PAIRS)}")
    entries = source if is_mixture(source) else [{"path": source}]
    parts = [_prepare_one(entry["path"], tokenizer, entry.get("split", split), max_length, truncation, list_pairs)
             for entry in entries]
    reports = [bad_rows_message(p.source, p.unit, p.bad_rows, p.stats["rows"]) for p in parts if p.bad_rows]
    if reports and on_bad_rows == "error":
        raise PrefkitError("\n".join(reports))
    if run_dir is not None and any(p.bad_rows for p in parts):
        _write_skipped(Path(run_dir), parts)
    for part in parts:
        if not part.examples:
            raise PrefkitError(f"{part.source}: no usable rows left ({part.stats})")
    if len(parts) == 1:
        return parts[0]
    return _mix(parts, [float(entry.get("weight", 1.0)) for entry in entries])


def is_mixture(source) -> bool:
    """`data: [{path, weight, split}, ...]`: several sources mixed with weights."""
    return isinstance(source, list) and bool(source) and all(isinstance(entry, dict) for entry in source)


def _prepare_one(source, tokenizer, split: str, max_length: int | None, truncation: str,
                 list_pairs: str | None) -> PreparedData:
    """One source tokenized, its bad rows listed (not raised)."""
    loaded = load_rows(source, split)
    fmt = detect_format(loaded.rows, loaded.name)
    encoder = Encoder(tokenizer, fmt.style, max_length, truncation)
    examples, bad = [], list(loaded.unreadable)
    stats = Counter({name: 0 for name in ("rows", "kept", "skipped", "dropped") + EVENTS})
    stats["rows"] = len(loaded.rows) + len(loaded.unreadable)
    for number, raw in progress(loaded.rows, total=len(loaded.rows), desc=f"prepare {loaded.name}", unit="row"):
        record, problems = parse_row(raw, number, fmt)
        encoded = None
        if record is not None:
            try:
                encoded = encoder.encode(record)
            except RowProblem as problem:
                problems = [BadRow(number, problem.field, problem.reason)]
            else:
                if encoded is None:
                    stats["dropped"] += 1
                    continue
        if problems:
            bad.extend(problems)
            continue
        stats.update(encoded.events)
        examples.append(_EXAMPLE_MAKERS[fmt.kind](record, encoded))
    if fmt.kind == "scored-list":
        examples = _lists(examples, list_pairs, stats, bad)
    bad.sort(key=lambda problem: problem.row)
    stats["skipped"] = len({problem.row for problem in bad})
    stats["kept"] = len(examples)
    settings = {"version": FINGERPRINT_VERSION, "format": str(fmt), "max_length": max_length,
                **({"list_pairs": list_pairs} if fmt.kind == "scored-list" else {}),
                "truncation": truncation, "eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id,
                "chat_template": getattr(tokenizer, "chat_template", None) if fmt.style == "conversational" else None}
    return PreparedData(fmt, examples, dict(stats), _fingerprint(settings, examples), loaded.name, loaded.unit, bad)


def _mix(parts: list[PreparedData], weights: list[float]) -> PreparedData:
    """The sources' examples, each source's taken `weight` times: every example floor(weight) times, plus a
    fixed random share (the fractional part) of them, the same in every run (seeded by the source's
    fingerprint); the training order is shuffled by the run's seed as always."""
    if len({_example_kind(part) for part in parts}) > 1:
        raise PrefkitError("data: a mixture must give examples of one kind: pairs, single completions, or lists "
                           "of one length; got " + ", ".join(f"{part.source} ({_example_kind(part)})" for part in parts))
    examples, stats = [], Counter()
    for part, weight in zip(parts, weights):
        whole, share = divmod(weight, 1.0)
        rng = random.Random(part.fingerprint)
        extra = sorted(rng.sample(range(len(part.examples)), round(share * len(part.examples))))
        examples += part.examples * int(whole) + [part.examples[i] for i in extra]
        stats.update(part.stats)
    stats["kept"] = len(examples)
    settings = {"mixture": [[part.fingerprint, weight] for part, weight in zip(parts, weights)]}
    source = " + ".join(f"{weight:g} x {part.source}" for part, weight in zip(parts, weights))
    return PreparedData(parts[0].format, examples, dict(stats), _fingerprint(settings, examples), source,
                        parts[0].unit, [problem for part in parts for problem in part.bad_rows])


def _example_kind(part: PreparedData) -> str:
    first = part.examples[0]
    return f"lists of {len(first.completions)}" if first.kind == "list" else \
        {"pair": "pairs", "single": "single completions"}[first.kind]


def bad_rows_message(name: str, unit: str, bad: list[BadRow], total: int) -> str:
    rows = len({problem.row for problem in bad})
    lines = [f"{name}: {rows} bad row{'s' if rows != 1 else ''} out of {total} (fix them, or pass "
             f"on_bad_rows='skip' to skip them and record them in skipped_rows.jsonl):"]
    lines += [f"  {describe(name, unit, problem)}" for problem in bad[:BAD_ROWS_SHOWN]]
    if len(bad) > BAD_ROWS_SHOWN:
        lines.append(f"  ... and {len(bad) - BAD_ROWS_SHOWN} more")
    return "\n".join(lines)


def describe(name: str, unit: str, problem: BadRow) -> str:
    where = f"{name} {unit} {problem.row}"
    return f"{where}, field '{problem.field}': {problem.reason}" if problem.field else f"{where}: {problem.reason}"


def _pair(record: Record, encoded: Encoded) -> Example:
    return Example.pair(encoded.prompt_ids, encoded.completions["chosen"], encoded.completions["rejected"],
                        record.row, **record.numbers)


def _unpaired(record: Record, encoded: Encoded) -> Example:
    return Example.single(encoded.prompt_ids, encoded.completions["completion"], record.label, record.row,
                          **record.numbers)


def _ranked(record: Record, encoded: Encoded) -> Example:
    return Example.ranked(encoded.prompt_ids, list(encoded.completions.values()), record.scores, record.row,
                          **record.numbers)


_EXAMPLE_MAKERS = {"preference": _pair, "unpaired": _unpaired, "scored-list": _ranked}
_PAIRS_PER_LIST = {"all": lambda k: k * (k - 1) // 2, "best_vs_worst": lambda k: 1}  # of K completions, no ties


def _lists(ranked: list[Example], list_pairs: str | None, stats: Counter, bad: list[BadRow]) -> list[Example]:
    """Scored lists as pairs (`list_pairs`; stats["tied_pairs"] counts the pairs dropped for a tie), or whole,
    where every list must hold the same number of completions (the most common one; other rows are bad rows)."""
    if list_pairs is not None:
        pairs = [LIST_PAIRS[list_pairs](example) for example in ranked]
        stats["tied_pairs"] = sum(_PAIRS_PER_LIST[list_pairs](len(e.completions)) - len(made)
                                  for e, made in zip(ranked, pairs))
        return [pair for made in pairs for pair in made]
    sizes = Counter(len(example.completions) for example in ranked)
    size = sizes.most_common(1)[0][0] if sizes else 0
    bad += [BadRow(e.row, "completions", f"holds {len(e.completions)} completions; a listwise loss needs the same "
                                         f"number in every row ({size}, as most rows hold)")
            for e in ranked if len(e.completions) != size]
    return [example for example in ranked if len(example.completions) == size]


def _fingerprint(settings: dict, examples) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps(vars(example), sort_keys=True).encode())
    return digest.hexdigest()


def _write_skipped(run_dir: Path, parts: list[PreparedData]) -> None:
    """skipped_rows.jsonl (file, row, field, reason per bad row of every source), written whole or not at all."""
    write_jsonl([{"file": part.source, "row": p.row, "field": p.field, "reason": p.reason}
                 for part in parts for p in part.bad_rows], run_dir / "skipped_rows.jsonl")
