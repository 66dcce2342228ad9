"""LoRA self-play: the policy is a peft adapter on one base model. π_0 is the base with the adapter switched off,
the magnet a second adapter slot refreshed by copying adapter weights, iteration directories hold adapters only,
and the merged weights vLLM gets equal peft's own merge. Exact resume with LoRA: tests/test_hardening.py."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from prefkit.errors import PrefkitError
from prefkit.modeling import adapters
from prefkit.selfplay import anchors as anchors_module
from prefkit.selfplay.anchors import AdapterAnchors
from prefkit.selfplay.loop import selfplay
from prefkit.train.tracking import read_metrics
from test_selfplay import config

LORA = {"r": 4, "alpha": 8}
MPO = dict(loss="mpo", loss_params={"eta": 2.0, "alpha": 0.2})


def adapter_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def peft_policy(initial, seed: int = 0, **lora):
    """The task model with a LoRA adapter whose B matrices are random (a fresh adapter's are 0: it adds nothing)."""
    from prefkit.modeling.load import load_model

    model = load_model(initial, lora={**LORA, **lora}, fuse=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def logps(model, tokenizer, task) -> torch.Tensor:
    from prefkit.modeling import score
    from prefkit.modeling.generation import encode_completion, encode_prompt

    prompts = task.prompts(split="eval")[:4]
    groups = [(encode_prompt(tokenizer, p), [encode_completion(tokenizer, r) for r in task.canonical(p)])
              for p in prompts]
    return score(model, groups)


# ---- configuration ------------------------------------------------------------------------------------------

def test_lora_takes_prefkit_train_keys_and_trl_names(initial, tmp_path):
    assert config(initial, tmp_path, lora=LORA).lora == LORA
    trl = config(initial, tmp_path, use_peft=True, lora_r=8)  # TRL's ModelConfig names, TRL's defaults
    assert trl.lora == {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": None, "modules_to_save": None,
                        "use_rslora": False, "use_dora": False}


@pytest.mark.parametrize("values, message", [
    (dict(lora={"rank": 4}), "'lora' has unknown key 'rank'"),
    (dict(lora={"r": 0}), "'lora.r' must be an integer >= 1"),
    (dict(merge_lora=True), "'merge_lora' needs a LoRA adapter"),
])
def test_bad_lora_settings_are_named_before_anything_loads(initial, tmp_path, values, message):
    with pytest.raises(PrefkitError, match=message):
        config(initial, tmp_path, **values)


def test_lora_with_a_vllm_server_validates(initial, tmp_path):
    vllm = {"server": "http://127.0.0.1:1"}  # the main suite has no vllm: tensor_parallel_size needs the package
    assert config(initial, tmp_path, lora=LORA, generator="vllm", vllm=vllm).vllm == vllm


def test_an_engine_that_reads_from_disk_gets_the_merged_weights_then_they_go(initial, tmp_path):
    """A vLLM server or tensor-parallel workers reload from a folder: with LoRA, `reloadable` writes the merged
    weights there (peft's merge_and_unload, bit for bit), and `reloaded` removes them; a full policy is reloaded
    from where it was saved."""
    from prefkit.modeling.vllm_generator import reloadable, reloaded

    model = peft_policy(initial, modules_to_save=["lm_head"])
    saved = tmp_path / "iter-0001" / "policy"
    saved.mkdir(parents=True)
    folder = reloadable(model, saved)
    written = load_file(str(folder / "model.safetensors"))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(written) == set(expected) and same(written, expected)
    reloaded(folder, saved)
    assert not folder.exists() and saved.is_dir()
    assert reloadable(copy.deepcopy(model).merge_and_unload(), saved) == saved


# ---- one base model, several adapter states -----------------------------------------------------------------

def test_merged_weights_equal_peft_merge_and_unload_and_leave_the_model_alone(initial):
    model = peft_policy(initial, modules_to_save=["lm_head"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = dict(adapters.merged_weights(model))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert same(merged, expected)  # bit for bit: the same additions in the same order
    assert same(model.state_dict(), before)
    assert not any(torch.equal(merged[k], before[f"base_model.model.{k[:-7]}.base_layer.weight"])
                   for k in merged if k.endswith("q_proj.weight"))  # the adapter did change the weights


def test_dora_merged_weights_match_peft_merge(initial):
    model = peft_policy(initial, use_dora=True)
    merged = dict(adapters.merged_weights(model))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    # DoRA merges by a norm ratio; peft's in-place and out-of-place merges round it differently (float64 here)
    assert all(torch.allclose(merged[k], expected[k], rtol=0, atol=1e-12) for k in merged)


@pytest.mark.parametrize("lora", [LORA, {**LORA, "use_dora": True}], ids=["lora", "dora"])
def test_a_fresh_adapter_computes_exactly_the_base_model(initial, task, tokenizer, lora):
    """Why π_0 may be the base with the adapter switched off: a fresh adapter adds exactly nothing."""
    from prefkit.modeling.load import load_model

    fresh = load_model(initial, lora=lora, fuse=False)
    assert torch.equal(logps(fresh, tokenizer, task), logps(load_model(initial, fuse=False), tokenizer, task))


def test_adapter_anchors_hold_one_base_model_and_refresh_by_copying_the_adapter(initial, task, tokenizer):
    from prefkit.modeling.load import load_model

    base = load_model(initial, fuse=False)
    model = peft_policy(initial)
    base_pointers = {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}
    anchors = AdapterAnchors(model, None, {"completed": 0, "magnet": 0}, None)
    with anchors.initial() as view:  # π_0 is the base: the adapter switched off
        assert torch.equal(logps(view, tokenizer, task), logps(base, tokenizer, task))
    with anchors.magnet() as view:  # and the magnet too, until the first refresh
        assert torch.equal(logps(view, tokenizer, task), logps(base, tokenizer, task))
    policy = logps(model, tokenizer, task)
    anchors.refresh(model)
    assert {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n} == base_pointers
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == 2 * sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and ".default." in n)
    with torch.no_grad():  # training moves the trained adapter, not the magnet's copy
        for name, parameter in model.named_parameters():
            if "lora_B.default" in name:
                parameter.add_(0.05)
    with anchors.magnet() as view:
        assert torch.equal(logps(view, tokenizer, task), policy)
    assert not torch.equal(logps(model, tokenizer, task), policy)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)  # the magnet's slot never trains
    assert anchors.magnet()(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[:2] == (1, 3)
    anchors.close()
    assert list(model.peft_config) == ["default"]


def test_a_lora_run_keeps_adapters_only_and_one_base_model(initial, tmp_path, monkeypatch, no_model_copies):
    from prefkit.modeling import load

    loads = []
    real_load = load._load
    monkeypatch.setattr(load, "_load", lambda *args: loads.append(args) or real_load(*args))
    out = tmp_path / "run"
    final = selfplay(config(initial, out, iterations=2, refresh_every=1, keep_policies=1, lora=LORA,
                            merge_lora=True, **MPO))
    assert len(loads) == 1  # one base model, loaded once
    record = read_metrics(out)[-1]
    assert record["refreshed"] == 1 and record["kl_to_magnet"] >= 0 and record["kl_to_initial"] > 0
    assert not (out / "iter-0001" / "policy").exists()  # keep_policies: 1 (the magnet is iteration 2's)
    policy = out / "iter-0002" / "policy"
    assert [p.parent.name for p in out.rglob("model.safetensors")] == ["merged"]  # full weights only there
    assert (policy / "adapter_config.json").is_file()
    assert json.loads((policy / "adapter_config.json").read_text())["base_model_name_or_path"] == initial
    assert same(adapter_weights(out / "magnet"), adapter_weights(policy))  # the refresh copied the adapter
    assert same(adapter_weights(final), adapter_weights(policy))
    card = (final / "README.md").read_text()
    assert "library_name: peft" in card and "## LoRA adapter" in card and "self-play" in card
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).state_dict()
    resumed = anchors_module.load_policy(out, 2, config(initial, out, lora=LORA, fuse_modules=False))
    expected = dict(adapters.merged_weights(resumed))
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    # a resumed run whose magnet is an earlier iteration's policy loads that adapter into the magnet's slot
    AdapterAnchors(resumed, out, {"completed": 3, "magnet": 2}, config(initial, out, lora=LORA))
    from peft import get_peft_model_state_dict

    assert same(get_peft_model_state_dict(resumed, adapter_name="magnet"), adapter_weights(policy))
