"""Every finding as one function of one shape: `check(results, thresholds) -> [Verdict]`.

`original` holds the notebook's claims (a-f), `mechanisms` what the diagnostics measure
behind them (m1-m3), `papers` the published claims of the paper presets, `samples` whether the comparison
changes with n, `fairness` whether it survives tuning; `common` the
records, the vote, the thresholds and the registry. `evaluate(results)` checks them all;
`register(Claim(id, text, check))` adds one of your own.
"""
from . import original, mechanisms, papers, samples, fairness  # noqa: E402  (registers the shipped claims)
from .common import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, VERDICTS, Claim, Thresholds, Verdict, evaluate,
                     evaluate_verdicts, labels, register, unregister, vote)

ORIGINAL, MECHANISMS, PAPERS = original.IDS, mechanisms.IDS, papers.IDS
SAMPLES, FAIRNESS = samples.IDS, fairness.IDS

__all__ = ["Claim", "Verdict", "Thresholds", "VERDICTS", "SUPPORTED", "NOT_SUPPORTED",
           "INCONCLUSIVE", "evaluate", "evaluate_verdicts", "register", "unregister", "vote",
           "labels", "ORIGINAL", "MECHANISMS", "PAPERS", "SAMPLES", "FAIRNESS"]
