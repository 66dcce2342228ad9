"""The final model as TRL users get it: a huggingface_hub model card with base_model, datasets and peft metadata,
an adapter whose base is the model as named, a merged model beside it with `merge_lora`, and `push_to_hub`
through huggingface_hub (only the network calls are stubbed)."""

import json
import shutil
import types

import pytest
import torch

from prefkit.cli import main
from prefkit.errors import PrefkitError
from prefkit.train.config import load_config
from prefkit.train.model_card import model_card
from train_fixtures import tiny_workspace

LORA = "lora={r: 4, alpha: 8}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("outputs"))


def train(workspace, out, *overrides, model=None):
    argv = ["train", "--model", model or workspace["model"], "--data", workspace["data"], "--output-dir", str(out),
            "max_steps=2", "batch_size=4", "learning_rate=1e-2", "progress=false", *overrides]
    assert main(argv) == 0


def test_a_lora_run_saves_an_adapter_on_the_base_as_named_and_a_peft_card(workspace, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForCausalLM

    monkeypatch.chdir(tmp_path)
    shutil.copytree(workspace["model"], tmp_path / "org" / "tiny")  # named as a hub id is: owner/name
    train(workspace, tmp_path / "run", LORA, model="org/tiny")
    final = tmp_path / "run" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/tiny"
    card = ModelCard.load(final / "README.md")
    assert card.data.library_name == "peft" and {"prefkit", "dpo", "lora"} <= set(card.data.tags)
    assert "## LoRA adapter" in card.text and "| r | 4 |" in card.text
    assert card.data.base_model is None  # a local directory is not a hub repository
    assert AutoPeftModelForCausalLM.from_pretrained(str(final)) is not None  # the relative base resolves


def test_the_card_names_hub_ids_as_base_model_and_datasets(workspace, tmp_path):
    from prefkit.data import prepare
    from prefkit.modeling.load import load_tokenizer

    config = load_config(values={"model_name_or_path": "Qwen/Qwen2-0.5B-Instruct", "output_dir": str(tmp_path),
                                 "data": [{"path": "trl-lib/ultrafeedback_binarized"}, {"path": workspace["data"]}],
                                 "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1], "beta": 0.2})
    data = prepare(workspace["data"], load_tokenizer(workspace["model"]))
    card = model_card(config, data, {"loss": 0.5}, adapter=False)
    assert card.data.base_model == "Qwen/Qwen2-0.5B-Instruct"
    assert card.data.datasets == ["trl-lib/ultrafeedback_binarized"]  # the local file is not named as a dataset
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "| beta | 0.2 |" in card.text and "1 x dpo + 0.1 x sft" in card.text


def test_merge_lora_writes_a_merged_model_computing_what_the_adapter_computes(workspace, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    train(workspace, tmp_path, LORA, "merge_lora=true")
    adapter = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "final"), dtype=torch.float32).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    base = AutoModelForCausalLM.from_pretrained(workspace["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        want, got, before = adapter(ids).logits, merged(ids).logits, base(ids).logits
    assert (want - before).abs().max() > 1e-4  # the adapter learned something, so the comparison means something
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # float32 sums of W + BA in another order


class Hub:
    """huggingface_hub's two network calls, recorded instead of sent; everything else is the real client."""

    def __init__(self, monkeypatch, fail=False):
        import huggingface_hub

        self.calls, self.fail = [], fail
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", self.upload_folder)
        monkeypatch.setenv("HF_TOKEN", "hf_test")

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **_):
        self.calls.append(("create_repo", repo_id, private))
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, **_):
        if self.fail:
            raise ConnectionError("network unreachable")
        self.calls.append(("upload_folder", repo_id, folder_path, path_in_repo))


def test_push_to_hub_uploads_the_final_and_merged_models(workspace, tmp_path, monkeypatch, capsys):
    hub = Hub(monkeypatch)
    train(workspace, tmp_path, LORA, "merge_lora=true", "push_to_hub=true", "hub_model_id=me/tiny-dpo",
          "hub_private_repo=true")
    assert hub.calls == [("create_repo", "me/tiny-dpo", True),
                         ("upload_folder", "me/tiny-dpo", str(tmp_path / "final"), None),
                         ("upload_folder", "me/tiny-dpo", str(tmp_path / "merged"), "merged")]
    assert "pushed to https://huggingface.co/me/tiny-dpo" in capsys.readouterr().out


def test_a_failed_upload_is_one_line_and_keeps_the_saved_model(workspace, tmp_path, monkeypatch, capsys):
    Hub(monkeypatch, fail=True)
    argv = ["train", "--model", workspace["model"], "--data", workspace["data"], "--output-dir", str(tmp_path),
            "max_steps=1", "batch_size=4", "progress=false", "push_to_hub=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"push_to_hub: could not upload {tmp_path / 'final'} to {tmp_path.name}: ConnectionError" in err
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_push_to_hub_without_a_token_is_refused_before_anything_loads(workspace, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["train", "--model", workspace["model"], "--data", workspace["data"], "--output-dir",
                 str(tmp_path / "run"), "push_to_hub=true"]) == 2
    assert "'push_to_hub' needs a Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_accepts_a_run_recorded_before_a_setting_existed(workspace, tmp_path):
    from prefkit.train.rundir import RUN_FILE, open_run

    config = load_config(values={"model": workspace["model"], "data": workspace["data"],
                                 "output_dir": str(tmp_path)})
    open_run(config, "train")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    recorded = json.loads((tmp_path / RUN_FILE).read_text())
    del recorded["settings"]["warmup_ratio"]  # as a prefkit without warmup_ratio wrote it
    (tmp_path / RUN_FILE).write_text(json.dumps(recorded))
    config.resume = True
    open_run(config, "train")  # and records warmup_ratio from now on
    config.warmup_ratio = 0.1
    with pytest.raises(PrefkitError, match="warmup_ratio: 0.0 -> 0.1"):
        open_run(config, "train")


def test_self_play_writes_the_same_card_and_pushes(initial, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    hub = Hub(monkeypatch)
    assert main(["selfplay", "--model", initial, "--output-dir", str(tmp_path), "iterations=1", "loss=inpo",
                 "prompts_per_iteration=4", "samples_per_prompt=3", "max_new_tokens=4", "eval_limit=4",
                 "batch_size=4", "epochs=1", "progress=false", "push_to_hub=true"]) == 0
    card = ModelCard.load(tmp_path / "final" / "README.md")
    assert card.data.library_name == "transformers" and {"prefkit", "inpo"} <= set(card.data.tags)
    assert "by self-play **inpo** against the judge `task`" in card.text and "| iterations | 1 |" in card.text
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
