"""The offline trainer end to end on a tiny local Llama: step-0 loss, reference modes and cache, resume,
final model format, config errors."""

import json
import math

import pytest
import torch

from prefkit.cli import main
from prefkit.train.config import load_config
from prefkit.train.offline import fit
from prefkit.train.tracking import read_metrics
from train_fixtures import (killed_after_first_save, write_preferences, write_scored_lists, write_tiny_model,
                            write_unpaired)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"model": str(write_tiny_model(root / "model")), "data": str(write_preferences(root / "prefs.jsonl")),
            "unpaired": str(write_unpaired(root / "unpaired.jsonl")), "cache": str(root / "cache")}


def config(workspace, out, **overrides):
    values = dict(model=workspace["model"], data=workspace["data"], output_dir=str(out), loss="dpo",
                  batch_size=4, max_steps=2, learning_rate=1e-3, logging_steps=1, cache_dir=workspace["cache"],
                  progress=False)
    values.update(overrides)
    flags = {k: v for k, v in values.items() if not isinstance(v, (dict, list))}
    extra = [f"{k}={json.dumps(v)}" for k, v in values.items() if isinstance(v, (dict, list))]
    return load_config(None, flags, extra)


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_dpo_starts_at_ln2_and_the_reference_cache_is_reused(workspace, tmp_path):
    fit(config(workspace, tmp_path / "a", cache_dir=str(tmp_path / "cache")))
    first = read_metrics(tmp_path / "a")
    assert first[0] == {"step": 0, "reference/cache_hit": 0.0}
    assert first[1]["loss"] == pytest.approx(0.693147, abs=1e-5)  # policy = reference at step 0
    assert first[1]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    fit(config(workspace, tmp_path / "b", cache_dir=str(tmp_path / "cache")))
    assert read_metrics(tmp_path / "b")[0]["reference/cache_hit"] == 1.0


def test_final_model_loads_in_transformers_with_a_model_card(workspace, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = fit(config(workspace, tmp_path, loss="stapo", max_steps=1))
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(final))
    card = (final / "README.md").read_text()
    assert "stapo" in card and "right_margin" in card and "prefs.jsonl" in card
    assert "stapo/inside" in read_metrics(tmp_path)[-1]


