"""prefkit.train: the offline loop (`fit`) and, beside it, the self-play loop."""
