"""prefkit.train: the training engine, the offline loop (`fit`) and what both loops share (config, run dirs, checkpoints)."""
