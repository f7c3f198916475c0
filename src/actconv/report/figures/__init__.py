"""Figures by topic, each a function of computed tables that returns a matplotlib Figure and
writes nothing: `curves` (loss and accuracy over epochs and batches, the original's figures,
summaries over configurations), `inside` (the activation gallery and the per-layer
diagnostics), `questions` (sensitivity to the tuned setting, learning curves in n) and
`common` (one style per activation, panels, bands, spike-taming axes). Re-exported here and
as `actconv.plots`.
"""
from .common import FLOORS, LOSS_LABEL, PALETTE, STYLES, style
from .curves import (accuracy_curves, batch_dynamics, epoch_loss_curves, epoch_regression,
                     family_batch_losses, family_test_curves, final_loss_heatmap, start_vs_final)
from .inside import (activation_gallery, gradient_norms, layer_activation_stats, logit_floor_curves,
                     preact_histograms, saturation_dead_units)
from .questions import learning_curve_fits, lr_sensitivity

__all__ = ["FLOORS", "LOSS_LABEL", "PALETTE", "STYLES", "style", "accuracy_curves", "batch_dynamics",
           "epoch_loss_curves", "epoch_regression", "family_batch_losses", "family_test_curves",
           "final_loss_heatmap", "start_vs_final", "activation_gallery", "gradient_norms",
           "layer_activation_stats", "logit_floor_curves", "preact_histograms", "saturation_dead_units",
           "learning_curve_fits", "lr_sensitivity"]