def test_resume_continues_exactly_where_it_stopped(workspace, tmp_path, monkeypatch):
    fit(config(workspace, tmp_path / "once", max_steps=4, save_steps=2))
    killed_after_first_save(monkeypatch, lambda: fit(config(workspace, tmp_path / "twice", max_steps=4, save_steps=2)))
    fit(config(workspace, tmp_path / "twice", max_steps=4, save_steps=2, resume=True))
    once, twice = weights(tmp_path / "once" / "final"), weights(tmp_path / "twice" / "final")
    assert once.keys() == twice.keys()
    for key in once:
        assert torch.equal(once[key], twice[key]), key
    steps = [r["step"] for r in read_metrics(tmp_path / "twice") if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_checkpoints_keep_the_last_k(workspace, tmp_path):
    fit(config(workspace, tmp_path, max_steps=3, save_steps=1, keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"]


def test_lora_reference_is_the_disabled_adapter_not_a_copy(workspace, tmp_path, no_model_copies):
    fit(config(workspace, tmp_path, lora={"r": 4, "alpha": 8}, max_steps=1))
    assert read_metrics(tmp_path)[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert (tmp_path / "final" / "adapter_config.json").is_file()


def test_frozen_copy_with_trust_region_sync(workspace, tmp_path):
    fit(config(workspace, tmp_path, reference="copy", ref_sync_steps=1, ref_mixup_alpha=1.0, max_steps=2))
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    # with α = 1 the reference is the policy after every step, so the next step starts again at ln 2
    assert records[1]["loss"] == pytest.approx(0.693147, abs=1e-5)


@pytest.mark.parametrize("loss", ["kto", "bco"])
def test_unpaired_losses_train(workspace, tmp_path, loss):
    fit(config(workspace, tmp_path, data=workspace["unpaired"], loss=loss))
    record = [r for r in read_metrics(tmp_path) if "loss" in r][0]
    assert record["loss"] == pytest.approx(0.5 if loss == "kto" else 0.693147, abs=1e-5)
    assert {"entropy", "logits/chosen", "logits/rejected"} <= set(record)  # KTOTrainer's token metrics
    assert "mean_token_accuracy" not in record  # KTOTrainer logs none


def test_mixture_from_the_command_line(workspace, tmp_path, capsys):
    code = main(["train", "--model", workspace["model"], "--data", workspace["data"], "--loss", "dpo+sft",
                 "--output-dir", str(tmp_path), "--max-steps", "1", "batch_size=4", "loss_weights=[1.0, 0.1]",
                 f"cache_dir={workspace['cache']}", "progress=false"])
    assert code == 0
    assert "loss/sft" in read_metrics(tmp_path)[-1]


def test_scored_lists_train_listwise_or_as_pairs_from_the_command_line(workspace, tmp_path):
    lists = str(write_scored_lists(tmp_path / "lists.jsonl", n=8, k=3))
    base = ["train", "--model", workspace["model"], "--data", lists, "--max-steps", "1", "batch_size=4",
            f"cache_dir={workspace['cache']}", "progress=false"]
    assert main(base + ["--loss", "plackett_luce", "--output-dir", str(tmp_path / "listwise")]) == 0
    # policy = reference at step 0: every ranking of 3 is equally likely, -log P = log 3! for each list
    assert read_metrics(tmp_path / "listwise")[1]["loss"] == pytest.approx(math.log(6), abs=1e-5)
    assert main(base + ["--loss", "dpo", "list_pairs=best_vs_worst", "--output-dir", str(tmp_path / "pairs")]) == 0
    assert read_metrics(tmp_path / "pairs")[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert main(base + ["--loss", "kto", "--output-dir", str(tmp_path / "kto")]) == 2  # lists cannot feed KTO


@pytest.mark.parametrize("args, message", [
    (["learning_rat=1e-3"], "unknown key 'learning_rat'; did you mean 'learning_rate'"),
    (["list_pairs=some"], "'list_pairs' must be one of all, best_vs_worst (got 'some')"),
    (["loss_params.betta=0.1"], "betta"),
    (["--loss", "dpoo"], "unknown loss 'dpoo'"),
    (["reference=sideways"], "reference"),
    (["--model", "./no/such/model"], "model path not found: ./no/such/model"),
])
def test_config_errors_are_one_clear_line(workspace, tmp_path, capsys, args, message):
    base = ["train", "--model", workspace["model"], "--data", workspace["data"], "--output-dir", str(tmp_path)]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_two_process_launch_matches_one_process_with_the_same_global_batch(workspace, tmp_path):
    """And on 2 processes a resume from step 1's checkpoint ends bit for bit where the uninterrupted run does
    (every process loads the checkpoint on the CPU, whose device accelerate names cpu:0)."""
    import shutil
    import subprocess
    import sys

    common = ["--model", workspace["model"], "--data", workspace["data"], "--loss", "dpo", "--max-steps", "2",
              "learning_rate=1e-3", f"cache_dir={tmp_path / 'cache'}", "progress=false", "save_steps=1"]
    one = [sys.executable, "-m", "prefkit.cli", "train", "--output-dir", str(tmp_path / "one"), *common,
           "batch_size=4"]
    two = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "prefkit.cli",
           "train", "--output-dir", str(tmp_path / "two"), *common, "batch_size=2"]
    for command in (one, two):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    initial = weights(__import__("pathlib").Path(workspace["model"]))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert any(not torch.allclose(a[k], initial[k].float()) for k in a)  # both actually trained

    for left in (tmp_path / "two" / "final", tmp_path / "two" / "checkpoints" / "step-00000002"):
        shutil.rmtree(left)  # as if stopped after step 1's checkpoint
    done = subprocess.run([*two, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = weights(tmp_path / "two" / "final")
    assert all(torch.equal(resumed[k], b[k]) for k in b)


@pytest.mark.parametrize("variable, name", [("ACCELERATE_USE_FSDP", "FSDP"),
                                            ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
@pytest.mark.parametrize("command", ["train", "judge train"])
def test_a_sharded_launch_without_a_gpu_is_refused_at_validation(monkeypatch, tmp_path, variable, name, command):
    """accelerate shards on GPUs only: with cpu=True (prefkit's accelerator without a CUDA GPU) it runs FSDP and
    DeepSpeed launches as plain data parallelism."""
    from prefkit.errors import PrefkitError
    from prefkit.judges.train_config import JudgeTrainConfig
    from prefkit.train.config import TrainConfig

    kind = {"train": TrainConfig, "judge train": JudgeTrainConfig}[command]
    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PrefkitError, match=f"asks for {name} .{variable}., which accelerate runs on GPUs only"):
        load_config(None, {"model": "m", "data": "d.jsonl", "output_dir": str(tmp_path)}, kind=kind)


@pytest.mark.parametrize("environment, flags, message", [
    ({}, {}, None),
    ({"FSDP_VERSION": "2"}, {}, None),
    ({"FSDP_VERSION": "2"}, {"lora": {"r": 4}}, None),
    ({"FSDP_VERSION": "1"}, {}, "asks for FSDP version 1 .FSDP_VERSION.; prefkit gathers .* FSDP2's shards only"),
    ({}, {}, "asks for FSDP version 1"),  # accelerate's default
    ({"FSDP_VERSION": "2"}, {"lora": {"r": 4}, "merge_lora": True}, "'merge_lora' under FSDP"),
], ids=["ddp", "fsdp2", "fsdp2-lora", "fsdp1", "fsdp-default", "fsdp2-merge"])
def test_what_prefkit_train_cannot_run_under_fsdp_on_gpus_is_refused_at_validation(monkeypatch, tmp_path,
                                                                                   environment, flags, message):
    """On a machine with a GPU (mocked): FSDP2 passes, FSDP1 and merge_lora under FSDP are refused; prefkit judge
    train refuses FSDP of either version. The first case is a plain data-parallel launch."""
    from prefkit.errors import PrefkitError
    from prefkit.judges.train_config import JudgeTrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if environment or message:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    values = {"model": "m", "data": "d.jsonl", "output_dir": str(tmp_path), **flags}
    if message is None:
        load_config(None, values)
    else:
        with pytest.raises(PrefkitError, match=message):
            load_config(None, values)
    judge = {"model": "m", "data": "d.jsonl", "output_dir": str(tmp_path)}
    if environment or message:
        with pytest.raises(PrefkitError, match="prefkit judge train runs data-parallel only"):
            load_config(None, judge, kind=JudgeTrainConfig)
    else:
        load_config(None, judge, kind=JudgeTrainConfig)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_accelerates_fsdp_wraps_each_decoder_layer_of_the_prepared_policy(lora):
    """accelerate's TRANSFORMER_BASED_WRAP (the shipped fsdp.yaml's) finds the blocks to shard one by one in the
    `_no_split_modules` of the module it prepares: the engine's PolicyLogps passes on its model's (through peft's
    wrapper with LoRA). Checked with accelerate's own policy functions for FSDP2 and FSDP1, which need no GPU."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from prefkit.modeling.tiny import tiny_llama
    from prefkit.train.engine import PolicyLogps

    model = tiny_llama(64, hidden_size=32, layers=2, heads=2)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    policy = PolicyLogps(model, 64, False)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    wraps = fsdp2_prepare_auto_wrap_policy(plugin, policy)
    assert [type(m) for m in policy.modules() if wraps(m)] == [LlamaDecoderLayer, LlamaDecoderLayer]
    fsdp1 = FullyShardedDataParallelPlugin(fsdp_version=1, auto_wrap_policy="transformer_based_wrap",
                                           sync_module_states=False)
    fsdp1.set_auto_wrap_policy(policy)
    assert fsdp1.auto_wrap_policy.keywords["transformer_layer_cls"] == {LlamaDecoderLayer}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_the_fsdp_config_launched_without_a_gpu_stops_at_validation_on_every_process(workspace, tmp_path):
    """`accelerate launch --config_file configs/accelerate/fsdp.yaml` on 2 CPU processes: the variable its launcher
    sets is the one validation reads, and each process stops with the one-line error before anything loads, where
    accelerate's FSDP plugin would otherwise raise a RuntimeError (fsdp_version 1 with sync_module_states: "no
    available devices found") or, with fsdp_version 2, the run would go on unsharded."""
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes",
               "2", "-m", "prefkit", "train", "--model", workspace["model"], "--data", workspace["data"],
               "--output-dir", str(tmp_path / "run"), "--max-steps", "1", "progress=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert done.stderr.count("asks for FSDP (ACCELERATE_USE_FSDP), which accelerate runs on GPUs only") == 2
    # torchrun's launcher reports its failed children with a traceback of its own; no process raised one
    assert "RuntimeError" not in done.stderr and not (tmp_path / "run").exists()


def test_evaluation_runs_on_the_eval_split_with_its_own_reference(workspace, tmp_path):
    fit(config(workspace, tmp_path, eval_data=workspace["data"], eval_steps=1, max_steps=2))
    evals = [r for r in read_metrics(tmp_path) if "eval/loss" in r]
    assert [r["step"] for r in evals] == [1, 2]
    assert evals[0]["eval/rewards/accuracies"] >= 0.0 and "eval/contrastive_logit" in evals[0]


def test_bad_rows_are_skipped_and_recorded_in_the_run_directory(workspace, tmp_path):
    data = tmp_path / "bad.jsonl"
    lines = open(workspace["data"]).read().splitlines()
    data.write_text("\n".join(lines + ['{"prompt": "hi", "chosen": "same", "rejected": "same"}']) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl"):
        fit(config(workspace, tmp_path / "strict", data=str(data), max_steps=1))
    fit(config(workspace, tmp_path / "lenient", data=str(data), max_steps=1, on_bad_rows="skip"))
    skipped = (tmp_path / "lenient" / "skipped_rows.jsonl").read_text().splitlines()
    assert len(skipped) == 1 and json.loads(skipped[0])["row"] == len(lines) + 1


def test_bco_reward_shift_tracks_the_running_mean_of_rewards(workspace, tmp_path, monkeypatch):
    from prefkit.losses.statistics import RewardShift

    shifts = []
    real_inputs = RewardShift.inputs
    monkeypatch.setattr(RewardShift, "inputs", lambda self, *args: (shifts.append(self.mean),
                                                                     real_inputs(self, *args))[1])
    fit(config(workspace, tmp_path, data=workspace["unpaired"], loss="bco", max_steps=3))
    assert shifts[0] == 0.0 and shifts[-1] != 0.0  # δ starts at 0 and follows the rewards as training moves them


def test_resume_restores_a_trust_region_reference(workspace, tmp_path, monkeypatch):
    options = dict(reference="copy", ref_sync_steps=1, ref_mixup_alpha=0.5, max_steps=4, save_steps=2)
    fit(config(workspace, tmp_path / "once", **options))
    killed_after_first_save(monkeypatch, lambda: fit(config(workspace, tmp_path / "twice", **options)))
    fit(config(workspace, tmp_path / "twice", resume=True, **options))
    once, twice = weights(tmp_path / "once" / "final"), weights(tmp_path / "twice" / "final")
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_the_console_shows_a_summary_and_a_metric_line_per_logging_step(workspace, tmp_path, capsys):
    fit(config(workspace, tmp_path, progress=True, max_steps=2, logging_steps=1))
    err = capsys.readouterr().err
    assert "train: examples" in err and "trainable of" in err and "train: reference   precomputed" in err
    lines = [line for line in err.splitlines() if line.startswith("train step ")]
    assert [line.split(" |")[0] for line in lines] == ["train step 1/2", "train step 2/2"]
    assert all("loss " in line and "ETA " in line for line in lines)
    assert "Writing model shards" not in err and "Loading weights" not in err  # transformers' bars are off


def test_the_logged_learning_rate_is_the_current_one_not_the_window_mean(workspace, tmp_path):
    fit(config(workspace, tmp_path, max_steps=4, logging_steps=2, schedule="linear", learning_rate=1e-3))
    logged = {r["step"]: r["learning_rate"] for r in read_metrics(tmp_path) if "learning_rate" in r}
    # linear decay over 4 steps: step k trains with 1e-3·(1 − (k−1)/4); the window mean at step 2 would be 0.875e-3
    assert logged == {2: pytest.approx(0.75e-3), 4: pytest.approx(0.25e-3)}


def test_logging_first_step_also_logs_step_one(workspace, tmp_path):
    fit(config(workspace, tmp_path, max_steps=3, logging_steps=3, logging_first_step=True))
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 3]


def test_dtype_auto_loads_the_checkpoint_in_its_own_dtype(tmp_path):
    from prefkit.modeling.load import load_model
    from prefkit.tasks import SyntheticTask

    SyntheticTask().model(seed=0).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in load_model(str(tmp_path / "bf16"), dtype="auto").parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_model(str(tmp_path / "bf16")).parameters()} == {torch.float32}


def test_num_tokens_counts_every_trained_token_and_eval_metrics_can_take_trls_names(workspace, tmp_path):
    fit(config(workspace, tmp_path, max_steps=2, logging_steps=1, eval_data=workspace["data"], eval_steps=2,
               eval_prefix="eval_"))
    records = read_metrics(tmp_path)
    counts = [r["num_tokens"] for r in records if "num_tokens" in r]
    assert len(counts) == 2 and 0 < counts[0] < counts[1]  # cumulative, as TRL logs it
    assert any("eval_loss" in r for r in records) and not any("eval/loss" in r for r in records)
    # TRL's token metrics, training and evaluation, under TRL's evaluation names
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(workspace["model"]).vocab_size
    train = [r for r in records if "loss" in r]
    evaluated = [r for r in records if "eval_loss" in r]
    for record, prefix in ((train[-1], ""), (evaluated[-1], "eval_")):
        names = [prefix + n for n in ("entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy")]
        assert all(name in record for name in names), record
        entropy, accuracy = record[prefix + "entropy"], record[prefix + "mean_token_accuracy"]
        assert 0 < entropy <= math.log(vocab) and 0 <= accuracy <= 1
