"""Mixed ensemble units: members that differ in lr, momentum and weight decay train as one
unit, each bit for bit the run its ensemble of one gives."""
from dataclasses import replace

import numpy as np
import pytest

import actconv
from actconv.errors import ConfigError
from actconv.run import queue
from actconv.run.store import load_results
from actconv.study import config
from actconv.study.config import ModelSpec, RunSpec
from actconv.train import ensemble
from actconv.train.ensemble import train_ensemble
from test_ensemble import poisoned  # one image made infinite in one seed's subset

MLP = ModelSpec("mlp", hidden_units=24, activate_logits=False)
SGD_SETTINGS = [(0.1, 0.0, 0.0), (0.03, 0.9, 1e-3), (0.3, 0.5, 0.0), (0.1, 0.0, 1e-2)]
ADAM_SETTINGS = [(1e-3, 0.0, 0.0), (3e-3, 0.0, 1e-4), (1e-2, 0.0, 0.0)]


def mixed(settings, seeds=(1, 2), **kw):
    base = dict(model="m", model_spec=MLP, activation="tanh", seed=0, n_train=96, epochs=3,
                engine="ensemble", validation=100)
    return [RunSpec(**{**base, **kw, "lr": lr, "momentum": m, "weight_decay": wd, "seed": s})
            for lr, m, wd in settings for s in seeds]


def assert_bitwise(a, b):
    """Every recorded number equal: batch losses and accuracies, epoch rows (validation too),
    diagnostics (weight norms and gradient norms per layer: the weights, as far as a result shows them)."""
    assert a.status == b.status and a.diverged_step == b.diverged_step
    for key in ("epoch", "step", "loss", "accuracy"):
        assert np.array_equal(a.batches[key], b.batches[key], equal_nan=True), key
    assert [e.keys() for e in a.epochs] == [e.keys() for e in b.epochs]
    for key in a.epochs[0]:  # a diverging run's untrained train_loss is NaN: equal as NaN
        assert np.array_equal([e[key] for e in a.epochs], [e[key] for e in b.epochs], equal_nan=True), key
    assert a.diagnostics == b.diagnostics


@pytest.mark.parametrize("optimizer,settings", [("sgd", SGD_SETTINGS), ("adam", ADAM_SETTINGS)])
def test_each_member_of_a_mixed_unit_is_its_ensemble_of_one(mnist5k, optimizer, settings):
    unit = mixed(settings, optimizer=optimizer, diagnostics=True, grad_every=2)
    together = train_ensemble(unit[::-1], mnist5k)[::-1]  # any order: results come back in the unit's
    assert [r.spec for r in together] == unit
    for spec, r in zip(unit, together):
        assert_bitwise(r, train_ensemble([spec], mnist5k)[0])
        assert len(r.epochs) == 4 and "val_loss" in r.epochs[-1] and r.diagnostics
    # the settings matter: the same seed ends elsewhere under each
    assert len({r.epochs[-1]["test_loss"] for r in together if r.spec.seed == 1}) == len(settings)


def test_tinyvgg_members_with_their_own_settings_too(mnist5k):
    # convolution weights are stacked with per-member channels_last strides: their slices step alike
    unit = mixed(SGD_SETTINGS[1:3], model_spec=ModelSpec("tinyvgg", hidden_units=4), activation="prelu",
                 n_train=64, epochs=1, validation=0)
    for spec, r in zip(unit, train_ensemble(unit, mnist5k)):
        assert_bitwise(r, train_ensemble([spec], mnist5k)[0])


@pytest.mark.parametrize("optimizer,settings", [("sgd", SGD_SETTINGS[1:3]), ("adam", ADAM_SETTINGS[:2])])
def test_members_dropped_from_a_mixed_unit_leave_the_others_bitwise_unchanged(mnist5k, optimizer, settings):
    # seed 2 diverges in its first epoch under every setting; the rest carry their momentum
    # (or Adam moments and step) through the drop
    data = poisoned(mnist5k, seed=2, others=(1, 3), n_train=96)
    unit = mixed(settings, seeds=(1, 2, 3), optimizer=optimizer, validation=0)  # the poisoned subset as drawn
    together = train_ensemble(unit, data)
    assert [r.status for r in together] == ["done", "diverged", "done"] * len(settings)
    for spec, r in zip(unit, together):
        assert_bitwise(r, train_ensemble([spec], data)[0])


