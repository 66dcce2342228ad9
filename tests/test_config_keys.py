"""The config keys the training commands share are declared once (prefkit.train.base_config): each command's
config derives from the bases that hold its shared keys, so a shared key has one type, one default, one limit,
one set of choices and one message in every command. A command re-declares a shared key only where this file
says why; a run directory written before the bases existed still resumes."""

import dataclasses
import json
import re
import types
import typing
from pathlib import Path

import pytest

from prefkit.errors import PrefkitError
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.selfplay.config import SelfPlayConfig
from prefkit.train.base_config import CommonConfig, DatasetConfig, PolicyConfig
from prefkit.train.config import TrainConfig
from prefkit.train.rundir import open_run

COMMANDS = {"train": TrainConfig, "selfplay": SelfPlayConfig, "judge train": JudgeTrainConfig}
BASES = {CommonConfig: {"train", "selfplay", "judge train"}, PolicyConfig: {"train", "selfplay"},
         DatasetConfig: {"train", "judge train"}}
# Shared keys a command declares again, and why: self-play's and the judge trainer's own defaults since they were
# written (configs and saved runs rely on them), self-play's single loss, prefkit train's data mixtures.
REDECLARED = {"train": {"data"}, "selfplay": {"batch_size", "learning_rate", "weight_decay", "loss"},
              "judge train": {"learning_rate"}}
# One name, two meanings, in commands that share no base for it (each field's comment says which).
HOMONYMS = {"epochs": "self-play: passes over each iteration's examples (an integer), not over a dataset",
            "temperature": "self-play: the sampling temperature; the judge: GPM's τ"}
VALID = {"model": "m", "output_dir": "o", "data": "d"}


def names(kind) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)}


def valid(kind, **values):
    return kind(**{**{k: v for k, v in VALID.items() if k in names(kind)}, **values})


@pytest.mark.parametrize("base", list(BASES), ids=lambda base: base.__name__)
def test_each_command_derives_from_the_bases_of_the_keys_it_shares(base):
    assert {name for name, kind in COMMANDS.items() if issubclass(kind, base)} == BASES[base]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_shared_key_is_declared_once_unless_its_default_or_type_needs_saying(command):
    kind = COMMANDS[command]
    shared = set().union(*[names(base) for base in BASES if issubclass(kind, base)])
    declared_here = set(kind.__dict__["__annotations__"])
    assert declared_here & shared == REDECLARED[command]
    hints = typing.get_type_hints(kind)
    for base in [b for b in BASES if issubclass(kind, b)]:
        base_hints, base_defaults = typing.get_type_hints(base), asdict_defaults(base)
        for key in names(base) - REDECLARED[command]:
            assert (hints[key], asdict_defaults(kind)[key]) == (base_hints[key], base_defaults[key]), key
        for key in names(base) & REDECLARED[command]:  # narrowed or widened: one type holds the other's values
            ours, theirs = members(hints[key]), members(base_hints[key])
            assert ours <= theirs or theirs <= ours, key


def members(hint) -> set:
    """The types a union admits (`str | None` -> {str, NoneType}), or the type itself."""
    return set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}


def asdict_defaults(kind) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(kind)}


def test_two_commands_share_a_key_only_through_a_base():
    commands = list(COMMANDS)
    for i, first in enumerate(commands):
        for second in commands[i + 1:]:
            bases = [b for b in BASES if {first, second} <= BASES[b]]
            through_bases = set().union(*[names(b) for b in bases])
            loose = names(COMMANDS[first]) & names(COMMANDS[second]) - through_bases
            assert loose <= set(HOMONYMS), (first, second, sorted(loose - set(HOMONYMS)))


def test_the_redeclared_defaults_are_the_commands_own():
    """The defaults each command has always had: a saved run or a config that relies on them behaves the same."""
    assert (TrainConfig().batch_size, TrainConfig().learning_rate, TrainConfig().weight_decay) == (8, 1e-6, 0.0)
    assert (SelfPlayConfig().batch_size, SelfPlayConfig().learning_rate, SelfPlayConfig().weight_decay) == (
        16, 1e-5, 0.01)
    assert (JudgeTrainConfig().batch_size, JudgeTrainConfig().learning_rate) == (8, 1e-5)
    assert (TrainConfig().loss, SelfPlayConfig().loss) == ("dpo", "mpo")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_valid_base_values_have_no_problem(command):
    assert valid(COMMANDS[command]).problems() == []


