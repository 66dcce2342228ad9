"""SparsePO: with full masks and no KL it is token-level DPO; masks select tokens; L1 penalises mask mass."""

import math

import pytest
import torch

from prefkit import losses

T = torch.tensor
TOKENS = dict(chosen_token_logps=T([[-1.0, -2.0, 0.0]]), rejected_token_logps=T([[-1.0, -3.0, -1.0]]),
              ref_chosen_token_logps=T([[-1.5, -1.0, 0.0]]), ref_rejected_token_logps=T([[-1.0, -2.0, -5.0]]),
              chosen_mask=T([[1.0, 1.0, 0.0]]), rejected_mask=T([[1.0, 1.0, 1.0]]))


def sp(x):
    return math.log1p(math.exp(x))


def test_full_masks_without_kl_give_dpo_on_completion_tokens_plus_l1():
    # chosen ratio over completion tokens: 0.5 - 1 = -0.5; rejected: 0 - 1 + 4 = 3; h = -3.5
    got = losses.compute("sparsepo", **TOKENS, beta=0.1, l1_reward=0.01).item()
    assert got == pytest.approx(sp(0.35) + 0.01 * (2 + 3))


def test_reward_masks_select_tokens_and_kl_terms_enter_the_logit():
    masks = dict(chosen_reward_mask=T([[1.0, 0.0, 1.0]]), rejected_reward_mask=T([[0.0, 0.0, 1.0]]))
    kl = dict(chosen_token_kl=T([[-0.1, -0.2, 9.0]]), rejected_token_kl=T([[-0.3, 0.0, -0.4]]))
    got = losses.compute("sparsepo", **TOKENS, **masks, **kl, beta=1.0, l1_reward=0.0, l1_kl=0.0).item()
    u = 0.5 - 4.0  # masked chosen ratio minus masked rejected ratio
    d = -0.1 - (-0.4)  # KL masks default to the reward masks
    assert got == pytest.approx(sp(-(u - d)))
