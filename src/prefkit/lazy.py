"""Package attributes imported on first use (PEP 562): building the CLI imports every subcommand's package, and
`prefkit --help` must not pay for torch. A package lists its public names and the submodule defining each."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def exports(package: str, names: dict[str, str], first: tuple[str, ...] = ()) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports `names[name]` (a submodule) on first use and keeps the
    value; `first` are submodules imported before any name is served (e.g. the ones that fill a registry). A
    submodule not yet imported is importable as an attribute, as it would be after `import package.sub`."""

    def __getattr__(name: str):
        if name not in names:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        for module in first:
            importlib.import_module(f"{package}.{module}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
