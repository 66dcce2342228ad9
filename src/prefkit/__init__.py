"""prefkit: preference optimization for language models, offline and self-play, behind one library."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prefkit")  # pyproject.toml's, as installed: the one place to change it
except PackageNotFoundError:  # a source tree on sys.path that pip never installed
    __version__ = "0+unknown"
