"""prefkit: preference optimization for language models, offline and self-play, behind one library."""

__version__ = "0.1.0"
