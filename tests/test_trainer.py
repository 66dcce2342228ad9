"""prefkit.Trainer: TRL's keyword names on the engine of `prefkit train` (same metrics, same final model), the
notebook of docs/trainer.md as written, and every bad argument named before anything loads."""

import json
import re
from pathlib import Path

import pytest

from prefkit import Trainer
from prefkit.cli import main
from prefkit.errors import PrefkitError
from prefkit.train.tracking import read_metrics
from train_fixtures import reset_accelerate, tiny_workspace

DOC = Path(__file__).parents[1] / "docs" / "trainer.md"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("trainer"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    reset_accelerate()
    yield


def test_the_notebook_in_the_docs_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", DOC.read_text().split("## A notebook, end to end", 1)[1], re.S)
    exec(compile(code[0], str(DOC), "exec"), {})
    records = [r for r in read_metrics(tmp_path / "runs" / "notebook") if "loss" in r]
    assert records[0]["loss"] == pytest.approx(0.693147, abs=1e-4)  # the reference is the model object's start
    assert (tmp_path / "runs" / "notebook" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "notebook-model" / "README.md").read_text().startswith("---\n")


def test_the_trainer_computes_what_the_command_line_computes(workspace, tmp_path):
    from peft import LoraConfig

    settings = {"loss_type": "sigmoid", "beta": 0.2, "learning_rate": 1e-3, "per_device_train_batch_size": 4,
                "max_steps": 3, "logging_steps": 1, "progress": False, "cache_dir": str(tmp_path / "cache")}
    trainer = Trainer(model=workspace["model"], args={**settings, "output_dir": str(tmp_path / "api")},
                      train_dataset=workspace["data"], peft_config=LoraConfig(r=4, lora_alpha=8,
                                                                              target_modules=["q_proj", "v_proj"]))
    assert trainer.args.lora == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                                 "modules_to_save": None, "use_rslora": False, "use_dora": False}
    trainer.train()
    overrides = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    assert main(["train", "--model", workspace["model"], "--data", workspace["data"], "--output-dir",
                 str(tmp_path / "cli"), *overrides, 'lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}']) == 0
    api, cli = ([r for r in read_metrics(tmp_path / run) if "loss" in r] for run in ("api", "cli"))
    assert [r["loss"] for r in api] == pytest.approx([r["loss"] for r in cli], abs=1e-6)
    assert set(api[-1]) == set(cli[-1])  # the same metric names
    assert json.loads((tmp_path / "api" / "final" / "adapter_config.json").read_text())["r"] == 4


def test_unpaired_datasets_train_with_kto_unless_a_loss_is_named(workspace, tmp_path):
    import datasets

    rows = [json.loads(line) for line in Path(workspace["unpaired"]).read_text().splitlines()]
    trainer = Trainer(model=workspace["model"], args={"output_dir": str(tmp_path)}, train_dataset=rows)
    assert trainer.args.loss == "kto" and isinstance(trainer.train_dataset, datasets.Dataset)
    assert Trainer(model=workspace["model"], args={"output_dir": str(tmp_path), "loss": "bco"},
                   train_dataset=rows).args.loss == "bco"


BAD = [
    (dict(args={"lerning_rate": 1e-3, "per_device_train_batch_size": 0}),
     "config: 2 problems: args: unknown key 'lerning_rate'; did you mean 'learning_rate'?; 'batch_size' must be "
     "an integer >= 1 (got 0)"),
    (dict(args=42), "args: expected a prefkit TrainConfig or a dict of its keys (TRL's names too), got a int"),
    (dict(train_dataset=None), "'data' is required"),
    (dict(train_dataset=object()), "data: expected a path, a hub id or a datasets.Dataset, got a object"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_arguments_are_named_before_anything_loads(workspace, tmp_path, kwargs, message):
    arguments = {"model": workspace["model"], "args": {"output_dir": str(tmp_path / "run")},
                 "train_dataset": workspace["data"], **kwargs}
    with pytest.raises(PrefkitError) as error:
        Trainer(**arguments).train()
    assert message in str(error.value)
    assert not (tmp_path / "run" / "final").exists()


def test_outputs_need_a_trained_model(workspace, tmp_path):
    trainer = Trainer(model=workspace["model"], args={"output_dir": str(tmp_path)}, train_dataset=workspace["data"])
    for call in (lambda: trainer.save_model(tmp_path / "x"), trainer.push_to_hub, trainer.evaluate):
        with pytest.raises(PrefkitError, match="call train\\(\\) first|no eval_dataset"):
            call()
