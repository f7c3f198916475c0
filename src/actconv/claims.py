"""`actconv.claims`: the findings, re-exported from `actconv.analysis.claims` where they live."""
from .analysis.claims import *  # noqa: F401,F403
from .analysis.claims import __all__, common, fairness, mechanisms, original, papers, samples  # noqa: F401