@pytest.mark.parametrize("field,value", [("optimizer", "adam"), ("epochs", 2), ("batch_size", 16),
                                         ("n_train", 64), ("model_spec", ModelSpec("mlp", hidden_units=8)),
                                         ("activation", "relu")])
def test_a_unit_mixing_anything_else_is_refused_and_planned_apart(field, value):
    unit = mixed(SGD_SETTINGS[:2], seeds=(1,))
    other = replace(unit[1], **{field: value})
    with pytest.raises(ConfigError, match="differ only in their seed, perturbation, lr, momentum or weight decay"):
        train_ensemble([unit[0], other], None)
    assert queue.plan_units([unit[0], other]) == [[unit[0]], [other]]


def test_duplicates_are_refused():
    unit = mixed(SGD_SETTINGS[:1], seeds=(1,))
    with pytest.raises(ConfigError, match="must be distinct"):
        train_ensemble(unit * 2, None)


def test_plan_units_groups_a_cells_settings_and_seeds():
    cell = mixed(SGD_SETTINGS, seeds=(1, 2, 3))
    siblings = [replace(s, perturb="init", replica=1) for s in cell[:2]]
    longer = mixed(SGD_SETTINGS, seeds=(1, 2, 3), epochs=5)
    adam = mixed(ADAM_SETTINGS, seeds=(1, 2, 3), optimizer="adam")
    loop = [replace(s, engine="loop") for s in cell[:2]]
    units = queue.plan_units(cell + siblings + longer + adam + loop)
    assert units == [cell + siblings, longer, adam, loop[:1], loop[1:]]
    assert queue.UNIT_FREE == ensemble.FREE  # the driver's copy (it never imports torch) agrees


def test_plan_units_halves_the_largest_unit_while_cores_would_idle():
    cell, other = mixed(SGD_SETTINGS, seeds=(1, 2, 3)), mixed(SGD_SETTINGS[:1], seeds=(1, 2), epochs=5)
    assert queue.plan_units(cell + other, jobs=2) == [cell, other]
    assert queue.plan_units(cell + other, jobs=3) == [cell[:6], cell[6:], other]
    assert queue.plan_units(cell + other, jobs=4) == [cell[:3], cell[3:6], cell[6:], other]
    assert queue.plan_units(cell, jobs=20) == [[s] for s in cell]  # no further than single runs
    assert queue.plan_units([], jobs=4) == []


def test_a_study_with_an_lr_and_momentum_grid_stores_the_runs_trained_apart(mnist5k, tmp_path):
    study = config.study_from_dict({"name": "mix", "models": {"m": {"kind": "mlp", "hidden_units": 16}},
                                    "activations": ["tanh"], "seeds": [1, 2], "n_train": [64], "epochs": 2,
                                    "lr": [0.03, 0.3], "momentum": [0.0, 0.9], "engine": "ensemble"})
    specs = study.runs()
    assert len(specs) == 8 and len(queue.plan_units(specs)) == 1
    out = actconv.run_study(study, tmp_path, progress=False, jobs=2)  # two units of four, on a pool
    assert out.counts == {"done": 8}
    stored = load_results(tmp_path)
    for spec in specs:
        alone = train_ensemble([spec], mnist5k)[0]
        epochs = stored.epochs[stored.epochs.run_id == spec.run_id].sort_values("epoch")
        batches = stored.batches[stored.batches.run_id == spec.run_id].sort_values("step")
        assert np.array_equal(batches.loss.to_numpy(), alone.batches["loss"])
        assert np.array_equal(epochs.test_loss.to_numpy(), [e["test_loss"] for e in alone.epochs])
        assert np.array_equal(epochs.train_loss.to_numpy(), [e["train_loss"] for e in alone.epochs])
