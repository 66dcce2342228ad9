"""Bounded disk in self-play: `keep_policies` removes the iteration policies resume does not need, resume stays
bit-exact with them gone, and the final model carries a model card naming the method, judge and prompts."""

import json

import pytest
import torch
from safetensors.torch import load_file

from prefkit.selfplay.loop import selfplay
from prefkit.selfplay.disk import policies_to_keep, prune_policies
from test_selfplay import config

MPO = dict(loss="mpo", loss_params={"eta": 2.0, "alpha": 0.2}, refresh_every=2)


def kept(out) -> list[int]:
    return sorted(int(p.parent.name[5:]) for p in out.glob("iter-*/policy"))


def test_resume_is_bit_exact_after_the_policies_it_does_not_need_were_removed(initial, tmp_path):
    selfplay(config(initial, tmp_path / "once", iterations=4, keep_policies=4, **MPO))
    twice = tmp_path / "twice"
    selfplay(config(initial, twice, iterations=3, keep_policies=1, **MPO))
    assert json.loads((twice / "state.json").read_text()) == {"completed": 3, "magnet": 2}
    assert kept(twice) == [2, 3]  # the last one and the magnet's; iteration 1's policy is gone
    for t in (1, 2, 3):  # what makes a resumed iteration exact stays for every iteration
        assert all((twice / f"iter-{t:04d}" / name).is_file() for name in ("samples.json", "logps.safetensors"))
        assert (twice / f"eval-{t:04d}.json").is_file()
    selfplay(config(initial, twice, iterations=4, keep_policies=1, resume=True, **MPO))
    assert kept(tmp_path / "once") == [1, 2, 3, 4] and kept(twice) == [4]  # iteration 4 refreshed the magnet
    once, twice = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("once", "twice"))
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)


def test_pruning_finishes_a_removal_a_kill_interrupted_and_keeps_what_state_names(tmp_path):
    for t in (1, 2, 3, 4):
        (tmp_path / f"iter-{t:04d}" / "policy").mkdir(parents=True)
        (tmp_path / f"iter-{t:04d}" / "samples.json").write_text("{}")
    (tmp_path / "iter-0001" / "policy").rename(tmp_path / "iter-0001" / "policy.removing")  # killed mid-removal
    state = {"completed": 3, "magnet": 2}  # iteration 4 is being written: never touched
    assert policies_to_keep(state, 1) == {2, 3} and policies_to_keep(state, None) is None
    assert prune_policies(tmp_path, state, 1) == [1]
    assert kept(tmp_path) == [2, 3, 4] and not (tmp_path / "iter-0001" / "policy.removing").exists()
    assert (tmp_path / "iter-0001" / "samples.json").is_file()
    assert prune_policies(tmp_path, {"completed": 3, "magnet": 3}, 1) == [2]  # the magnet moved on
    assert prune_policies(tmp_path, {"completed": 3, "magnet": 3}, 1) == []


def test_the_final_self_play_model_has_a_model_card(initial, tmp_path):
    final = selfplay(config(initial, tmp_path, iterations=1, **MPO))
    card = (final / "README.md").read_text()
    for needle in ("- self-play", "- mpo", "**mpo**", "judge `task`", "prompts `task`", "| eta | 2.0 |",
                   "| alpha | 0.2 |", "| refresh_every | 2 |", "| samples_per_prompt | 3 |", "duality_gap"):
        assert needle in card, needle
    assert json.loads((final / "prefkit_config.json").read_text())["loss"] == "mpo"


@pytest.mark.parametrize("value", [0, -1])
def test_keep_policies_below_one_is_refused(initial, tmp_path, value):
    from prefkit.errors import PrefkitError

    with pytest.raises(PrefkitError, match="keep_policies"):
        config(initial, tmp_path, keep_policies=value)
