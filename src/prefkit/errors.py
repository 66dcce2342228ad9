"""The one exception type that means "the user gave bad input": the CLI prints it without a traceback."""


class PrefkitError(ValueError):
    """Bad input (hyper-parameter, data row, config key). The message names what is wrong and where."""
