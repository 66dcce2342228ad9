"""TRL's and transformers' names: two TRL recipes run with `prefkit train --config` as they are, every name prefkit
cannot honour is reported in one message with right suggestions, overrides go anywhere on the command line, and
the table in docs/training.md lists the whole vocabulary."""

import json
import re
from pathlib import Path

import pytest

from prefkit.cli import main
from prefkit.errors import PrefkitError
from prefkit.train.config import TrainConfig, load_config, schedules
from prefkit.selfplay.config import SelfPlayConfig
from prefkit.train import vocabulary
from train_fixtures import reset_accelerate, tiny_workspace

RECIPES = Path(__file__).parent / "recipes"
DOCS = Path(__file__).parents[1] / "docs" / "training.md"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("vocabulary"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    reset_accelerate()
    yield


def local(workspace, out, data="data"):
    """The overrides that point a recipe at the local tiny model and data (TRL's names, as a TRL user types)."""
    return [f"model_name_or_path={workspace['model']}", f"dataset_name={workspace[data]}", f"output_dir={out}"]


def test_a_trl_dpo_recipe_reads_as_prefkit_settings(workspace, tmp_path):
    config = load_config(str(RECIPES / "trl_dpo.yaml"), overrides=local(workspace, tmp_path))
    assert (config.model, config.data, config.split) == (workspace["model"], workspace["data"], "train")
    assert (config.batch_size, config.eval_batch_size, config.grad_accum, config.epochs) == (2, 4, 8, 1.0)
    assert (config.loss, config.loss_params) == ("sigmoid", {"beta": 0.1})  # label_smoothing 0.0 (TRL's default)
    assert (config.schedule, config.warmup_ratio, config.max_steps, config.keep_checkpoints) == ("cosine", 0.1,
                                                                                                 None, 2)
    assert (config.eval_data, config.eval_split, config.eval_steps) == (workspace["data"], "test", 50)
    assert (config.mixed_precision, config.dtype, config.truncation, config.report_to) == ("bf16", "bfloat16",
                                                                                           "keep_end", [])
    assert config.lora == {"r": 32, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear",
                           "modules_to_save": None, "use_rslora": False, "use_dora": False}
    assert (config.seed, config.overwrite, config.gradient_checkpointing) == (42, True, True)


@pytest.mark.slow
def test_a_trl_dpo_recipe_trains_unchanged(workspace, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", str(RECIPES / "trl_dpo.yaml"), *local(workspace, out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 1 and records[0]["loss"] == pytest.approx(0.6931, abs=1e-2)  # bf16 autocast
    assert any("eval/loss" in r for r in records)  # eval_strategy: steps on the data's test split
    adapter = json.loads((out / "final" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (32, 16)


@pytest.mark.slow
def test_a_trl_kto_recipe_trains_unchanged(workspace, tmp_path):
    out = tmp_path / "run"
    config = load_config(str(RECIPES / "trl_kto.yaml"), overrides=local(workspace, out, "unpaired"))
    assert (config.loss, config.reference, config.eval_steps, config.save_steps) == ("kto", "precomputed", None,
                                                                                   None)
    assert config.loss_params == {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert config.report_to == ["jsonl"]  # "all": every tracker installed; here none but prefkit's own file
    assert main(["train", "--config", str(RECIPES / "trl_kto.yaml"), *local(workspace, out, "unpaired")]) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1 and record["loss"] > 0


def test_every_name_prefkit_cannot_honour_is_in_one_message(workspace, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("\n".join([f"model_name_or_path: {workspace['model']}", f"dataset_name: {workspace['data']}",
                                 f"output_dir: {tmp_path / 'run'}", "eval_on_start: true", "optim: sgd",
                                 "use_liger_kernel: true", "max_prompt_length: 512", "eval_strategy: epoch",
                                 "gradient_accumulation_step: 4", "use_pef: true", "bf16: yes please",
                                 "hub_token: hf_abc", "lr_scheduler_type: reduce_lr_on_plateau"]) + "\n")
    with pytest.raises(PrefkitError) as error:
        load_config(str(recipe))
    message = str(error.value)
    assert message.startswith("config: 10 problems: ")
    for text in ["'eval_on_start' can only be False in prefkit (got True)",
                 "'optim' can only be 'adamw_torch' or 'adamw_torch_fused' in prefkit (got 'sgd')",
                 "'use_liger_kernel' can only be False", "'max_prompt_length' can only be None",
                 "'eval_strategy' must be one of no, steps in prefkit",
                 "unknown key 'gradient_accumulation_step'; did you mean 'gradient_accumulation_steps'?",
                 "unknown key 'use_pef'; did you mean 'use_peft'?", "'bf16' must be true or false",
                 "a token does not belong in a config file",
                 "'schedule' reduce_lr_on_plateau steps on a validation metric"]:
        assert text in message, text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("typo, suggestion", [("gradient_accumulation_step", "gradient_accumulation_steps"),
                                              ("per_device_train_batchsize", "per_device_train_batch_size"),
                                              ("lerning_rate", "learning_rate"), ("lora_rank", "lora_r"),
                                              ("warmup_ration", "warmup_ratio"), ("bta", "beta")])
def test_suggestions_come_from_the_whole_vocabulary(typo, suggestion):
    with pytest.raises(PrefkitError, match=f"unknown key '{typo}'; did you mean '{suggestion}'"):
        load_config(overrides=[f"{typo}=1"])


def test_two_names_for_one_setting_must_agree_within_a_source():
    with pytest.raises(PrefkitError, match="'grad_accum' and 'gradient_accumulation_steps' both set grad_accum"):
        load_config(overrides=["grad_accum=2", "gradient_accumulation_steps=4", "model=m", "data=d", "output_dir=o"])
    later = load_config(values={"grad_accum": 2, "model": "m", "data": "d", "output_dir": "o"},
                        overrides=["gradient_accumulation_steps=4"])
    assert later.grad_accum == 4  # an override replaces the config's value, whatever name either uses


def test_lora_names_apply_with_use_peft_as_in_trl():
    base = ["model=m", "data=d", "output_dir=o"]
    assert load_config(overrides=[*base, "lora_r=8"]).lora is None  # TRL ignores lora_* without use_peft
    assert load_config(overrides=[*base, "use_peft=true"]).lora["r"] == 16  # TRL ModelConfig's defaults
    assert load_config(overrides=[*base, "lora={alpha: 4}", "lora_r=8"]).lora == {"alpha": 4, "r": 8}


def test_the_self_play_config_shares_the_vocabulary():
    config = load_config(kind=SelfPlayConfig, values={
        "model_name_or_path": "m", "output_dir": "o", "per_device_train_batch_size": 4, "num_train_epochs": 3,
        "lr_scheduler_type": "constant", "torch_dtype": "bfloat16", "seed": 7, "use_peft": True, "lora_r": 8})
    assert (config.model, config.batch_size, config.epochs, config.schedule, config.dtype, config.seed) == (
        "m", 4, 3, "constant", "bfloat16", 7)
    assert config.lora["r"] == 8 and config.lora["alpha"] == 32  # LoRA self-play, TRL's ModelConfig defaults
    with pytest.raises(PrefkitError) as error:
        load_config(kind=SelfPlayConfig, values={"model": "m", "output_dir": "o", "per_device_eval_batch_size": 2,
                                                 "eval_strategy": "steps", "sync_ref_model": True, "beta": 0.1})
    for text in ["'per_device_eval_batch_size' (prefkit's 'eval_batch_size') is not a setting of this command",
                 "'eval_strategy' (prefkit's 'eval_steps') is not a setting of this command",
                 "'sync_ref_model' (prefkit's 'reference') is not a setting of this command"]:
        assert text in str(error.value), text
    assert "'beta'" not in str(error.value)  # self-play has loss_params: beta is its loss's


@pytest.mark.parametrize("name", schedules())
def test_every_transformers_scheduler_is_accepted_or_refused_with_a_reason(name):
    kwargs = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
              "warmup_stable_decay": {"num_decay_steps": 2}}.get(name, {})
    values = {"model": "m", "data": "d", "output_dir": "o", "lr_scheduler_type": name, "lr_scheduler_kwargs": kwargs}
    try:
        config = load_config(values=values)
    except PrefkitError as error:
        assert "steps on a validation metric" in str(error)
        return
    assert config.schedule == name
    if kwargs:  # without them, transformers' own message names what is missing
        with pytest.raises(PrefkitError, match=f"'schedule' {name}: .*schedule_kwargs"):
            load_config(values={**values, "lr_scheduler_kwargs": {}})


def test_warmup_ratio_rounds_up_as_transformers_does():
    config = load_config(values={"model": "m", "data": "d", "output_dir": "o", "warmup_ratio": 0.1})
    assert config.warmup(15) == 2 and config.warmup(10) == 1
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = config.scheduler(optimizer, 10)
    assert scheduler.get_last_lr()[0] == 0.0  # step 0 of a 1-step warm-up


def test_overrides_go_anywhere_on_the_command_line(workspace, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("prefkit.train.offline.fit", lambda config: seen.setdefault("config", config))
    argv = ["train", "--model", workspace["model"], "learning_rate=1e-4", "--data", workspace["data"],
            "--output-dir", str(tmp_path), "max_steps=3", "--per_device_train_batch_size", "2", "--bf16",
            "--gradient_accumulation_steps=4", "--no_gradient_checkpointing", "--no_remove_unused_columns"]
    assert main(argv) == 0
    config = seen["config"]
    assert (config.learning_rate, config.max_steps, config.batch_size, config.mixed_precision, config.grad_accum) == (
        1e-4, 3, 2, "bf16", 4)
    assert config.gradient_checkpointing is False


def test_a_stray_word_is_still_an_error(capsys):
    assert main(["train", "--model", "m", "stray"]) == 2
    assert "override 'stray' is not key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "m", "a=1", "--resume", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_the_docs_table_lists_the_whole_vocabulary():
    section = DOCS.read_text().split("## Coming from TRL", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z0-9_]+)`", section))
    names = (set(vocabulary.RENAMES) | set(vocabulary.LOSS_PARAMS) | set(vocabulary.LORA) | set(vocabulary.SAME)
             | set(vocabulary.IGNORED) | set(vocabulary.TRANSFORMS))
    assert names <= listed, sorted(names - listed)
    assert {f for f in vocabulary.RENAMES.values()} <= {f.name for f in __import__("dataclasses").fields(TrainConfig)}