# A bad value of each shared key, per base; each must be reported in the same words by every command that has it.
BAD = {CommonConfig: {"model": 3, "output_dir": "", "batch_size": 0, "grad_accum": 0, "learning_rate": 0.0, "weight_decay": -0.1,
                      "warmup_steps": -1, "schedule": "reduce_lr_on_plateau", "max_grad_norm": 0.0,
                      "mixed_precision": "fp8", "dtype": "float8", "gradient_checkpointing": "yes", "seed": -1,
                      "trust_remote_code": 1, "lora": {"r": 0}, "report_to": ["nope"], "project": None,
                      "run_name": 3, "resume": "no", "overwrite": "no", "max_nonfinite_steps": 0, "progress": 0},
       PolicyConfig: {"logprob_chunk_size": 0, "packing": "yes", "fuse_modules": None, "cpu_matmul": "mkl",
                      "token_metrics": 1, "merge_lora": True, "loss_params": {"bta": 0.1}, "push_to_hub": "yes", "hub_model_id": 3,
                      "hub_private_repo": "yes"},
       DatasetConfig: {"max_length": 1, "max_steps": 0, "epochs": 0.0, "truncation": "middle",
                       "on_bad_rows": "ignore", "logging_steps": 0, "eval_steps": 0, "save_steps": 0,
                       "keep_checkpoints": 0, "split": 3, "eval_data": 3, "eval_split": None}}


@pytest.mark.parametrize("base, key", [(base, key) for base, bad in BAD.items() for key in bad],
                         ids=lambda value: value if isinstance(value, str) else value.__name__)
def test_a_shared_key_is_checked_in_the_same_words_by_every_command(base, key):
    messages = set()
    for command in sorted(BASES[base]):
        kind = COMMANDS[command]
        extra = {"loss": "dpo"} if key == "loss_params" else {}  # a loss both commands take
        problems = valid(kind, **extra, **{key: BAD[base][key]}).problems()
        assert problems, (command, key)
        messages.add(tuple(problems))
    assert len(messages) == 1, messages


def test_every_shared_key_has_a_bad_value_above():
    """All but the keys whose type a command re-declares (data, loss): their messages name each command's type."""
    shared = names(CommonConfig) | names(PolicyConfig) | names(DatasetConfig)
    assert set().union(*map(set, BAD.values())) == shared - {"data", "loss"}


SAVED = Path(__file__).parent / "saved_runs"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_run_written_before_the_shared_keys_still_resumes(command, tmp_path):
    """run.json files written by prefkit before the bases existed (tests/saved_runs, from the default configs):
    the settings are compared as a mapping, so the new order of the keys changes nothing; a changed key is
    still refused, naming it."""
    kind, file = COMMANDS[command], SAVED / f"{command.replace(' ', '_')}.json"
    (tmp_path / "run.json").write_text(file.read_text())
    (tmp_path / "metrics.jsonl").write_text("")  # an earlier run's entry
    saved = json.loads(file.read_text())
    assert list(saved["settings"]) != [k for k in names(kind) if k in saved["settings"]]  # written in another order
    open_run(valid(kind, output_dir=str(tmp_path), resume=True), command)
    with pytest.raises(PrefkitError, match="learning_rate: "):
        open_run(valid(kind, output_dir=str(tmp_path), resume=True, learning_rate=0.5), command)


DOCS = Path(__file__).parents[1] / "docs" / "training.md"


def keys_listed(heading: str) -> set[str]:
    """The keys in the first column of the table under `heading` in docs/training.md."""
    section = DOCS.read_text().split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([a-z0-9_]+)`", row.split("(flags")[0])}


def test_the_docs_list_the_shared_keys_once_and_train_s_own_apart():
    shared = names(CommonConfig) | names(PolicyConfig) | names(DatasetConfig)
    assert keys_listed("Keys the commands share") == shared
    assert keys_listed("`prefkit train`'s own keys") == names(TrainConfig) - shared
