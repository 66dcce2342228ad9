"""Model judges on tiny local models saved to disk and loaded by path, as a user's would be: the Bradley-Terry
reward model (σ of the reward difference, each response scored once, padding that does not change a score) and
the pairwise model (both orders averaged, so its slot bias is gone)."""

import numpy as np
import pytest
import torch
from scipy.special import expit

from prefkit.errors import PrefkitError
from prefkit.judges import RewardModelJudge, load_judge, preference_matrix, win_rates
from prefkit.judges.pairwise import TEMPLATE
from prefkit.judges.render import content, exchange, prompt_text
from prefkit.modeling.tiny import tiny_tokenizer

CORPUS = ["sort: 3 1 2", "1 2 3", "pick: rock paper scissors", "rock", "paper", "scissors", "a long answer here",
          "[PROMPT]", "[RESPONSE A]", "[RESPONSE B]", "what is best?"]
PROMPTS = ["pick: rock paper scissors", "sort: 3 1 2"]
RESPONSES = [["rock", "paper", "scissors is a long answer here", "rock"], ["1 2 3", "3 2 1", "3", "1 2 3 3 2 1"]]


def conversational(prompt, response):
    return [{"role": "user", "content": prompt}], [{"role": "assistant", "content": response}]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on two that wait on each other (a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = tiny_tokenizer(CORPUS, vocab_size=300)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, num_labels=1,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)  # pad_token_id left unset: the judge must set it
    path = tmp_path_factory.mktemp("models") / "classifier"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reward(classifier_dir):
    return load_judge(f"reward:{classifier_dir}", batch_size=3)


@pytest.fixture(scope="module")
def pairwise(classifier_dir):
    return load_judge(f"pairwise:{classifier_dir}", batch_size=5)


