"""`generator: vllm` settings checked before anything loads, without vllm installed: the missing extra is named,
bad engine options are named with their key, and the sampled ids become the same Samples as transformers'."""

import importlib.util

import pytest

from prefkit.errors import PrefkitError
from prefkit.modeling.vllm_generator import request_seeds, to_samples
from test_selfplay import config


@pytest.fixture
def without_vllm(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))


def test_a_missing_vllm_is_named_with_the_extra_before_anything_loads(initial, tmp_path, without_vllm):
    with pytest.raises(PrefkitError, match=r"generator: vllm needs the vllm package: pip install 'prefkit\[vllm\]'"):
        config(initial, tmp_path, generator="vllm")
    assert not any(tmp_path.iterdir())  # nothing written
    config(initial, tmp_path, generator="vllm", vllm={"server": "http://127.0.0.1:8000"})  # a server needs none
    config(initial, tmp_path)  # hf, the default, never asks for it


@pytest.mark.parametrize("options, message", [
    ({"cache": 1}, "vllm: unknown key(s) cache"),
    ({"max_model_len": 0}, "'vllm.max_model_len' must be an integer >= 1"),
    ({"gpu_memory_utilization": 1.5}, "'vllm.gpu_memory_utilization' must be a finite number in (0, 1]"),
    ({"dtype": "int8"}, "vllm.dtype"),
])
def test_bad_engine_options_are_named(initial, tmp_path, options, message):
    with pytest.raises(PrefkitError) as error:
        config(initial, tmp_path, generator="vllm", vllm={"server": "http://127.0.0.1:8000", **options})
    assert message in str(error.value)


def test_an_unknown_generator_is_refused(initial, tmp_path):
    with pytest.raises(PrefkitError, match="generator"):
        config(initial, tmp_path, generator="sglang")


def test_sampled_ids_become_samples_cut_after_eos(tokenizer):
    eos = tokenizer.eos_token_id
    words = tokenizer(" rock paper", add_special_tokens=False)["input_ids"]
    groups = to_samples(tokenizer, [[words + [eos], words + [eos, 5, 6]], [words]], eos)
    assert [[s.ids for s in g] for g in groups] == [[words + [eos], words + [eos]], [words]]
    assert {s.text for g in groups for s in g} == {" rock paper"}
    seeds = request_seeds(7, 1000)
    assert len(set(seeds)) == 1000 and seeds == request_seeds(7, 1000) and max(seeds) < 2 ** 31
