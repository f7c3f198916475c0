"""What the report reads of a store: runs and epochs whole; batches and diagnostics as rows left
in the store, each analysis and figure reading its own selection; the diagnostics rows that only
one figure draws (the pre-activation histograms: 34 of the 42 rows a hidden layer gets per
probe, over half of a seed-shaped store's diagnostics) are read by `run_diagnostics` for the
one run that figure shows."""
import pandas as pd

from ..analysis.tables import only, rows
from ..run.store import Results, select, stored_results
from ..study.metrics import HIST_METRICS

HISTOGRAMS = HIST_METRICS[0][:-2]  # "preact_hist_"


def report_results(out_dir) -> Results:
    """The long tables the report computes with: runs and epochs in memory, the batches and
    diagnostics left in the store (`StoredRows`, read a selection at a time; the histogram
    rows only by the figure that draws them)."""
    return stored_results(out_dir, skip_metrics=(HISTOGRAMS,))


def run_diagnostics(results: Results, run_id: str) -> pd.DataFrame:
    """Every diagnostics row of one run: from the store where the report left some there."""
    if results.source is None or not results.skipped:
        return rows(only(results.diagnostics, [run_id]))
    return select(results.source, "diagnostics", run_id=run_id)
