"""Serial backend (`--jobs 1`): every unit trained in the driver's own process, one after another."""
from contextlib import contextmanager

from .execution import DataArgs, Options, execute_unit
from .execution import probe  # noqa: F401 -- the backend's checks: here, where its units run


@contextmanager
def start(options: Options):
    """Nothing to start: units run here, each with a progress bar if asked."""
    yield lambda feed, data_args: _run(feed, data_args, options.progress)


def _run(feed, data_args: DataArgs, progress: bool):
    """Yield (unit, results), training each unit in this process."""
    while (unit := feed(0)) is not None:
        yield unit, execute_unit(unit, data_args, progress)
