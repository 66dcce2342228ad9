"""prefkit: preference optimization for language models, offline and self-play, behind one library.

`prefkit.Trainer` is TRL's trainer interface on prefkit's engine (docs/trainer.md); it is imported on first use,
so that `import prefkit` (and `prefkit --help`) stays free of torch.
"""

from importlib.metadata import PackageNotFoundError, version

from prefkit import lazy

try:
    __version__ = version("prefkit")  # pyproject.toml's, as installed: the one place to change it
except PackageNotFoundError:  # a source tree on sys.path that pip never installed
    __version__ = "0+unknown"

__getattr__ = lazy.exports(__name__, {"Trainer": "trainer"})
