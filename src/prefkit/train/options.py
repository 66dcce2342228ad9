"""Small decisions that the offline and self-play loops share."""


def share_prompt(config) -> bool:
    """Run each pair's prompt once (see `shared_prompt_logps`); activation checkpointing drops the KV cache it uses."""
    return getattr(config, "share_prompt", True) and not getattr(config, "gradient_checkpointing", False)
