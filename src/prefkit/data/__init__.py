"""prefkit.data: preference data from the files users already have to token ids with exact boundaries.

    data = prepare("pairs.jsonl", tokenizer, max_length=1024)   # detect, validate, tokenize
    batch = collate(data.examples[:8], tokenizer.pad_token_id)  # a typed Batch of K completions per example

Formats, boundary rules and bad-row handling are described in docs/data.md; `prefkit data inspect` shows one
row's tokens as the trainer will see them.
"""

from prefkit import lazy

# Public names and the module that defines each. They are imported on first use, so that building the CLI
# (which imports prefkit.data.cli, and with it this package) does not import torch for every command.
_EXPORTS = {"prepare": "pipeline", "PreparedData": "pipeline", "collate": "examples", "Example": "examples",
            "Batch": "examples", "DataFormat": "formats", "BadRow": "formats"}
__all__ = list(_EXPORTS)
__getattr__ = lazy.exports(__name__, _EXPORTS)
