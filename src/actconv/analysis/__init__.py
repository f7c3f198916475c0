"""Pure functions on the long tables (or on the store's queries): the statistics (`stats`,
whose names this package re-exports: `analysis.run_metrics`, `analysis.interval`, ...),
conditions (`conditions`), tuning per activation (`tuning`), a search's choice on the tuning
seeds scored on the confirm seeds, edges and winner's curse (`confirm`), the user's activation
against the best built-in (`focus`), learning curves in n
(`learning`), robustness to one-bit perturbations (`robustness`), the diagnostics'
analysis (`diagnostics`), key columns and number formats (`tables`), and every finding as
one function of one shape (`claims`).

May import `actconv.study` for names (activations, their ranges, presets, the diagnostics'
vocabulary; never its data or models), `actconv.run.store` for the store's tables, and
`actconv.errors`. Nothing here trains, draws or writes a file.
"""
from .stats import (EDGE, MAD_FLOOR, MIN_BOOTSTRAP, SPIKE_COLUMNS, aggregate, batch_fit, curve_intervals,
                    detect_spikes, epoch_fits, holm, interval, interval_estimates, kendall_w,
                    metric_bounds, paired_comparisons, paired_tests, rank_activations,
                    run_metrics)
# It lived in this module's namespace before the layout; the activations own it.
from ..study.activations import logit_loss_floor

__all__ = ["EDGE", "MAD_FLOOR", "MIN_BOOTSTRAP", "SPIKE_COLUMNS", "aggregate", "batch_fit",
           "curve_intervals", "detect_spikes", "epoch_fits", "holm", "interval", "interval_estimates",
           "kendall_w", "logit_loss_floor", "metric_bounds", "paired_comparisons", "paired_tests",
           "rank_activations", "run_metrics"]
