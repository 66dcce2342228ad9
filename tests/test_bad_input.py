"""The bad-input corpus: each case is input a user could give by mistake. Every one must end in one clear message
that names the key, or the file, row and field (exit 2 from the CLI, a PrefkitError from the library), with no
traceback, before anything heavy loads where the input allows it, and with every file written before intact."""

import hashlib
import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from prefkit.cli import main
from prefkit.errors import PrefkitError
from prefkit.judges import JudgeError, load_judge, preference_matrix
from prefkit.train.config import TrainConfig
from train_fixtures import write_preferences, write_tiny_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    return {"model": write_tiny_model(root / "model"), "data": write_preferences(root / "prefs.jsonl")}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def previous_run(directory: Path) -> Path:
    """An earlier run's files, which a failed command must leave as they are."""
    (directory / "final").mkdir(parents=True)
    (directory / "final" / "model.safetensors").write_bytes(b"earlier weights")
    (directory / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    return directory


def fails_cleanly(argv: list[str], capsys, expected: list[str], *, one_line: bool = True) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("prefkit: error: ")
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    if one_line:
        assert err.strip().count("\n") == 0, err
    return err


# --- config values: every problem named by its key, before anything loads --------------------------------------

TRAIN_CONFIG = [
    ("max_grad_norm=-1", "'max_grad_norm' must be a finite number > 0 or null (got -1)"),
    ("max_grad_norm=0", "'max_grad_norm' must be a finite number > 0 or null (got 0)"),
    ("learning_rate=.nan", "'learning_rate' must be a finite number > 0 (got nan)"),
    ("learning_rate=.inf", "'learning_rate' must be a finite number > 0 (got inf)"),
    ("learning_rate=-1e-5", "'learning_rate' must be a finite number > 0 (got -1e-05)"),
    ("learning_rate=fast", "'learning_rate' must be a finite number > 0 (got 'fast')"),
    ("learning_rate=true", "'learning_rate' must be a finite number > 0 (got True)"),
    ("max_steps=0", "'max_steps' must be an integer >= 1 or null (got 0)"),
    ("max_steps=-5", "'max_steps' must be an integer >= 1 or null (got -5)"),
    ("max_steps=2.5", "'max_steps' must be an integer >= 1 or null (got 2.5)"),
    ("epochs=0", "'epochs' must be a finite number > 0 (got 0)"),
    ("epochs=-1", "'epochs' must be a finite number > 0 (got -1)"),
    ("epochs=.nan", "'epochs' must be a finite number > 0 (got nan)"),
    ("warmup_steps=-1", "'warmup_steps' must be an integer >= 0 (got -1)"),
    ("batch_size=0", "'batch_size' must be an integer >= 1 (got 0)"),
    ("batch_size=2.5", "'batch_size' must be an integer >= 1 (got 2.5)"),
    ("batch_size=true", "'batch_size' must be an integer >= 1 (got True)"),
    ("grad_accum=0", "'grad_accum' must be an integer >= 1 (got 0)"),
    ("max_length=1", "'max_length' must be an integer >= 2 (got 1)"),
    ("weight_decay=-0.1", "'weight_decay' must be a finite number >= 0 (got -0.1)"),
    ("logging_steps=0", "'logging_steps' must be an integer >= 1 (got 0)"),
    ("eval_steps=0", "'eval_steps' must be an integer >= 1 or null (got 0)"),
    ("save_steps=-1", "'save_steps' must be an integer >= 1 or null (got -1)"),
    ("keep_checkpoints=0", "'keep_checkpoints' must be an integer >= 1 (got 0)"),
    ("seed=-1", "'seed' must be an integer >= 0 (got -1)"),
    ("logprob_chunk_size=0", "'logprob_chunk_size' must be an integer >= 1 (got 0)"),
    ("ref_mixup_alpha=2", "'ref_mixup_alpha' must be a finite number in [0, 1] (got 2)"),
    ("ref_sync_steps=0", "'ref_sync_steps' must be an integer >= 1 or null (got 0)"),
    ("max_nonfinite_steps=0", "'max_nonfinite_steps' must be an integer >= 1 (got 0)"),
    ("report_to=[neptune]", "'report_to' may only list jsonl, none, all, tensorboard, wandb, trackio, mlflow, "
                            "comet_ml, clearml, dvclive, swanlab, aim (got 'neptune')"),
    ("report_to=wandbb", "'report_to' may only list jsonl, "),  # one name is a list of one (transformers' form)
    ("report_to=7", "'report_to' must be a list of strings (got 7)"),
    ("'report_to=[jsonl, jsonl]'", "'report_to' lists a name twice"),
    ("report_to=[[jsonl]]", "'report_to' must be a list of strings (got [['jsonl']])"),
    ("schedule=cosin", "'schedule' must be one of linear, cosine, cosine_with_restarts, "),
    ("dtype=float64", "'dtype' must be one of float32, bfloat16, float16, auto (got 'float64')"),
    ("mixed_precision=fp8", "'mixed_precision' must be one of no, bf16, fp16 (got 'fp8')"),
    ("truncation=middle", "'truncation' must be one of keep_start, keep_end, drop (got 'middle')"),
    ("on_bad_rows=ignore", "'on_bad_rows' must be one of error, skip (got 'ignore')"),
    ("progress=maybe", "'progress' must be true or false (got 'maybe')"),
    ("packing=1", "'packing' must be true or false (got 1)"),
    ("cache_dir=[a]", "'cache_dir' must be a string or null (got ['a'])"),
    ("loss=[]", "'loss' is required (flag --loss)"),
    ("loss=dpoo", "unknown loss 'dpoo'"),
    ("'loss_weights=[1.0, 0.1]'", "'loss_weights' has 2 weights for 1 losses"),
    ("'loss_weights=[1.0, .nan]'", "'loss_weights' must be a list of finite numbers or null"),
    ("loss_params.beta=.nan", "'loss_params.beta' must be a finite number (got nan)"),
    ("loss_params.beta=high", "'loss_params.beta' must be a finite number (got 'high')"),
    ("loss_params.beta=-1", "loss 'dpo': beta must be > 0 (got -1)"),
    ("loss_params.bta=1", "'bta'"),
    ("'lora={r: 0}'", "'lora.r' must be an integer >= 1 (got 0)"),
    ("'lora={rank: 8}'", "'lora' has unknown key 'rank' (keys: r, alpha, dropout, target_modules, "),
    ("'lora={dropout: 1.5}'", "'lora.dropout' must be a finite number in [0, 1) (got 1.5)"),
    ("'lora={target_modules: [[q]]}'", "'lora.target_modules' must be a string or a list of strings"),
    ("lora=[8]", "'lora' must be a mapping of names to values or null (got [8])"),
    ("ref_sync_steps=2 reference=precomputed", "'ref_sync_steps' (TR-DPO) needs reference: copy"),
    ("warmup_steps=10 max_steps=5", "'warmup_steps' (10) must be <= 'max_steps' (5)"),
    ("learning_rat=1e-3", "override: unknown key 'learning_rat'; did you mean 'learning_rate'?"),
    # TRL's and transformers' names (prefkit.train.vocabulary), and the settings that came with them
    ("gradient_accumulation_step=2", "unknown key 'gradient_accumulation_step'; did you mean "
                                     "'gradient_accumulation_steps'?"),
    ("gradient_accumulation_steps=2 grad_accum=4", "'gradient_accumulation_steps' and 'grad_accum' both set "
                                                   "grad_accum (2 and 4)"),
    ("optim=sgd", "'optim' can only be 'adamw_torch' or 'adamw_torch_fused' in prefkit (got 'sgd')"),
    ("eval_strategy=epoch", "'eval_strategy' must be one of no, steps in prefkit"),
    ("bf16=1", "'bf16' must be true or false"),
    ("hub_token=hf_x", "a token does not belong in a config file"),
    ("per_device_train_batch_size=0", "'batch_size' must be an integer >= 1 (got 0)"),
    ("warmup_ratio=1.5", "'warmup_ratio' must be a finite number in [0, 1] (got 1.5)"),
    ("warmup_ratio=0.1 warmup_steps=2", "set one of 'warmup_steps' and 'warmup_ratio'"),
    ("schedule=cosine_with_min_lr", "'schedule' cosine_with_min_lr: One of min_lr or min_lr_rate should be set"),
    ("schedule=warmup_stable_decay", "'schedule' warmup_stable_decay: "),
    ("schedule=reduce_lr_on_plateau", "'schedule' reduce_lr_on_plateau steps on a validation metric"),
    ("'schedule_kwargs={min_lr: [1]}' schedule=cosine_with_min_lr", "'schedule' cosine_with_min_lr: "),
    ("merge_lora=true", "'merge_lora' needs a LoRA adapter"),
    ("chat_template=template.jinja", "'chat_template' 'template.jinja' is neither a file nor a Jinja template"),
    ("'chat_template=\"{% if %}\"'", "'chat_template': not a valid Jinja template (line 1: "),
    ("'data=[{path: a.jsonl, weight: 0}]'", "'data[0].weight' must be a finite number > 0 (got 0)"),
    ("'data=[{weight: 1}]'", "'data[0]' needs a 'path'"),
    ("'data=[{path: a.jsonl, wieght: 2}]'", "'data[0]' has unknown key 'wieght' (keys: path, weight, split)"),
    ("'data=[a.jsonl]'", "'data' must be a string or a list of mappings (got ['a.jsonl'])"),
    ("learning_rate=.nan max_steps=0 max_grad_norm=-1",
     "config: 3 problems: 'learning_rate' must be a finite number > 0 (got nan); 'max_grad_norm' must be a finite "
     "number > 0 or null (got -1); 'max_steps' must be an integer >= 1 or null (got 0)"),  # in the fields' order
]


@pytest.mark.parametrize("overrides, message", TRAIN_CONFIG, ids=[o.strip("'") for o, _ in TRAIN_CONFIG])
def test_train_config_values(workspace, tmp_path, capsys, overrides, message):
    out = previous_run(tmp_path / "run")
    before = snapshot(tmp_path)
    fails_cleanly(["train", "--model", str(workspace["model"]), "--data", str(workspace["data"]),
                   "--output-dir", str(out), *shlex.split(overrides)], capsys, [message])
    assert snapshot(tmp_path) == before


SELFPLAY_CONFIG = [
    ("learning_rate=-1e-5", "'learning_rate' must be a finite number > 0 (got -1e-05)"),
    ("learning_rate=.nan", "'learning_rate' must be a finite number > 0 (got nan)"),
    ("temperature=0", "'temperature' must be a finite number > 0 (self-play samples K different answers: there "
                      "is no greedy decoding) (got 0)"),
    ("temperature=-1", "'temperature' must be a finite number > 0"),
    ("temperature=.inf", "'temperature' must be a finite number > 0"),
    ("top_p=0", "'top_p' must be a finite number in (0, 1] (got 0)"),
    ("top_p=1.5", "'top_p' must be a finite number in (0, 1] (got 1.5)"),
    ("max_grad_norm=-1", "'max_grad_norm' must be a finite number > 0 or null (got -1)"),
    ("samples_per_prompt=1", "'samples_per_prompt' must be an integer >= 2 (got 1)"),
    ("iterations=0", "'iterations' must be an integer >= 1 (got 0)"),
    ("epochs=0", "'epochs' must be an integer >= 1 (got 0)"),
    ("max_new_tokens=0", "'max_new_tokens' must be an integer >= 1 (got 0)"),
    ("mixture_coef=2", "'mixture_coef' must be a finite number in [0, 1] (got 2)"),
    ("refresh_every=0", "'refresh_every' must be an integer >= 1 or null (got 0)"),
    ("refresh_gap=-1", "'refresh_gap' must be a finite number > 0 or null (got -1)"),
    ("pairs=best", "'pairs' must be one of auto, all, best_worst, top2, canonical (got 'best')"),
    ("loss=kto", "loss 'kto' trains on single completions labelled desirable or undesirable, which "
                 "`prefkit selfplay` does not build"),
    ("loss_params.eta=.inf", "'loss_params.eta' must be a finite number (got inf)"),
    ("judge_chunk_size=0", "'judge_chunk_size' must be an integer >= 1 (got 0)"),
    ("temperature=0 learning_rate=-1 top_p=0", "config: 3 problems: "),
]


@pytest.mark.parametrize("overrides, message", SELFPLAY_CONFIG, ids=[o for o, _ in SELFPLAY_CONFIG])
def test_selfplay_config_values(workspace, tmp_path, capsys, overrides, message):
    out = previous_run(tmp_path / "run")
    before = snapshot(tmp_path)
    fails_cleanly(["selfplay", "--model", str(workspace["model"]), "--output-dir", str(out), *shlex.split(overrides)],
                  capsys, [message])
    assert snapshot(tmp_path) == before


# --- config files -------------------------------------------------------------------------------------------------

def alias_bomb(line: str, levels: int = 9) -> bytes:
    """YAML whose aliases expand to 9**levels strings (cheap to parse, ruinous to walk), used in `line` as %s."""
    lines = ["a0: &a0 [" + ", ".join(["jsonl"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n" + line % f"*a{levels - 1}" + "\n").encode()


CONFIG_FILES = {
    "bomb-in-report_to": (alias_bomb("report_to: %s"), ["'report_to' must be a list of strings (got [[[...]"]),
    "bomb-in-loss_params": (alias_bomb("loss_params: {beta: %s}"), ["'loss_params.beta' must be a finite number"]),
    "bomb-in-lora": (alias_bomb("lora: {target_modules: %s}"), ["'lora.target_modules' must be a string or a list"]),
    "bomb-in-loss": (alias_bomb("loss: %s"), ["'loss' must be a string or a list of strings"]),
    "not-utf8": (b"learning_rate: 1.0e-6\nschedule: \"cos\xe9ne\"\n", ["cfg.yaml line 5: not valid UTF-8: byte 0xe9 at "
                                                                       "column 15"]),
    "not-yaml": (b"learning_rate: [1.0e-6\n", ["cfg.yaml: not valid YAML (line 5, column 1: expected ',' or ']'"]),
    "not-a-mapping": (b"- learning_rate\n", ["cfg.yaml: expected a mapping of config keys at the top level"]),
    "unknown-key": (b"lerning_rate: 1.0e-6\n", ["cfg.yaml: unknown key 'lerning_rate'; did you mean 'learning_rate'?"]),
    "all-problems-at-once": (b"lerning_rate: 1.0e-6\nmax_stepz: 3\nepochs: 0\n",
                             ["config: 3 problems: ", "unknown key 'lerning_rate'", "unknown key 'max_stepz'",
                              "'epochs' must be a finite number > 0 (got 0)"]),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_config_files(workspace, tmp_path, capsys, case):
    content, expected = CONFIG_FILES[case]
    head = f"model: {workspace['model']}\ndata: {workspace['data']}\noutput_dir: {tmp_path / 'run'}\n"
    config = tmp_path / "cfg.yaml"
    config.write_bytes(content if case.startswith("not-a") else head.encode() + content)
    before = snapshot(tmp_path)
    start = time.perf_counter()
    fails_cleanly(["train", "--config", str(config)], capsys, expected)
    assert time.perf_counter() - start < 10  # the alias bomb fails at once (it took 105 s once the data had loaded)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_missing_config_file(tmp_path, capsys):
    fails_cleanly(["train", "--config", str(tmp_path / "nope.yaml")], capsys,
                  [f"config file not found: {tmp_path / 'nope.yaml'}"])


# --- data files: the file, the row (line) and the field ---------------------------------------------------------

def rows(*extra: dict) -> list[dict]:
    good = [{"prompt": "say red", "chosen": " red sun", "rejected": " blue moon"},
            {"prompt": "say cat", "chosen": " cat dog", "rejected": " fish"}]
    return good + list(extra)


def jsonl(rows_: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows_).encode()


def chat(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def conversational(**completion) -> dict:
    return {"prompt": chat("user", "say red"), "chosen": chat("assistant", "red sun"),
            "rejected": chat("assistant", "blue"), **{k: chat("assistant", v) for k, v in completion.items()}}


DATA_FILES = {
    "jsonl-not-utf8": ("data.jsonl", jsonl(rows()) + b'{"prompt": "say \xff red", "chosen": " a", "rejected": " b"}\n',
                       ["1 bad row out of 3", "data.jsonl line 3: not valid UTF-8: byte 0xff at column 17"]),
    "jsonl-latin1-after-utf8": ("data.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows(
        {"prompt": "caf\u00e9", "chosen": " a", "rejected": " b"})).encode()[:-1] + b"\xe9\"}\n",
                                ["data.jsonl line 3: not valid UTF-8: byte 0xe9 at column "]),
    "json-not-utf8": ("data.json", b'[{"prompt": "say red", "chosen": " red", "rejected": " blue"},\n'
                                   b' {"prompt": "\xfe", "chosen": " a", "rejected": " b"}]\n',
                      ["data.json line 2: not valid UTF-8: byte 0xfe at column 14"]),
    "csv-not-utf8": ("data.csv", b"prompt,chosen,rejected\nsay red, red, blue\nsay \xc3\x28, a, b\n",
                     ["data.csv line 3: not valid UTF-8: byte 0xc3 at column 5"]),
    "parquet-damaged": ("data.parquet", b"PAR1 this is not parquet PAR1", ["data.parquet: not a readable parquet file"]),
    "eos-inside-completion": ("data.jsonl", jsonl(rows({"prompt": "say", "chosen": " red<|end|> blue", "rejected": " b"})),
                              ["data.jsonl line 3, field 'chosen': contains the EOS token '<|end|>' before its end"]),
    "role-marker-in-rejected": ("data.jsonl", jsonl(rows({"prompt": "say", "chosen": " a", "rejected": " b<|user|>c"})),
                                ["data.jsonl line 3, field 'rejected': contains '<|user|>', the text of one of the "
                                 "tokenizer's special tokens"]),
    "bos-in-completion": ("data.jsonl", jsonl([{"prompt": "say", "chosen": "<s> a", "rejected": " b"}] + rows()),
                          ["data.jsonl line 1, field 'chosen': contains '<s>'"]),
    "chat-eos-inside-content": ("data.jsonl", jsonl([conversational(), conversational(chosen="red<|end|>sun")]),
                                ["data.jsonl line 2, field 'chosen': contains the EOS token '<|end|>' before its end"]),
    "chat-role-marker": ("data.jsonl", jsonl([conversational(rejected="blue<|assistant|>red"), conversational()]),
                         ["data.jsonl line 1, field 'rejected': contains '<|assistant|>'"]),
}


@pytest.mark.parametrize("case", DATA_FILES)
def test_data_files(workspace, tmp_path, capsys, case):
    name, content, expected = DATA_FILES[case]
    data = tmp_path / name
    data.write_bytes(content)
    before = snapshot(tmp_path)
    fails_cleanly(["train", "--model", str(workspace["model"]), "--data", str(data), "--output-dir",
                   str(tmp_path / "run"), "--max-steps", "1", "progress=false"], capsys,
                  [text.replace(name, str(data), 1) for text in expected], one_line=False)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


def test_control_token_rows_can_be_skipped_and_are_recorded(workspace, tmp_path):
    from prefkit.data import prepare
    from prefkit.modeling.load import load_tokenizer

    data = tmp_path / "data.jsonl"
    data.write_bytes(jsonl(rows({"prompt": "say", "chosen": " red<|user|>", "rejected": " b"})))
    prepared = prepare(data, load_tokenizer(str(workspace["model"])), on_bad_rows="skip", run_dir=tmp_path / "run")
    assert len(prepared.examples) == 2 and prepared.stats["skipped"] == 1
    skipped = json.loads((tmp_path / "run" / "skipped_rows.jsonl").read_text())
    assert skipped["row"] == 3 and skipped["field"] == "chosen" and "<|user|>" in skipped["reason"]


# --- model files: one line naming the file, and no code from a pickle ever runs ---------------------------------

class RunsCode:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def damage_safetensors(model: Path, marker: Path) -> list[str]:
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return [f"{model / 'model.safetensors'}: not a readable safetensors file", "damaged or incomplete"]


def truncate_safetensors(model: Path, marker: Path) -> list[str]:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return [f"{weights}: not a readable safetensors file"]


def malicious_pickle(model: Path, marker: Path) -> list[str]:
    import torch

    (model / "model.safetensors").unlink()
    torch.save({"weight": RunsCode(marker)}, model / "pytorch_model.bin")
    return [f"{model / 'pytorch_model.bin'}: holds more than tensors", "does not unpickle it"]


def damaged_tokenizer(model: Path, marker: Path) -> list[str]:
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    return [f"could not load a tokenizer from '{model}'", "tokenizer.json damaged"]


MODEL_FILES = [damage_safetensors, truncate_safetensors, malicious_pickle, damaged_tokenizer]


@pytest.mark.parametrize("damage", MODEL_FILES, ids=[f.__name__ for f in MODEL_FILES])
def test_model_files(workspace, tmp_path, capsys, damage):
    model = Path(shutil.copytree(workspace["model"], tmp_path / "model"))
    marker = tmp_path / "code-ran"
    expected = damage(model, marker)
    before = snapshot(tmp_path)
    fails_cleanly(["train", "--model", str(model), "--data", str(workspace["data"]), "--output-dir",
                   str(tmp_path / "run"), "--max-steps", "1", "progress=false"], capsys, expected)
    assert not marker.exists()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize("damage", MODEL_FILES[:3], ids=[f.__name__ for f in MODEL_FILES[:3]])
def test_a_reward_judge_with_damaged_weights(workspace, tmp_path, damage):
    model = Path(shutil.copytree(workspace["model"], tmp_path / "model"))
    marker = tmp_path / "code-ran"
    expected = damage(model, marker)
    with pytest.raises(PrefkitError) as caught:
        load_judge(f"reward:{model}")
    assert all(text in str(caught.value) for text in expected) and "\n" not in str(caught.value)
    assert not marker.exists()


# --- judges: a preference is a real number in [0, 1] ---------------------------------------------------------------

BAD_PROMPT = "the prompt the judge gets wrong"


def judge_returning(bad, batched: bool = False):
    def judge(prompt, a, b):
        return bad if prompt == BAD_PROMPT else 0.5
    if batched:
        judge.batch = lambda prompts, as_, bs: [judge(*triple) for triple in zip(prompts, as_, bs)]
    return judge


# (value returned on the bad prompt, the message per pair, the message when the judge returns a batch)
JUDGE_VALUES = [
    ("0.7", "returned '0.7', not a number", "returned ['0.7', '0.7'], not numbers"),
    (True, "returned True, not a number", "returned [True, True], not numbers"),
    (np.bool_(False), "returned False, not a number", "not numbers"),
    (None, "returned None, not a number", "returned [None, None], not numbers"),
    (0.5 + 0j, "returned (0.5+0j), not a number", "not numbers"),
    ([0.5], "returned [0.5], not a number", "not numbers"),
    (float("nan"), "returned NaN", "returned NaN"),
    (1.5, "returned 1.5, outside [0, 1]", "returned 1.5, outside [0, 1]"),
    (float("-inf"), "returned -inf, outside [0, 1]", "returned -inf, outside [0, 1]"),
]


@pytest.mark.parametrize("batched", [False, True], ids=["per-pair", "batched"])
@pytest.mark.parametrize("bad, message, batch_message", JUDGE_VALUES, ids=[repr(v) for v, *_ in JUDGE_VALUES])
def test_judge_values(bad, message, batch_message, batched):
    judge = load_judge(judge_returning(bad, batched), name="my-judge")
    prompts = ["p0", "p1", BAD_PROMPT, "p3"]
    with pytest.raises(JudgeError) as caught:
        preference_matrix(judge, prompts, [["a", "bb"]] * 4, chunk_size=4)
    assert caught.value.prompt_index == 2 and caught.value.judge == "my-judge"
    assert str(caught.value).startswith("judge my-judge ") and "on prompt 2" in str(caught.value)
    assert (batch_message if batched else message) in str(caught.value)


def test_real_numbers_of_every_kind_are_accepted():
    import torch

    for value in (1, 0.25, np.float32(0.5), np.int64(1), torch.tensor(0.75), np.array(0.5)):
        assert load_judge(judge_returning(value), name="j").compare([BAD_PROMPT], ["a"], ["b"])[0] == float(value)
    batch = load_judge(judge_returning(None), name="j")
    batch.fn.batch = lambda prompts, as_, bs: torch.full((len(prompts),), 0.25, dtype=torch.bfloat16)
    batch._batch = batch.fn.batch
    assert list(batch.compare(["q", "r"], ["a", "a"], ["b", "b"])) == [0.25, 0.25]


# --- the training length, once the data fixes it ------------------------------------------------------------------

def test_warmup_longer_than_the_run_once_the_data_size_is_known():
    config = TrainConfig(model="m", data="d", output_dir="o", warmup_steps=10, epochs=2.0).validate()
    assert config.total_steps(steps_per_epoch=5) == 10
    with pytest.raises(PrefkitError, match=r"'warmup_steps' \(10\) must be <= the run's 6 optimizer steps"):
        config.total_steps(steps_per_epoch=3)
    assert TrainConfig(model="m", data="d", output_dir="o", max_steps=7).validate().total_steps(100) == 7


def test_library_validation_reports_every_problem(tmp_path):
    config = TrainConfig(model="", data="d", output_dir="o", learning_rate=float("nan"), epochs=0)
    with pytest.raises(PrefkitError, match=r"^config: 3 problems: 'model' is required \(flag --model\); "):
        config.validate()
