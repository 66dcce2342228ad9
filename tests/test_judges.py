"""Judges that are Python functions (a user's callable, `module:function`, the task oracle), the preference matrix
and win rates built from any judge, every way a judge can fail (one JudgeError naming the prompt and the judge),
and the checkpoint that keeps what was judged before a failure so a second call judges only the rest.
Model judges (reward, pairwise) are in test_judges_models.py."""

import math
import warnings

import numpy as np
import pytest

from prefkit.errors import PrefkitError
from prefkit.judges import Judge, JudgeError, load_judge, preference_matrix, win_rates
from prefkit.tasks import SyntheticTask, as_row

TASK = SyntheticTask()
CYCLIC = "pick: red blue green gray pink"  # a 5-cycle with values in [0.05, 0.95]


def oracle(prompt, a, b):
    return TASK.preference(prompt, a, b)


def length_judge(prompt, a, b):
    return 1.0 / (1.0 + math.exp(len(b) - len(a)))


def check_matrix(P):
    assert np.all((P >= 0) & (P <= 1))
    np.testing.assert_allclose(P + np.swapaxes(P, -1, -2), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.diagonal(P, axis1=-2, axis2=-1), 0.5)


# --- the task oracle ------------------------------------------------------------------------------------------

def test_task_oracle_matrix_is_the_task_matrix():
    judge = load_judge("task")
    assert judge.name == "task" and isinstance(judge, Judge)
    for prompts in (["pick: rock paper scissors", "pick: sun moon star", "pick: ant bee cat"], [CYCLIC]):
        P = preference_matrix(judge, prompts, [TASK.canonical(p) for p in prompts])
        assert P.shape == (len(prompts), len(TASK.canonical(prompts[0])), len(TASK.canonical(prompts[0])))
        for p, matrix in zip(prompts, P):
            np.testing.assert_allclose(matrix, TASK.preference_matrix(p), atol=1e-12)
        check_matrix(P)


def test_task_oracle_takes_conversational_rows():
    rows = [as_row(CYCLIC, conversational=True, a=x) for x in TASK.canonical(CYCLIC)]
    prompt = rows[0]["prompt"]
    P = preference_matrix("task", [prompt], [[row["a"] for row in rows]])
    np.testing.assert_allclose(P[0], TASK.preference_matrix(CYCLIC), atol=1e-12)
    assert load_judge("task:synthetic").compare([prompt], [rows[1]["a"]], [rows[0]["a"]])[0] == pytest.approx(
        TASK.preference(CYCLIC, "blue", "red"))


def test_preference_matrix_rejects_ragged_or_mismatched_inputs():
    with pytest.raises(PrefkitError, match="prompt 1 has 2"):
        preference_matrix(oracle, [CYCLIC, CYCLIC], [["red", "blue", "pink"], ["red", "blue"]])
    with pytest.raises(PrefkitError, match="2 prompts but 1 response lists"):
        preference_matrix(oracle, [CYCLIC, CYCLIC], [["red", "blue"]])


# --- matrices and win rates -----------------------------------------------------------------------------------

def test_position_bias_is_averaged_out_of_the_matrix():
    """A judge that adds 0.05 for the first slot: raw P + Pᵀ = 1.1, but the matrix is the unbiased one."""
    def biased(prompt, a, b):
        return oracle(prompt, a, b) + 0.05

    canonical = TASK.canonical(CYCLIC)
    assert biased(CYCLIC, "red", "blue") + biased(CYCLIC, "blue", "red") == pytest.approx(1.1)
    P = preference_matrix(biased, [CYCLIC], [canonical])
    np.testing.assert_allclose(P[0], TASK.preference_matrix(CYCLIC), atol=1e-12)
    check_matrix(P)


def test_win_rates_are_the_mean_over_the_others():
    P = np.array([[0.5, 0.9, 0.2], [0.1, 0.5, 0.6], [0.8, 0.4, 0.5]])
    np.testing.assert_allclose(win_rates(P[None]), [[0.55, 0.35, 0.6]])
    np.testing.assert_allclose(win_rates(P), [0.55, 0.35, 0.6])
    canonical = TASK.canonical(CYCLIC)
    expected = (TASK.preference_matrix(CYCLIC).sum(1) - 0.5) / 4
    np.testing.assert_allclose(win_rates(preference_matrix("task", [CYCLIC], [canonical]))[0], expected)
    with pytest.raises(PrefkitError, match="square"):
        win_rates(np.zeros((2, 3, 4)))
    with pytest.raises(PrefkitError, match="at least 2"):
        win_rates(np.full((2, 1, 1), 0.5))


