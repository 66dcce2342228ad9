"""The exceptions that end a command with one clear line instead of a traceback (unless --debug)."""


class PrefkitError(ValueError):
    """Bad input (hyper-parameter, data row, config key). The message names what is wrong and where."""

    exit_code = 2


class RunStopped(PrefkitError):
    """A run that ended before its last step: it diverged (exit 1), or a signal asked it to stop (128 + the
    signal's number, as a shell reports a process killed by it). The message says what was kept and how to go
    on."""

    def __init__(self, message: str, exit_code: int = 1, resumable: bool = False):
        super().__init__(message)
        self.exit_code, self.resumable = exit_code, resumable
