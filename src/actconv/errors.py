"""The one error type users see: the CLI prints its message on one line and exits 2."""


class ActconvError(Exception):
    """Bad input or an unusable environment; the message says what to do."""


class ConfigError(ActconvError):
    """A study, preset or flag that cannot be run."""


class DataError(ActconvError):
    """A dataset that is missing, corrupt or too small for the request."""


class StoreError(ActconvError):
    """A results store that cannot be opened or written."""