def test_identical_responses_tie_and_empty_inputs_work():
    P = preference_matrix(length_judge, ["q"], [["aa", "aa", "a"]])
    assert P[0, 0, 1] == 0.5 and P[0, 0, 2] == pytest.approx(length_judge("q", "aa", "a"))
    assert preference_matrix(length_judge, [], []).shape == (0, 0, 0)


# --- Python callables -----------------------------------------------------------------------------------------

MODULE = '''
import math
calls = []

def length_judge(prompt, a, b):
    calls.append(prompt)
    return 1.0 / (1.0 + math.exp(len(b) - len(a)))

class Holder:
    @staticmethod
    def shortest(prompt, a, b):
        return 1.0 / (1.0 + math.exp(len(a) - len(b)))

not_callable = 3
'''


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    (tmp_path / "prefkit_test_judges.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys
    sys.modules.pop("prefkit_test_judges", None)
    module = importlib.import_module("prefkit_test_judges")
    yield module
    sys.modules.pop("prefkit_test_judges", None)


def test_module_function_judge(judge_module):
    judge = load_judge("prefkit_test_judges:length_judge")
    assert judge.name == "prefkit_test_judges:length_judge"
    values = judge.compare(["q", "q"], ["long answer", "a"], ["a", "long answer"])
    np.testing.assert_allclose(values, [length_judge("q", "long answer", "a"), length_judge("q", "a", "long answer")])
    assert judge_module.calls == ["q", "q"]  # the user's own function ran
    assert judge("q", "a", "bb") == pytest.approx(length_judge("q", "a", "bb"))
    dotted = load_judge("prefkit_test_judges:Holder.shortest")
    assert dotted.compare(["q"], ["a"], ["bbb"])[0] == pytest.approx(1 / (1 + math.exp(-2)))
    check_matrix(preference_matrix(judge, ["q", "r"], [["a", "bb", "ccc"], ["dddd", "e", "ff"]]))


@pytest.mark.parametrize("spec, message", [
    ("prefkit_no_such_module_zz:f", "no module named 'prefkit_no_such_module_zz'"),
    ("os:nonexistent", "'os' has no attribute 'nonexistent'"),
    ("prefkit_test_judges:not_callable", "is a int, not a function"),
    ("os:", "'module:function'"),
    ("", "a judge is a callable"),
    ("justaword", "unknown judge 'justaword'"),
    ("reward:", "needs a model"),
    ("pairwise:", "needs a model"),
    ("task:nosuchtask", "no bundled task 'nosuchtask'"),
])
def test_bad_judge_specs_give_one_clear_error(judge_module, spec, message):
    with pytest.raises(PrefkitError, match=message.replace("(", r"\(")):
        load_judge(spec)


def test_a_callable_and_a_judge_load_as_themselves():
    judge = load_judge(length_judge)
    assert judge.name.endswith(":length_judge") and load_judge(judge) is judge
    assert load_judge(lambda p, a, b: 0.5, name="half").name == "half"


def test_unknown_options_are_named():
    with pytest.raises(PrefkitError, match="unknown option 'batchsize'"):
        load_judge("reward:/some/model", batchsize=8)
    with pytest.raises(PrefkitError, match="'task': unknown option 'device' .*takes no options"):
        load_judge("task", device="cpu")
    with pytest.raises(PrefkitError, match="unknown option 'template'"):
        load_judge(length_judge, template="{prompt}")


def test_a_python_judge_can_ask_both_orders():
    """compare with both_orders averages P(a, b) and 1 - P(b, a): the slot bias of a callable cancels."""
    def biased(prompt, a, b):
        return oracle(prompt, a, b) + 0.05

    plain, averaged = load_judge(biased), load_judge(biased, both_orders=True)
    assert plain.compare([CYCLIC], ["red"], ["blue"])[0] == pytest.approx(oracle(CYCLIC, "red", "blue") + 0.05)
    assert averaged.compare([CYCLIC], ["red"], ["blue"])[0] == pytest.approx(oracle(CYCLIC, "red", "blue"))


def test_compare_rejects_lists_of_different_lengths():
    with pytest.raises(PrefkitError, match="equally long"):
        load_judge(length_judge).compare(["q", "q"], ["a"], ["b", "c"])


# --- failures: one JudgeError naming the prompt and the judge -------------------------------------------------

BAD = "the prompt that breaks the judge"


def per_pair(bad_value):
    """A judge that behaves on every prompt except BAD, where it returns `bad_value` (or raises it)."""
    def judge(prompt, a, b):
        if prompt != BAD:
            return length_judge(prompt, a, b)
        if isinstance(bad_value, Exception):
            raise bad_value
        return bad_value
    return judge


def batched(bad_value):
    """The same judge called once per batch (a `.batch` attribute); `"short"` returns one value too few."""
    single = per_pair(bad_value)

    def batch(prompts, as_, bs):
        if bad_value == "short" and BAD in prompts:
            return [0.5] * (len(prompts) - 1)
        return np.array([single(*triple) for triple in zip(prompts, as_, bs)])
    single.batch = batch
    return single


FAILURES = [
    (per_pair(RuntimeError("rate limited")), "failed on prompt 3: RuntimeError: rate limited"),
    (per_pair(float("nan")), "returned NaN on prompt 3"),
    (per_pair(1.5), r"returned 1.5, outside \[0, 1\], on prompt 3"),
    (per_pair(-0.25), r"returned -0.25, outside \[0, 1\], on prompt 3"),
    (per_pair("yes"), "returned 'yes', not a number on prompt 3"),
    (batched(RuntimeError("rate limited")), "failed on prompt 3: RuntimeError: rate limited"),
    (batched(float("nan")), "returned NaN on prompt 3"),
    (batched(1.5), r"returned 1.5, outside \[0, 1\], on prompt 3"),
    (batched("short"), r"returned \d+ values .* on prompt 3"),
]
IDS = ["raises", "nan", "above-1", "below-0", "not-a-number",
       "batch-raises", "batch-nan", "batch-above-1", "batch-wrong-length"]


@pytest.mark.parametrize("fn, message", FAILURES, ids=IDS)
def test_compare_failure_names_prompt_and_judge(fn, message):
    judge = load_judge(fn, name="flaky-judge")
    prompts = ["p0", "p1", "p2", BAD, "p4"]
    with pytest.raises(JudgeError, match="judge flaky-judge " + message) as caught:
        judge.compare(prompts, ["aa"] * 5, ["b"] * 5)
    assert caught.value.prompt_index == 3 and caught.value.judge == "flaky-judge"
    assert isinstance(caught.value, PrefkitError)


@pytest.mark.parametrize("fn, message", FAILURES, ids=IDS)
def test_preference_matrix_failure_names_prompt_and_judge(fn, message):
    prompts = ["p0", "p1", "p2", BAD, "p4"]
    with pytest.raises(JudgeError, match="judge flaky-judge " + message) as caught:
        preference_matrix(load_judge(fn, name="flaky-judge"), prompts, [["a", "bb", "ccc"]] * 5, chunk_size=5)
    assert caught.value.prompt_index == 3


def test_evaluate_keeps_only_the_prompts_before_the_failure():
    """The contract preference_matrix relies on: values before prompt k are good, the rest are NaN."""
    judge = load_judge(per_pair(1.5), name="j")
    values, error = judge.judge_batch(["p0", "p0", BAD, BAD, "p9"], ["aa", "a", "aa", "a", "aa"], ["b"] * 5,
                                   np.array([0, 0, 1, 1, 2]))
    assert error.prompt_index == 1 and "prompt 1" in str(error)
    np.testing.assert_allclose(values[:2], [length_judge("", "aa", "b"), 0.5])
    assert np.isnan(values[2:]).all()
    values, error = judge.judge_batch(["p0", "p1"], ["a", "bb"], ["b", "a"], np.array([0, 1]))
    assert error is None and not np.isnan(values).any()


def test_original_exception_is_chained():
    with pytest.raises(JudgeError) as caught:
        load_judge(per_pair(KeyError("missing")), name="j").compare([BAD], ["a"], ["b"])
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_batch_that_fails_only_as_a_whole_is_judged_prompt_by_prompt():
    """A batch-size fault (say, out of memory on the big batch) is not the judge being wrong about a prompt."""
    def judge(prompt, a, b):
        return length_judge(prompt, a, b)

    def batch(prompts, as_, bs):
        if len(set(prompts)) > 1:
            raise MemoryError("batch too large")
        return [judge(*t) for t in zip(prompts, as_, bs)]
    judge.batch = batch
    with pytest.warns(RuntimeWarning, match="succeeded prompt by prompt"):
        values = load_judge(judge).compare(["p", "q"], ["aa", "a"], ["b", "bbb"])
    np.testing.assert_allclose(values, [length_judge("p", "aa", "b"), length_judge("q", "a", "bbb")])


# --- checkpoint and resume ------------------------------------------------------------------------------------

PROMPTS = [f"prompt {i}" for i in range(7)]
RESPONSES = [["a" * (i + 1), "b" * (2 * i + 1), "c" * 3] for i in range(7)]
K = 3


class Counting:
    """length_judge, counting calls per prompt, failing on prompt `fail_at` (if any)."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, prompt, a, b):
        if self.fail_at is not None and prompt == PROMPTS[self.fail_at]:
            raise ConnectionError("judge API down")
        self.calls.append(prompt)
        return length_judge(prompt, a, b)


def batch_counting(fail_at=None):
    counting = Counting(fail_at)

    def judge(prompt, a, b):
        return counting(prompt, a, b)
    judge.batch = lambda ps, as_, bs: [counting(*t) for t in zip(ps, as_, bs)]
    judge.calls = counting.calls
    return judge


@pytest.mark.parametrize("make", [Counting, batch_counting], ids=["per-pair", "batched"])
def test_failure_keeps_what_was_judged_and_resume_judges_only_the_rest(tmp_path, make):
    path = tmp_path / "judged" / "matrices.npz"
    expected = preference_matrix(length_judge, PROMPTS, RESPONSES)
    failing = make(fail_at=4)  # prompt 4 sits in the middle of the chunk [3, 4, 5]
    with pytest.raises(JudgeError, match="judge flaky failed on prompt 4: ConnectionError: judge API down"):
        preference_matrix(load_judge(failing, name="flaky"), PROMPTS, RESPONSES, checkpoint=path, chunk_size=3)
    with np.load(path) as saved:
        np.testing.assert_allclose(saved["matrices"], expected[:4])  # prompts 0..3, including 3 from the bad chunk
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != path]  # no temporary files left behind

    working = make()
    P = preference_matrix(load_judge(working, name="flaky"), PROMPTS, RESPONSES, checkpoint=path, chunk_size=3)
    np.testing.assert_allclose(P, expected)
    assert sorted(set(working.calls)) == PROMPTS[4:]
    assert len(working.calls) == 3 * K * (K - 1)  # prompts 4, 5, 6; each ordered pair once

    again = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same inputs, same judge: nothing to warn about
        np.testing.assert_allclose(preference_matrix(load_judge(again, name="flaky"), PROMPTS, RESPONSES,
                                                     checkpoint=path), expected)
    assert again.calls == []


def test_checkpoint_of_other_inputs_is_not_reused(tmp_path):
    path = tmp_path / "matrices.npz"
    preference_matrix(length_judge, PROMPTS[:3], RESPONSES[:3], checkpoint=path)
    changed = [list(r) for r in RESPONSES[:3]]
    changed[1][0] = "different"
    counting = Counting()
    with pytest.warns(RuntimeWarning, match="other prompts or responses"):
        P = preference_matrix(counting, PROMPTS[:3], changed, checkpoint=path)
    assert len(counting.calls) == 3 * K * (K - 1)
    np.testing.assert_allclose(P, preference_matrix(length_judge, PROMPTS[:3], changed))
    with np.load(path) as saved:
        np.testing.assert_allclose(saved["matrices"], P)


def test_damaged_checkpoint_is_judged_again(tmp_path):
    path = tmp_path / "matrices.npz"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="could not be read"):
        P = preference_matrix(length_judge, PROMPTS[:2], RESPONSES[:2], checkpoint=path)
    check_matrix(P)
    with np.load(path) as saved:
        assert saved["matrices"].shape == (2, K, K)


def test_resuming_with_another_judge_warns(tmp_path):
    path = tmp_path / "matrices.npz"
    with pytest.raises(JudgeError):
        preference_matrix(load_judge(Counting(fail_at=2), name="first"), PROMPTS, RESPONSES, checkpoint=path,
                          chunk_size=1)
    with pytest.warns(RuntimeWarning, match="written by judge first"):
        preference_matrix(load_judge(Counting(), name="second"), PROMPTS, RESPONSES, checkpoint=path)
