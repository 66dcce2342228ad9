"""Bundled synthetic preference task with a ground-truth oracle, small enough to train on a CPU in seconds.

Sorting prompts (`sort: 3 1 2`) have transitive, Bradley-Terry preferences; picking prompts
(`pick: rock paper scissors`) have cyclic ones with a unique, full-support Nash equilibrium; malformed responses
lose to well-formed ones. Each prompt has a finite canonical response set, so a model's distribution over it, and
its exact duality gap, follow from sequence log-probs. See docs/task.md.

    >>> from prefkit.tasks import SyntheticTask, reference_model, exact_gap
    >>> task = SyntheticTask()
    >>> model, tokenizer = reference_model(task, seed=0)        # tiny Llama pre-trained on the SFT data, ~1 min
    >>> exact_gap(model, tokenizer, task, "pick: rock paper scissors")   # 0.44 after pre-training
"""

from prefkit import lazy

# Public names and the module that defines each, imported on first use, so that building the CLI (which imports
# prefkit.tasks.cli, and with it this package) does not import torch.
_EXPORTS = {**dict.fromkeys(("CYCLIC_GAMES", "MALFORMED_LOSS", "REFERENCE_MALFORMED", "CyclicGame", "PromptSpec"),
                            "families"),
            **dict.fromkeys(("label_pairs", "preference_rows", "unpaired_rows"), "offline"),
            **dict.fromkeys(("canonical_distribution", "canonical_distributions", "completion_logps",
                             "completion_nll", "cyclic_games", "encode_completion", "encode_prompt", "exact_gap",
                             "exact_gaps", "canonical_gaps", "pretrain", "reference_model", "sample_responses"), "policy"),
            **dict.fromkeys(("KINDS", "OracleJudge", "SyntheticTask", "as_row"), "synthetic")}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy.exports(__name__, _EXPORTS)
