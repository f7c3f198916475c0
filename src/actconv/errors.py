"""The one error type users see: the CLI prints its message on one line and exits 2."""


class ActconvError(Exception):
    """Bad input or an unusable environment; the message says what to do."""

    def __init__(self, message=""):
        # One line, always: user text (a key with a newline, say) must not split the message.
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


class ConfigError(ActconvError):
    """A study, preset or flag that cannot be run."""


class DataError(ActconvError):
    """A dataset that is missing, corrupt or too small for the request."""


class StoreError(ActconvError):
    """A results store that cannot be opened or written."""
