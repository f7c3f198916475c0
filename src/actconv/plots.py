"""`actconv.plots`: the figures, re-exported from `actconv.report.figures` where they live by topic."""
from .report.figures import *  # noqa: F401,F403
from .report.figures import __all__  # noqa: F401
