"""What every judge is: a named preference oracle whose `compare(prompts, as_, bs)` returns P(a_i beats b_i | prompt_i),
checked. A judge kind implements one raw method, `_pairs`; this module owns the checking, so every kind fails the
same way: one `JudgeError` naming the judge, the prompt index and the problem, with the values judged before the
failure kept (`preference_matrix` writes them to its checkpoint before raising).

The checking is written against *owners*: the index of the prompt each pair belongs to, as the caller numbers its
prompts (`compare` numbers pairs 0..N-1; `preference_matrix` numbers the prompts it was given). Pairs arrive
grouped by owner in increasing order, so "every pair of prompts before k is good" is a prefix of the batch.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Sequence

import numpy as np

from prefkit.errors import PrefkitError


class JudgeError(PrefkitError):
    """A judge raised, returned NaN, a value outside [0, 1], something that is not a real number (a string, a
    bool) or the wrong number of values.

    `judge` is the judge's name and `prompt_index` the 0-based index of the prompt, in the list given to the call
    that failed, whose comparison went wrong."""

    def __init__(self, message: str, *, judge: str, prompt_index: int):
        super().__init__(message)
        self.judge = judge
        self.prompt_index = prompt_index


class PairFailure(Exception):
    """Raised by a judge kind that judges pair by pair, so the failing pair is known exactly: `values` holds the
    pairs before `position` (judged and good as far as the judge knows)."""

    def __init__(self, position: int, error: BaseException, values: Sequence[float]):
        super().__init__(str(error))
        self.position, self.error, self.values = position, error, list(values)


class BadOutput(Exception):
    """The judge returned something that is not one number per comparison."""


class Judge:
    """A preference oracle. Subclasses set `name` and implement `_pairs`; callers use `compare`.

    `both_orders`: the judge may prefer the first (or second) slot, so `compare` asks both orders and averages
    P(a, b) and 1 - P(b, a). `preference_matrix` always does this, for every judge.
    """

    name: str = "judge"
    both_orders: bool = False

    def _pairs(self, prompts: list, as_: list, bs: list):
        """Raw P(a_i beats b_i | prompt_i) for one batch, unchecked: anything np.asarray turns into [N] floats."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __call__(self, prompt, a, b) -> float:
        """One comparison, so a judge is also a `judge(prompt, a, b)` callable."""
        return float(self.compare([prompt], [a], [b])[0])

    def compare(self, prompts: Sequence, as_: Sequence, bs: Sequence) -> np.ndarray:
        """P(a_i beats b_i | prompt_i), shape [N], float64, every value checked to lie in [0, 1]."""
        prompts, as_, bs = list(prompts), list(as_), list(bs)
        if not len(prompts) == len(as_) == len(bs):
            raise PrefkitError(f"judge {self.name}: compare needs equally long lists; got {len(prompts)} prompts, "
                               f"{len(as_)} first and {len(bs)} second responses")
        if not self.both_orders:
            values, error = self.judge_batch(prompts, as_, bs, np.arange(len(prompts)))
            if error is not None:
                raise error
            return values
        # Interleave (a, b) and (b, a) so each prompt's pairs stay together and in order.
        values, error = self.judge_batch([p for p in prompts for _ in (0, 1)],
                                      [x for pair in zip(as_, bs) for x in pair],
                                      [x for pair in zip(bs, as_) for x in pair],
                                      np.repeat(np.arange(len(prompts)), 2))
        if error is not None:
            raise error
        return (values[0::2] + 1.0 - values[1::2]) / 2.0

    def judge_batch(self, prompts: list, as_: list, bs: list, owners: np.ndarray) -> tuple[np.ndarray, JudgeError | None]:
        """Judge one batch in the order given, never raising for the judge's own faults.

        Returns (values, error). With error None every value is good; otherwise error names the first failing
        prompt k and values are good for every pair whose owner is < k (NaN from there on)."""
        owners = np.asarray(owners, dtype=int)
        n = len(prompts)
        if n == 0:
            return np.empty(0), None
        judged, raised = n, None  # pairs [0, judged) have values; `raised` is what stopped the judge there
        try:
            raw = self._as_floats(self._pairs(prompts, as_, bs), n)
        except PairFailure as failure:  # judged pair by pair: the failing pair is known, nothing to re-run
            judged, raised = failure.position, failure.error
            raw = np.full(n, np.nan)
            raw[:judged] = np.asarray(failure.values[:judged], dtype=float)
        except Exception as error:  # a batch failed as a whole: find the prompt by judging prompt by prompt
            if len(np.unique(owners)) > 1:
                return self._localise(prompts, as_, bs, owners, error)
            return np.full(n, np.nan), self._error(int(owners[0]), error)
        bad = np.isnan(raw) | (raw < 0.0) | (raw > 1.0)
        bad[judged:] = False
        if raised is None and not bad.any():
            return raw, None
        # The earliest prompt with a problem is the one to report: a bad value, or the pair where the judge raised.
        first_bad = int(owners[bad].min()) if bad.any() else np.inf
        k = int(min(first_bad, owners[judged] if raised is not None else np.inf))
        values = np.where(owners < k, raw, np.nan)
        if not (bad & (owners == k)).any():
            return values, self._error(k, raised)
        first = raw[np.flatnonzero(bad & (owners == k))[0]]
        problem = "NaN" if np.isnan(first) else f"{float(first)!r}, outside [0, 1],"
        return values, JudgeError(f"judge {self.name} returned {problem} on prompt {k} "
                                  f"(a preference P(a beats b) must be a number in [0, 1])",
                                  judge=self.name, prompt_index=k)

    def _localise(self, prompts, as_, bs, owners, batch_error) -> tuple[np.ndarray, JudgeError | None]:
        values = np.full(len(prompts), np.nan)
        for k in np.unique(owners):  # owners are increasing, so this walks the prompts in order
            rows = np.flatnonzero(owners == k)
            part, error = self.judge_batch([prompts[i] for i in rows], [as_[i] for i in rows], [bs[i] for i in rows],
                                        owners[rows])
            if error is not None:
                return values, error
            values[rows] = part
        # Every prompt passed on its own (a batch-size fault such as running out of memory): keep the values.
        warnings.warn(f"judge {self.name} failed on a batch of {len(np.unique(owners))} prompts ({batch_error}) "
                      "but succeeded prompt by prompt; continuing", RuntimeWarning, stacklevel=3)
        return values, None

    def _as_floats(self, raw, n: int) -> np.ndarray:
        if hasattr(raw, "detach"):  # a torch tensor, possibly on an accelerator or in bfloat16
            raw = raw.detach().cpu()
            raw = raw.double().numpy() if raw.is_floating_point() or "int" in str(raw.dtype) else raw.numpy()
        if not isinstance(raw, (list, tuple)):
            raw = np.asarray(raw)
        if isinstance(raw, np.ndarray) and raw.dtype.kind in "iuf":
            values = raw.astype(float)
        else:  # checked item by item: np.asarray would read "0.7" and True as numbers
            items = raw.ravel() if isinstance(raw, np.ndarray) else raw
            try:
                values = np.array([real_number(item) for item in items], dtype=float)
            except BadOutput:
                raise BadOutput(f"returned {_short(raw)}, not numbers") from None
            values = values.reshape(raw.shape) if isinstance(raw, np.ndarray) else values
        if values.shape != (n,):
            raise BadOutput(f"returned {values.size} values (shape {values.shape}) for {n} comparisons")
        return values

    def _error(self, k: int, error: BaseException) -> JudgeError:
        if isinstance(error, BadOutput):  # our own finding about the output, not the judge's exception
            message = f"judge {self.name} {error} on prompt {k}"
        else:
            message = f"judge {self.name} failed on prompt {k}: {type(error).__name__}: {error}"
        judge_error = JudgeError(message, judge=self.name, prompt_index=k)
        judge_error.__cause__ = error  # keep the judge's own traceback for whoever debugs it
        return judge_error


def real_number(value) -> float:
    """`value` as a float when it is a real number (a 0-d array or tensor counts). Bools and strings are not,
    though float() takes them: a judge that returns "0.7" or True has a bug that must not pass silently."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadOutput(f"returned {_short(value)}, not a number")
    return float(value)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
