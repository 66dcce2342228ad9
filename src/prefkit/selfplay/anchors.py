"""The policies a self-play iteration compares against besides π_t: the magnet and the initial policy π_0.

Each is a `View` (`anchors.magnet()`, `anchors.initial()`): `with view as model:` gives a model that computes
as that policy (to score, to measure), and calling the view runs one forward pass as that policy (Nash-MD's
mixture sampler calls its reference so, token by token, while the policy generates). The anchors hold both
views and the magnet refresh, in one of two forms, so that the loop never asks which:

- full fine-tuning (`FullAnchors`): frozen copies of the weights (prefkit.modeling.reference.FrozenCopy), the
  magnet's refreshed by copying the policy's weights;
- LoRA (`AdapterAnchors`): states of the one base model in memory (prefkit.modeling.adapters). π_0 is the base
  with the adapter switched off (a fresh LoRA adapter adds exactly zero: peft initialises B to 0); the magnet is
  π_0 until its first refresh, then a second adapter slot beside the trained one, refreshed by copying the
  adapter's weights. No second base model is ever loaded.

The policy itself is loaded and saved here too (`load_policy`, `save_policy`): a full model, or with LoRA the
adapter alone on the base named by `model`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from prefkit.io import save_model
from prefkit.modeling import adapters
from prefkit.modeling.load import load_model
from prefkit.modeling.reference import FrozenCopy

MAGNET = "magnet"  # the adapter slot that holds the magnet once it has moved away from π_0


class View:
    """A model as one policy computes: `with view as model:` activates that policy's weights and restores the
    trained policy's afterwards; `view(...)` is one forward pass inside that context."""

    def __init__(self, model, state=contextlib.nullcontext):
        self.model, self._state, self._active = model, state, []

    def __enter__(self):
        context = self._state()
        self._active.append(context)
        return context.__enter__() or self.model

    def __exit__(self, *exc) -> None:
        self._active.pop().__exit__(*exc)

    def __call__(self, *args, **kwargs):
        with self as model:
            return model(*args, **kwargs)


def using(anchor):
    """`with using(anchor) as model:` for a View or for a plain model (used as it is)."""
    return anchor if isinstance(anchor, View) else contextlib.nullcontext(anchor)


def policy_path(out: Path, iteration: int, config) -> str:
    """Where π_iteration is saved: the initial model for 0, else the policy saved after that iteration."""
    return str(out / f"iter-{iteration:04d}" / "policy") if iteration else config.model


def load_policy(out: Path, iteration: int, config):
    """π_iteration from `policy_path`; with LoRA, the base named by `model` with iteration's adapter on it (a
    fresh adapter for 0, its random init seeded by `seed` so that every run starts from the same π_0)."""
    options = dict(dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                   gradient_checkpointing=config.gradient_checkpointing, cpu_matmul=config.cpu_matmul)
    if not config.lora:
        return load_model(policy_path(out, iteration, config), fuse=config.fuse_modules, **options)
    if iteration == 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return load_model(config.model, lora=config.lora, fuse=config.fuse_modules, **options)
    model = adapters.load_saved_adapter(load_model(config.model, fuse=False, **options),
                                        policy_path(out, iteration, config))
    return _fused(model, config)


def _fused(model, config):
    if config.fuse_modules:  # after the adapter, as load_model orders them
        from prefkit.modeling.fused import fuse

        fuse(model)
    return model


def save_policy(model, tokenizer, directory: Path, config) -> None:
    """The policy in Hugging Face format; with LoRA the trained adapter only (peft's adapter files), its base
    recorded as `model` names it (a relative path stays relative)."""
    if not adapters.is_adapter(model):
        save_model(model, tokenizer, directory)
        return
    model.peft_config[adapters.TRAINED].base_model_name_or_path = config.model
    # the vocabulary never changes here: no embedding matrices beside the adapter (and no hub lookup to check it)
    save_model(model, tokenizer, directory, selected_adapters=[adapters.TRAINED], save_embedding_layers=False)


class FullAnchors:
    """π_0 and the magnet as frozen copies of full weights."""

    def __init__(self, model, out: Path, state: dict, config, moving: bool):
        chunk, packing = config.logprob_chunk_size, config.packing
        # the magnet is the policy of the iteration that last refreshed it, and the initial model until then
        self._magnet = FrozenCopy(load_policy(out, state["magnet"], config) if state["magnet"] != state["completed"]
                                  else model, chunk, packing)
        self._initial = None  # π_0 for the KL metrics, kept only when the magnet moves away from it
        if moving:
            first = model if state["completed"] == 0 else load_policy(out, 0, config)
            self._initial = FrozenCopy(first, chunk, packing)

    def magnet(self) -> View:
        return View(self._magnet.model)

    def initial(self) -> View:
        """π_0: the magnet itself while it has never moved away from π_0."""
        return View((self._initial or self._magnet).model)

    def refresh(self, policy) -> None:
        """The magnet becomes the policy."""
        self._magnet.model.load_state_dict(policy.state_dict())

    def close(self) -> None:
        self._magnet = self._initial = None


class AdapterAnchors:
    """π_0 and the magnet as states of the LoRA policy's one base model (see the module's docstring)."""

    def __init__(self, model, out: Path, state: dict, config):
        self.model = model
        if state["magnet"] == state["completed"] and state["magnet"]:
            self.refresh(model)
        elif state["magnet"]:
            adapters.load_saved_adapter(model, policy_path(out, state["magnet"], config), MAGNET, trainable=False)

    def magnet(self) -> View:
        """The magnet's adapter slot once it has moved away from π_0, else π_0."""
        return self._state(MAGNET if MAGNET in self.model.peft_config else None)

    def initial(self) -> View:
        """π_0: the base model with the adapter switched off."""
        return self._state(None)

    def _state(self, adapter: str | None) -> View:
        return View(self.model, lambda: adapters.use_state(self.model, adapter))

    def refresh(self, policy) -> None:
        """The magnet becomes the policy: the trained adapter's weights are copied into the magnet's slot."""
        adapters.copy_adapter(policy, adapters.TRAINED, MAGNET)

    def close(self) -> None:
        """Drop the magnet's slot: the model is left with its trained adapter only (as final/ saves it)."""
        adapters.drop_adapter(self.model, MAGNET)


def make_anchors(model, out: Path, state: dict, config):
    """The anchors of a run that has completed `state["completed"]` iterations, its magnet refreshed at
    `state["magnet"]`."""
    if config.lora:
        return AdapterAnchors(model, out, state, config)
    return FullAnchors(model, out, state, config, moving=bool(config.refresh_every or config.refresh_gap))
