"""What the report reads of a store: every table, less the diagnostics rows that only one
figure draws (the pre-activation histograms: 34 of the 42 rows a hidden layer gets per
probe, over half of a seed-shaped store's diagnostics), which `run_diagnostics` reads from
the store for the one run that figure shows."""
import pandas as pd

from ..run.store import Results, load_results, select
from ..study.metrics import HIST_METRICS

HISTOGRAMS = HIST_METRICS[0][:-2]  # "preact_hist_"


def report_results(out_dir) -> Results:
    """The long tables the report computes with (`load_results` without the histogram rows)."""
    return load_results(out_dir, skip_metrics=(HISTOGRAMS,))


def run_diagnostics(results: Results, run_id: str) -> pd.DataFrame:
    """Every diagnostics row of one run: from the store where the report left some there."""
    if results.source is None or not results.skipped:
        return results.diagnostics[results.diagnostics["run_id"] == run_id]
    return select(results.source, "diagnostics", run_id=run_id)
