"""The one exception type the CLI turns into a single line and a non-zero exit."""


class QuantkitError(Exception):
    """A user-facing error: the message names the file or option and what to do."""
