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
