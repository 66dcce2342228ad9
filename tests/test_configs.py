"""Every config in configs/ validates, and runs as it is on the files `prefkit task export` writes."""

import json
from pathlib import Path

import pytest

import yaml

from prefkit.cli import main
from prefkit.judges.train_config import JudgeTrainConfig
from prefkit.train.config import load_config
from prefkit.train.config import TrainConfig
from prefkit.selfplay.config import SelfPlayConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_is_a_config_per_family():
    assert {p.stem for p in CONFIGS} >= {"dpo", "ipo", "simpo", "stapo", "kto", "bco", "orpo", "rpo", "npo", "mpo",
                                         "inpo", "sppo", "nash_md", "online_ipo", "comal"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path):
    keys = yaml.safe_load(path.read_text())
    if keys.get("generator") == "vllm" and not (keys.get("vllm") or {}).get("server"):
        pytest.importorskip("vllm")  # such a config asks for the vllm extra (tests/test_vllm.py validates it)
    kind = JudgeTrainConfig if "kind" in keys else SelfPlayConfig if "judge" in keys else TrainConfig
    assert load_config(str(path), kind=kind).model == "runs/task/reference"


@pytest.mark.slow
def test_task_export_feeds_the_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["task", "export", "runs/task", "--steps", "5"]) == 0
    for name in ("preferences.jsonl", "unpaired.jsonl", "forget.jsonl", "preferences_eval.jsonl"):
        assert (tmp_path / "runs" / "task" / name).stat().st_size > 0
    for config in ("stapo", "kto"):
        assert main(["train", "--config", str(CONFIGS[0].parent / f"{config}.yaml"), "max_steps=1",
                     "warmup_steps=0", "progress=false", "save_steps=null"]) == 0  # warmup must fit in 1 step
        record = json.loads((tmp_path / "runs" / config / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["step"] == 1 and record["loss"] > 0
    for config in ("judge_bt", "judge_gpm"):  # `prefkit judge train`, with its eval split
        assert main(["judge", "train", "--config", str(CONFIGS[0].parent / f"{config}.yaml"), "max_steps=1",
                     "warmup_steps=0", "progress=false", "save_steps=null"]) == 0
        record = json.loads((tmp_path / "runs" / config / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["step"] == 1 and 0 <= record["eval/accuracy"] <= 1
    # configs/mpo.yaml as shipped (fewer iterations): exact win rates from the task's oracle, canonical pairs
    assert main(["selfplay", "--config", str(CONFIGS[0].parent / "mpo.yaml"), "iterations=1",
                 "prompts_per_iteration=4", "eval_limit=4", "progress=false"]) == 0
    record = json.loads((tmp_path / "runs" / "mpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1 and 0 <= record["duality_gap"] <= 1 and "tracking_tv" in record
    # configs/mpo_lora.yaml: the policy is an adapter; final/ holds it, merged/ the full model
    assert main(["selfplay", "--config", str(CONFIGS[0].parent / "mpo_lora.yaml"), "iterations=1",
                 "prompts_per_iteration=4", "eval_limit=4", "progress=false"]) == 0
    run = tmp_path / "runs" / "mpo-lora"
    assert (run / "final" / "adapter_config.json").is_file() and (run / "merged" / "model.safetensors").is_file()
