"""A tiny saved model + tokenizer and small preference / unpaired data sets, built locally for trainer tests."""

import json
import random
from pathlib import Path

WORDS = "red green blue cat dog fish sun moon star tree rock sand".split()


def write_tiny_model(directory: Path) -> Path:
    from prefkit.modeling.tiny import tiny_llama, tiny_tokenizer

    corpus = [" ".join(random.Random(i).choices(WORDS, k=8)) for i in range(200)]
    tokenizer = tiny_tokenizer(corpus, vocab_size=128)
    model = tiny_llama(len(tokenizer), hidden_size=32, tokenizer=tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_preferences(path: Path, n: int = 16, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "say " + " ".join(rng.choices(WORDS, k=2))
        chosen = " ".join(rng.choices(WORDS, k=rng.randint(2, 4)))
        rejected = " ".join(rng.choices(WORDS, k=rng.randint(2, 4)))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected + " x"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def write_unpaired(path: Path, n: int = 16, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [{"prompt": "say " + rng.choice(WORDS), "completion": " ".join(rng.choices(WORDS, k=3)),
             "label": i % 2 == 0} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def write_scored_lists(path: Path, n: int = 8, k: int = 3, seed: int = 0) -> Path:
    """{"prompt", "completions", "scores"} rows of K distinct completions with distinct scores."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        completions = [" ".join(rng.choices(WORDS, k=rng.randint(2, 4))) + " x" * i for i in range(k)]
        rows.append({"prompt": "say " + " ".join(rng.choices(WORDS, k=2)), "completions": completions,
                     "scores": rng.sample(range(10), k)})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def tiny_workspace(root: Path) -> dict[str, str]:
    """A tiny model, preference pairs and unpaired rows under `root`, by name."""
    return {"model": str(write_tiny_model(root / "model")), "data": str(write_preferences(root / "prefs.jsonl")),
            "unpaired": str(write_unpaired(root / "unpaired.jsonl"))}


def reset_accelerate() -> None:
    """accelerate keeps one process-wide state whose mixed precision cannot change within a process; tests that
    train with bf16 and without, as separate `prefkit train` processes would, start each run from a fresh one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


class Interrupted(Exception):
    """A kill, simulated right after a checkpoint save."""


def killed_after_first_save(monkeypatch, run) -> None:
    """Call `run()` with the process 'killed' right after its first checkpoint is written, then restore saving:
    what a resume test starts from."""
    import pytest

    from prefkit.train import checkpoint

    real_save = checkpoint.save

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Interrupted):
        run()
    monkeypatch.setattr(checkpoint, "save", real_save)
