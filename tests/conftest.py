"""Shared test set-up: float64 by default (exact comparisons), and the bundled task's tiny model and tokenizer."""

import pytest
import torch

torch.set_default_dtype(torch.float64)


@pytest.fixture(scope="module")
def task():
    from prefkit.tasks import SyntheticTask

    return SyntheticTask()


@pytest.fixture(scope="module")
def tokenizer(task):
    return task.tokenizer()


@pytest.fixture(scope="module")
def model(task):
    """The task's tiny Llama, untrained (files that need another model define their own `model`)."""
    return task.model(seed=0, hidden_size=32).eval()


@pytest.fixture(scope="module")
def initial(tmp_path_factory):
    """The task's tiny untrained Llama and its tokenizer on disk: the initial policy of a self-play test run."""
    from prefkit.tasks import SyntheticTask

    task, path = SyntheticTask(), tmp_path_factory.mktemp("selfplay") / "initial"
    task.model(seed=0).save_pretrained(path)
    task.tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture
def no_model_copies(monkeypatch):
    """Fail the test if anything deep-copies a model (a reference or magnet must not be a second copy)."""
    import copy

    real_deepcopy = copy.deepcopy

    def deepcopy(obj, *args, **kwargs):
        if isinstance(obj, torch.nn.Module):
            raise AssertionError("a second copy of the model was made")
        return real_deepcopy(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", deepcopy)