def score_alone(judge, text):
    """The model's logit for one text, unbatched and unpadded: the reference every batched score must match."""
    tokenizer, model = judge.tokenizer, judge.scorer.model
    special = not text.startswith(tokenizer.bos_token)
    ids = torch.tensor([tokenizer(text, add_special_tokens=special)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids.to(model.device)).logits[0, 0].item()


# --- the reward model -----------------------------------------------------------------------------------------

def test_reward_judge_loads_by_path(reward, classifier_dir):
    assert isinstance(reward, RewardModelJudge) and reward.name == f"reward:{classifier_dir}"
    model = reward.scorer.model
    assert not model.training and model.config.pad_token_id == reward.tokenizer.pad_token_id


@pytest.mark.parametrize("form", ["standard", "conversational"])
def test_reward_judge_is_sigmoid_of_reward_difference(reward, form):
    prompts, as_, bs = ["what is best?"] * 3, ["rock", "a long answer here", "paper"], ["scissors", "1", "paper"]
    if form == "conversational":
        pairs = [conversational(p, a) + conversational(p, b)[1:] for p, a, b in zip(prompts, as_, bs)]
        prompts, as_, bs = [x[0] for x in pairs], [x[1] for x in pairs], [x[2] for x in pairs]
    texts_a = [exchange(reward.tokenizer, p, a) for p, a in zip(prompts, as_)]
    texts_b = [exchange(reward.tokenizer, p, b) for p, b in zip(prompts, bs)]
    if form == "conversational":  # the whole conversation through the chat template, turn closed by EOS
        assert texts_a[0] == "<s><|user|>what is best?<|end|><|assistant|>rock<|end|>"
    else:
        assert texts_a[0] == "what is best?rock"
    r_a = np.array([score_alone(reward, t) for t in texts_a])
    r_b = np.array([score_alone(reward, t) for t in texts_b])
    assert abs(r_a[0] - r_b[0]) > 1e-4  # the untrained model does tell responses apart, so the check has teeth
    np.testing.assert_allclose(reward.compare(prompts, as_, bs), expit(r_a - r_b), atol=1e-6)
    assert reward.compare(prompts, as_, bs)[2] == 0.5


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A classifier with absolute position embeddings, where left padding shifts every position."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = tiny_tokenizer(CORPUS, vocab_size=300)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128, num_labels=1,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "gpt2"
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_left_padding_scores_the_same(classifier_dir, gpt2_dir, which):
    path = {"llama": classifier_dir, "gpt2": gpt2_dir}[which]
    right = load_judge(f"reward:{path}", batch_size=4)
    left = load_judge(f"reward:{path}", batch_size=4)
    left.tokenizer.padding_side = "left"
    texts = ["what is best?rock", "sort: 3 1 2 a long answer here and more", "1"]
    np.testing.assert_allclose(left.scorer(texts), right.scorer(texts), atol=1e-6)
    np.testing.assert_allclose(left.scorer(texts), [score_alone(right, t) for t in texts], atol=1e-6)


def test_reward_matrix_scores_each_response_once(reward):
    rows = []
    handle = reward.scorer.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        P = preference_matrix(reward, PROMPTS, RESPONSES)
    finally:
        handle.remove()
    # 2 prompts x 4 responses, one duplicate ("rock" twice): 7 distinct texts, not 2 * 4 * 3 = 24 pairs
    assert sum(rows) == 7
    assert P.shape == (2, 4, 4) and P[0, 0, 3] == 0.5
    rewards = [[score_alone(reward, exchange(reward.tokenizer, p, r)) for r in group]
               for p, group in zip(PROMPTS, RESPONSES)]
    for matrix, r in zip(P, np.array(rewards)):
        np.testing.assert_allclose(matrix, expit(r[:, None] - r[None, :]), atol=1e-6)
    np.testing.assert_allclose(P + P.transpose(0, 2, 1), 1.0, atol=1e-12)
    assert np.all((P >= 0) & (P <= 1)) and np.all(np.diagonal(P, axis1=1, axis2=2) == 0.5)
    assert win_rates(P).shape == (2, 4)


def test_a_model_that_outputs_nan_stops_the_run(classifier_dir):
    judge = load_judge(f"reward:{classifier_dir}")
    original = judge.scorer._forward
    judge.scorer._forward = lambda batch: np.where([[len(x) > 8] for x in batch], np.nan, original(batch))
    with pytest.raises(PrefkitError, match=f"judge reward:{classifier_dir} returned NaN on prompt 1"):
        judge.compare(["a", "what is best?", "b"], ["1", "a long answer here", "1"], ["2", "rock", "2"])


def test_model_judges_refuse_models_with_several_outputs(classifier_dir):
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    model = LlamaForSequenceClassification(AutoConfig.from_pretrained(classifier_dir, num_labels=3))
    with pytest.raises(PrefkitError, match="num_labels=3"):
        RewardModelJudge(model, AutoTokenizer.from_pretrained(classifier_dir))


# --- the pairwise model ---------------------------------------------------------------------------------------

def test_pairwise_input_format(pairwise):
    prompt, a = conversational("what is best?", "rock")
    assert pairwise.text(prompt, a, "paper") == (
        "[PROMPT]\n<|user|>what is best?<|end|><|assistant|>\n[RESPONSE A]\nrock\n[RESPONSE B]\npaper")
    assert pairwise.text("what is best?", "rock", "paper") == TEMPLATE.format(prompt="what is best?", a="rock",
                                                                              b="paper")


def test_pairwise_judge_averages_both_orders(pairwise):
    prompts, as_, bs = ["what is best?", "sort: 3 1 2"], ["rock", "1 2 3"], ["paper", "a long answer here"]
    raw_ab = expit([score_alone(pairwise, pairwise.text(*t)) for t in zip(prompts, as_, bs)])
    raw_ba = expit([score_alone(pairwise, pairwise.text(*t)) for t in zip(prompts, bs, as_)])
    assert np.all(np.abs(raw_ab + raw_ba - 1.0) > 1e-3)  # the raw model does favour a slot
    forward = pairwise.compare(prompts, as_, bs)
    np.testing.assert_allclose(forward, (raw_ab + 1.0 - raw_ba) / 2.0, atol=1e-6)
    np.testing.assert_allclose(forward + pairwise.compare(prompts, bs, as_), 1.0, atol=1e-12)
    assert pairwise("what is best?", "rock", "rock") == pytest.approx(0.5)


def test_pairwise_matrix_is_antisymmetric(pairwise):
    prompts = [conversational(p, "")[0] for p in PROMPTS]  # conversational prompts, string responses
    P = preference_matrix(pairwise, prompts, RESPONSES, chunk_size=1)
    np.testing.assert_allclose(P + P.transpose(0, 2, 1), 1.0, atol=1e-12)
    assert np.all(np.diagonal(P, axis1=1, axis2=2) == 0.5) and np.all((P >= 0) & (P <= 1))
    np.testing.assert_allclose(P[:, 0, 1], pairwise.compare(prompts, [r[0] for r in RESPONSES],
                                                            [r[1] for r in RESPONSES]), atol=1e-9)


def test_pairwise_template_must_name_its_three_slots(classifier_dir):
    with pytest.raises(PrefkitError, match="exactly the fields"):
        load_judge(f"pairwise:{classifier_dir}", template="{prompt} {a}")


# --- rendering ------------------------------------------------------------------------------------------------

def test_rendering_without_a_chat_template_joins_contents(reward):
    class Plain:
        chat_template = None
        bos_token = None

    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "best?"}]
    assert exchange(Plain(), prompt, "rock") == "be brief\n\nbest?\n\nrock"
    assert prompt_text(Plain(), prompt) == "be brief\n\nbest?"
    assert content([{"role": "assistant", "content": "rock"}]) == "rock"
    with pytest.raises(PrefkitError, match="expected a string or a list"):
        exchange(reward.tokenizer, {"prompt": "x"}, "rock")
