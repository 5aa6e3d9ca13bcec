"""The one base class for bad-input errors: the CLI prints their message instead of a traceback."""


class InputError(ValueError):
    """Bad user input (a file, a folder, a parameter); the message names it and the fix."""


class DatasetError(InputError):
    """A dataset folder or file is missing, empty or malformed; the message names the fix."""
