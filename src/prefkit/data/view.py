"""The debug view behind `prefkit data inspect`: one row's tokens exactly as a training batch holds them, each
marked by role (prompt, completion, padding, special token), plus length histograms and the preparation stats.

It reads the roles from the collated masks, not from the examples, so what it shows is what the losses see: a
completion that swallowed the prompt, a missing EOS or a doubled BOS is visible here at a glance.
"""

from __future__ import annotations

import statistics

from prefkit.data.examples import Example, collate
from prefkit.data.pipeline import PreparedData, describe

RESET, DIM = "\033[0m", "\033[2m"
# role -> (ANSI colour, opening and closing bracket of the --no-color form)
ROLES = {"prompt": ("\033[36m", "P[", "]"), "completion": ("\033[32m", "C[", "]"),
         "padding": ("\033[2;37m", "-[", "]")}
SPECIAL_COLOR, SPECIAL_BRACKETS = "\033[1;7m", ("{", "}")
_ESCAPES = str.maketrans({"\n": "\\n", "\t": "\\t", "\r": "\\r"})


def legend(color: bool) -> str:
    if not color:
        return ("legend: P[...] prompt (not trained)  C[...] completion (trained, EOS included)  "
                "-[...] padding/masked  {tok} special token  | token boundary")
    parts = [f"{ROLES[name][0]}{name}{RESET}" for name in ("prompt", "completion")]
    return (f"legend: {parts[0]} (not trained)  {parts[1]} (trained, EOS included)  "
            f"{ROLES['padding'][0]}padding/masked{RESET}  {SPECIAL_COLOR}special{RESET} token  {DIM}|{RESET} boundary")


def show_example(example: Example, tokenizer, pad_token_id: int, color: bool) -> list[str]:
    """Each sequence of the example's batch (prompt+chosen and prompt+rejected, prompt+completion, or each
    completion of a ranked list)."""
    batch = collate([example], pad_token_id)
    titles = _titles(example)
    # Control tokens of a chat template (<|user|>, <|im_start|>) are added tokens marked special, but are not
    # all in all_special_ids.
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    lines = []
    for row, title in enumerate(titles):
        ids = batch.input_ids[row].tolist()
        roles = [_role(int(a), int(c)) for a, c in zip(batch.attention_mask[row], batch.completion_mask[row])]
        counts = {name: roles.count(name) for name in ROLES}
        lines.append(f"{title}: {counts['prompt']} prompt + {counts['completion']} completion tokens, "
                     f"{counts['padding']} padding")
        lines += ["  " + run for run in _runs(ids, roles, tokenizer, special, color)]
    return lines


def _titles(example: Example) -> list[str]:
    if example.kind == "pair":
        return ["prompt + chosen", "prompt + rejected"]
    if example.kind == "single":
        return [f"prompt + completion (label {'desirable' if example.label else 'undesirable'})"]
    return [f"prompt + completion ranked {k + 1} (score {score:g})" for k, score in enumerate(example.completion_scores)]


def histogram(title: str, values: list[int], bins: int = 8, width: int = 40) -> list[str]:
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // bins))  # ceil: every value falls in one of at most `bins` bins
    counts = [0] * (-(-(hi - lo + 1) // step))
    for value in values:
        counts[(value - lo) // step] += 1
    top = max(counts)
    lines = [f"{title} tokens: n={len(values)}, min {lo}, median {statistics.median(values):g}, max {hi}"]
    for i, count in enumerate(counts):
        start = lo + i * step
        label = f"{start}" if step == 1 else f"{start}-{start + step - 1}"
        lines.append(f"  {label:>11} | {'#' * max(count > 0, round(width * count / top)):<{width}} {count}")
    return lines


def length_histograms(data: PreparedData) -> list[str]:
    lines = histogram("prompt", [len(e.prompt_ids) for e in data.examples])
    names = {"pair": ("chosen", "rejected"), "single": ("completion",)}.get(data.examples[0].kind)
    if names is None:  # ranked lists: every completion of every list
        return lines + histogram("completion", [len(c) for e in data.examples for c in e.completions])
    for k, name in enumerate(names):
        lines += histogram(name, [len(e.completions[k]) for e in data.examples])
    return lines


def summary(data: PreparedData, tokenizer) -> list[str]:
    def token(name):
        return f"{getattr(tokenizer, name)!r} ({getattr(tokenizer, name + '_id')})"

    stats = data.stats
    lines = [f"data:       {data.source} (rows numbered by {data.unit})",
             f"format:     {data.format}",
             f"tokenizer:  {tokenizer.name_or_path}  bos {token('bos_token')}, eos {token('eos_token')}, "
             f"pad {token('pad_token')}",
             f"rows:       {stats['rows']} read, {stats['kept']} kept, {stats['skipped']} skipped (bad), "
             f"{stats['dropped']} dropped (too long)",
             "boundaries: " + ", ".join(f"{name} {stats[name]}" for name in
                                        ("truncated", "prefix_mismatch", "template_mismatch", "eos_appended",
                                         "double_bos_removed")),
             f"fingerprint: {data.fingerprint[:16]}"]
    if data.bad_rows:
        lines.append("bad rows:")
        lines += [f"  {describe(data.source, data.unit, problem)}" for problem in data.bad_rows[:20]]
        if len(data.bad_rows) > 20:
            lines.append(f"  ... and {len(data.bad_rows) - 20} more")
    return lines


def _role(attention: int, completion: int) -> str:
    return "padding" if not attention else "completion" if completion else "prompt"


def _runs(ids, roles, tokenizer, special, color) -> list[str]:
    """One line per run of tokens with the same role."""
    runs, start = [], 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or roles[end] != roles[start]:
            runs.append(_format_run(ids[start:end], roles[start], tokenizer, special, color))
            start = end
    return runs


def _format_run(ids, role, tokenizer, special, color) -> str:
    tokens = []
    for token_id in ids:
        text = tokenizer.decode([token_id]).translate(_ESCAPES)
        if token_id in special:
            text = f"{SPECIAL_COLOR}{text}{RESET}{ROLES[role][0]}" if color else "{%s}" % text
        tokens.append(text)
    colour, opening, closing = ROLES[role]
    if color:
        return colour + f"{RESET}{DIM}|{RESET}{colour}".join(tokens) + RESET
    return opening + "|".join(tokens) + closing
