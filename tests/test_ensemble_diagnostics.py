"""Diagnostics on the ensemble engine: each member's rows are the loop's for its seed, metric by
metric within rounding, and recording them leaves the training numbers bitwise unchanged."""
import math
from dataclasses import replace

import numpy as np
import pytest

from actconv.study import data as datasets
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import train_ensemble
from actconv.study.metrics import HIST_METRICS
from actconv.train.loop import train_run

# Largest differences measured against the loop (2 epochs, 3 seeds, the cases below): 4e-7
# for the probe's means and deviations, 7e-7 for weight norms, 2.4e-6 for gradient norms and
# ratios (BatchNorm MLP; 6e-7 relative); the fractions (saturated, dead, histogram bins) came
# out equal. Batched matmuls round differently from
# the loop's, so a count may move by an entry where a pre-activation sits on a bin edge or
# on the saturation threshold: fractions are allowed one entry in a thousand.
CONTINUOUS = dict(rel=1e-5, abs=1e-5)
FRACTION = dict(rel=0, abs=1e-3)
TOLERANCE = {**{m: CONTINUOUS for m in ("act_mean", "act_std", "unit_mean_median", "preact_mean",
                                        "preact_std", "weight_norm", "grad_norm", "grad_ratio")},
             **{m: FRACTION for m in ["saturated", "dead", *HIST_METRICS]}}

CASES = {
    "mlp-logits-prelu": (ModelSpec("mlp", hidden_units=16, activate_logits=True), "prelu"),
    "mlp-linear-sigmoid": (ModelSpec("mlp", hidden_units=16), "sigmoid"),
    "mlp-batchnorm-selu": (ModelSpec("mlp", hidden_units=16, hidden_layers=2, batchnorm=True), "selu"),
    "tinyvgg-relu": (ModelSpec("tinyvgg", hidden_units=2), "relu"),
}


def unit(model_spec, activation, seeds=(1, 2, 3), **kw):
    base = dict(model="m", model_spec=model_spec, activation=activation, seed=0, n_train=96, epochs=2,
                batch_size=16, diagnostics=True, grad_every=2, engine="ensemble")
    return [RunSpec(**{**base, **kw, "seed": s}) for s in seeds]


def rows(result) -> dict:
    return {(e, step, layer, metric): v for e, step, layer, metric, v in result.diagnostics}


def assert_rows_match(ens: dict, loop: dict) -> None:
    assert ens.keys() == loop.keys()
    for key, expect in loop.items():
        if math.isnan(expect):
            assert math.isnan(ens[key]), key
        else:
            assert ens[key] == pytest.approx(expect, **TOLERANCE[key[3]]), key


@pytest.mark.parametrize("case", CASES)
def test_each_members_diagnostics_are_the_loops(mnist5k, case):
    model_spec, activation = CASES[case]
    results = train_ensemble(unit(model_spec, activation), mnist5k)
    for r in results:
        loop = train_run(replace(r.spec, engine="loop"), mnist5k)
        got = rows(r)
        assert {m for _, _, _, m in got} == set(TOLERANCE)  # every metric is compared
        assert_rows_match(got, rows(loop))


@pytest.mark.parametrize("case", CASES)
def test_recording_leaves_the_ensembles_numbers_bitwise_unchanged(mnist5k, case):
    specs = unit(*CASES[case])
    on = train_ensemble(specs, mnist5k)
    off = train_ensemble([replace(s, diagnostics=False) for s in specs], mnist5k)
    for a, b in zip(on, off):
        assert a.diagnostics and not b.diagnostics
        assert np.array_equal(a.batches["loss"], b.batches["loss"]) and a.epochs == b.epochs
        assert np.array_equal(a.batches["accuracy"], b.batches["accuracy"])


def test_a_diverging_member_records_as_the_loop_and_the_others_as_if_alone(mnist5k):
    # One pool image made infinite, in seed 2's subset only: seed 2 diverges in epoch 1.
    subset = lambda s: set(datasets.subset_indices(mnist5k.train_y, s, 96).tolist())  # noqa: E731
    bad = min(subset(2) - subset(1) - subset(3))
    train_x = mnist5k.train_x.clone()
    train_x[bad] = float("inf")
    data = replace(mnist5k, train_x=train_x)
    by_seed = {r.spec.seed: r for r in train_ensemble(unit(ModelSpec("mlp", hidden_units=16), "relu"), data)}
    assert by_seed[2].status == "diverged"
    loop = train_run(replace(by_seed[2].spec, engine="loop"), data)
    assert_rows_match(rows(by_seed[2]), rows(loop))
    for seed in (1, 3):  # recorded after the diverging member was dropped: as trained alone
        alone = train_ensemble([by_seed[seed].spec], data)[0]
        assert by_seed[seed].status == "done" and by_seed[seed].diagnostics == alone.diagnostics
