"""Batch statistics: loss inputs that a trainer computes from the batches themselves, declared by the losses.

A loss that reads one names it at registration (`register(..., statistics=(RewardShift,))`); the trainer keeps
one instance per loss component (`prefkit.losses.Objective`), so each is computed with that component's own
resolved hyper-parameters, also inside a mixture. An instance gives the loss its inputs before a batch
(`inputs`) and learns from the batch afterwards (`update`, training batches only); `state` / `load` carry it
across a resume. Statistics run on detached values: they never carry gradient.

* `ReferenceKL`: KTO's reference point z0, from log-ratios on mismatched (prompt, completion) pairs, which the
  trainer scores when an objective `needs_mismatched` (Ethayarajh et al. 2024, arXiv 2402.01306).
* `RewardShift`: BCO's δ, the running mean of the implicit rewards seen so far (Jung et al. 2024, arXiv
  2404.04656).
* `GapSelection`: β-DPO's moving mean M0 and spread σ (momentum 0.9) of the DPO logit h and its per-batch
  filter, which keeps ⌊(1−ρ)B⌋ pairs drawn with weight exp(−½((h−M0)/σ)²) (Wu et al. 2024, arXiv 2407.08639).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class Statistic:
    """The interface. `provides` names the loss inputs it fills; `needs_mismatched` asks the trainer for
    `mismatched_logps` / `ref_mismatched_logps` in the batch inputs."""

    provides: tuple[str, ...] = ()
    needs_mismatched = False

    def inputs(self, batch: dict, hyperparameters: dict, training: bool) -> dict:
        raise NotImplementedError

    def update(self, batch: dict, hyperparameters: dict) -> None:
        pass

    def state(self) -> dict:
        return dict(vars(self))

    def load(self, state: dict) -> None:
        vars(self).update({k: v for k, v in state.items() if k in vars(self)})


class ReferenceKL(Statistic):
    provides = ("kl",)
    needs_mismatched = True

    def inputs(self, batch, hyperparameters, training):
        if "mismatched_logps" not in batch:
            return {}
        return {"kl": kto_kl_estimate(batch["mismatched_logps"], batch["ref_mismatched_logps"])}


def kto_kl_estimate(mismatched_logps: Tensor, ref_mismatched_logps: Tensor) -> Tensor:
    """KTO's reference point: mean log-ratio on mismatched (prompt, completion) pairs, clamped at 0, detached."""
    return (mismatched_logps - ref_mismatched_logps).detach().mean().clamp(min=0)


class RewardShift(Statistic):
    provides = ("reward_shift",)

    def __init__(self):
        self.mean, self.count = 0.0, 0

    def inputs(self, batch, hyperparameters, training):
        return {"reward_shift": self.mean}

    def update(self, batch, hyperparameters):
        rewards = implicit_rewards(batch, hyperparameters["beta"])
        if rewards is not None:
            self.mean, self.count = bco_reward_shift(self.mean, self.count, rewards)


def bco_reward_shift(previous: float, count: int, rewards: Tensor) -> tuple[float, int]:
    """Running mean of implicit rewards over everything seen so far: returns (new mean, new count)."""
    n = rewards.numel()
    mean = (previous * count + rewards.detach().float().sum().item()) / max(count + n, 1)
    return mean, count + n


def implicit_rewards(batch: dict, beta: float) -> Tensor | None:
    """β·(log π − log π_ref) of every completion in the batch (unpaired, or both sides of each pair)."""
    if "ref_logps" in batch:
        return beta * (batch["logps"] - batch["ref_logps"]).detach()
    if "ref_chosen_logps" in batch:
        chosen, rejected = (batch[f"{side}_logps"] - batch[f"ref_{side}_logps"] for side in ("chosen", "rejected"))
        return beta * torch.cat([chosen, rejected]).detach()
    return None


class GapSelection(Statistic):
    provides = ("gap_mean", "select_mask")

    def __init__(self, momentum: float = 0.9):
        self.mean, self.std, self.momentum = None, None, momentum

    def inputs(self, batch, hyperparameters, training):
        if not training:  # evaluation scores every pair, against the running mean
            return {"gap_mean": self.mean}
        h = dpo_logit(batch)
        mean = h.mean().item() if self.mean is None else self.mean
        spread = h.std().item() if self.std is None and h.numel() > 1 else (self.std or 1.0)
        return {"gap_mean": self.mean, "select_mask": beta_dpo_select(h, mean, spread, hyperparameters["rho"])}

    def update(self, batch, hyperparameters):
        h = dpo_logit(batch)
        mean, spread = h.mean().item(), (h.std().item() if h.numel() > 1 else 0.0)
        if self.mean is None:
            self.mean, self.std = mean, spread
            return
        self.mean = self.momentum * self.mean + (1 - self.momentum) * mean
        self.std = self.momentum * self.std + (1 - self.momentum) * spread


def dpo_logit(batch: dict) -> Tensor:
    """h = (log π − log π_ref)(chosen) − (log π − log π_ref)(rejected), detached, in float32."""
    chosen = batch["chosen_logps"] - batch["ref_chosen_logps"]
    return (chosen - batch["rejected_logps"] + batch["ref_rejected_logps"]).detach().float()


def beta_dpo_select(h: Tensor, gap_mean: float, gap_std: float, rho: float = 0.2,
                    generator: torch.Generator | None = None) -> Tensor:
    """β-DPO's filter: keep floor((1-ρ)·B) pairs, drawn without replacement with weight exp(-½((h-M0)/σ)²)."""
    weights = torch.exp(-0.5 * ((h.detach() - gap_mean) / max(gap_std, 1e-6)) ** 2) + 1e-12
    keep = max(1, int((1 - rho) * h.numel()))
    mask = torch.zeros_like(h, dtype=torch.bool)
    mask[torch.multinomial(weights, keep, replacement=False, generator=generator)] = True
    return mask
