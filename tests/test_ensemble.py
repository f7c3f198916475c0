"""The ensemble engine: each member is the loop's run for its seed, within rounding."""
from dataclasses import replace

import numpy as np
import pytest
from torch import nn

import actconv
from actconv.study import config
from actconv.study import data as datasets
from actconv.cli import build_parser, study_from_args
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import Stack, train_ensemble
from actconv.errors import ConfigError
from actconv.run.store import load_results
from actconv.train.loop import train_run

MLP = ModelSpec("mlp", hidden_units=16, activate_logits=True)
VGG = ModelSpec("tinyvgg", hidden_units=4)


def unit(seeds=(1, 2, 3), **kw):
    base = dict(model="m", model_spec=MLP, activation="relu", seed=0, n_train=96, epochs=2,
                engine="ensemble")
    return [RunSpec(**{**base, **kw, "seed": s}) for s in seeds]


def loop_of(spec):
    return replace(spec, engine="loop")


def assert_close_to_loop(result, loop, steps=None, tol=1e-4):
    a, b = result.batches["loss"], loop.batches["loss"]
    assert result.status == loop.status and len(a) == len(b)
    assert np.abs(a[:steps] - b[:steps]).max() <= tol
    if steps is None:
        for e, f in zip(result.epochs, loop.epochs):
            assert e["epoch"] == f["epoch"]
            for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
                assert e[key] == pytest.approx(f[key], abs=tol), key


@pytest.mark.parametrize("model_spec,activation", [(MLP, "selu"), (VGG, "prelu"), (VGG, "sigmoid")],
                         ids=["mlp-selu", "tinyvgg-prelu", "tinyvgg-sigmoid"])
def test_first_ten_steps_match_the_loop(mnist5k, model_spec, activation):
    runs = train_ensemble(unit(model_spec=model_spec, activation=activation, n_train=320, epochs=1), mnist5k)
    for r in runs:
        loop = train_run(loop_of(r.spec), mnist5k)
        assert len(r.batches["loss"]) == 10
        assert_close_to_loop(r, loop, steps=10)
        assert r.epochs[0] == pytest.approx(loop.epochs[0], abs=1e-6)  # the untrained model


@pytest.mark.parametrize("train", [dict(), dict(momentum=0.9, weight_decay=1e-3, lr=0.05),
                                   dict(optimizer="adam", lr=1e-3)], ids=["sgd", "momentum", "adam"])
def test_whole_mlp_run_matches_the_loop(mnist5k, train):
    spec = dict(model_spec=ModelSpec("mlp", hidden_units=32, activate_logits=True), n_train=200, epochs=3)
    for activation in ("prelu", "tanh"):
        for r in train_ensemble(unit(activation=activation, **spec, **train), mnist5k):
            assert_close_to_loop(r, train_run(loop_of(r.spec), mnist5k))


def test_batchnorm_mlp_matches_the_loop(mnist5k):
    ms = ModelSpec("mlp", hidden_units=16, hidden_layers=2, batchnorm=True, init="auto")
    for r in train_ensemble(unit(model_spec=ms, activation="selu", momentum=0.9), mnist5k):
        assert_close_to_loop(r, train_run(loop_of(r.spec), mnist5k))


def test_bitwise_reproducible_and_independent_of_the_other_members(mnist5k):
    specs = unit(seeds=(5, 7, 9), activation="prelu")
    a, b = train_ensemble(specs, mnist5k), train_ensemble(specs, mnist5k)
    for x, y in zip(a, b):
        assert np.array_equal(x.batches["loss"], y.batches["loss"]) and x.epochs == y.epochs
    # A member's numbers do not depend on its companions or its place: resuming a study
    # that ran part of a unit gives the same results.
    alone = train_ensemble([specs[1]], mnist5k)[0]
    moved = train_ensemble([specs[1], specs[0]], mnist5k)[0]
    for r in (alone, moved):
        assert np.array_equal(r.batches["loss"], a[1].batches["loss"]) and r.epochs == a[1].epochs
    assert not np.array_equal(a[0].batches["loss"], a[1].batches["loss"])


def poisoned(data, seed, others, n_train):
    """The dataset with one pool image made infinite: in seed's subset, in none of the others'."""
    subset = lambda s: set(datasets.subset_indices(data.train_y, s, n_train).tolist())  # noqa: E731
    bad = min(subset(seed).difference(*map(subset, others)))
    train_x = data.train_x.clone()
    train_x[bad] = float("inf")
    return replace(data, train_x=train_x)


def test_a_diverging_member_is_stored_diverged_while_the_others_finish(mnist5k, tmp_path, monkeypatch):
    data = poisoned(mnist5k, seed=2, others=(1, 3), n_train=96)
    by_seed = {r.spec.seed: r for r in train_ensemble(unit(seeds=(1, 2, 3)), data)}
    bad = by_seed[2]
    loop = train_run(loop_of(bad.spec), data)
    assert bad.status == loop.status == "diverged"
    assert bad.diverged_step == loop.diverged_step == len(bad.batches["loss"])
    assert np.isfinite(bad.batches["loss"][:-1]).all() and not np.isfinite(bad.batches["loss"][-1])
    assert [e["epoch"] for e in bad.epochs] == [e["epoch"] for e in loop.epochs]
    for seed in (1, 3):  # the others go on, as if trained without the diverging member
        r = by_seed[seed]
        assert r.status == "done" and len(r.epochs) == 3
        alone = train_ensemble([r.spec], data)[0]
        assert np.array_equal(r.batches["loss"], alone.batches["loss"]) and r.epochs == alone.epochs
        assert_close_to_loop(r, train_run(loop_of(r.spec), data))
    # Stored as such through a study.
    monkeypatch.setattr(datasets, "load", lambda *a, **k: data)
    study = config.study_from_dict({"name": "div", "models": {"m": {"kind": "mlp", "hidden_units": 16,
                                                                   "activate_logits": True}},
                                    "activations": ["relu"], "seeds": [1, 2, 3], "n_train": [96],
                                    "epochs": 2, "engine": "ensemble"})
    actconv.run_study(study, tmp_path, progress=False)
    runs_table = load_results(tmp_path).runs.set_index("seed")
    assert runs_table.status.to_dict() == {1: "done", 2: "diverged", 3: "done"}
    assert runs_table.diverged_step[2] == loop.diverged_step


def test_study_stores_ensemble_runs_with_their_own_ids(tmp_path):
    grid = {"name": "e", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "activations": ["relu", "tanh"],
            "seeds": [1, 2, 3], "n_train": [64], "epochs": 1}
    ens = config.study_from_dict({**grid, "engine": "ensemble"})
    loop = config.study_from_dict({**grid, "engine": "loop"})
    out = actconv.run_study(ens, tmp_path / "e", progress=False)
    assert out.counts == {"done": 6}
    runs = load_results(tmp_path / "e").runs
    assert set(runs.engine) == {"ensemble"} and len(runs) == 6
    assert all(config.RunSpec.from_json(j).engine == "ensemble" for j in runs.config_json)
    loop_ids = {s.run_id for s in loop.runs()}
    assert len(loop_ids) == 6 and not loop_ids & set(runs.run_id)
    actconv.run_study(loop, tmp_path / "l", progress=False)
    a = load_results(tmp_path / "e").epochs.sort_values(["activation", "seed", "epoch"])
    b = load_results(tmp_path / "l").epochs.sort_values(["activation", "seed", "epoch"])
    assert np.abs(a.test_loss.to_numpy() - b.test_loss.to_numpy()).max() < 1e-4


def test_auto_engine_per_model_kind_and_the_cli_flag(tmp_path):
    assert config.resolve_engine("auto", "mlp") == "ensemble"
    assert config.resolve_engine("auto", "tinyvgg") == "loop"
    assert config.resolve_engine("ensemble", "tinyvgg") == "ensemble"
    base = ["run", "--out", str(tmp_path), "--models", "mlp,tinyvgg", "--activations", "relu",
            "--seeds", "1", "--n-train", "64"]
    engines = lambda flags: {(s.model_spec.kind, s.engine) for s in  # noqa: E731
                             study_from_args(build_parser().parse_args(base + flags)).runs()}
    assert engines([]) == {("mlp", "ensemble"), ("tinyvgg", "loop")}
    assert engines(["--engine", "loop"]) == {("mlp", "loop"), ("tinyvgg", "loop")}
    assert engines(["--engine", "ensemble"]) == {("mlp", "ensemble"), ("tinyvgg", "ensemble")}
    # both engines record diagnostics: auto still picks by speed, an asked-for engine is kept
    assert engines(["--diagnostics"]) == {("mlp", "ensemble"), ("tinyvgg", "loop")}
    assert engines(["--engine", "ensemble", "--diagnostics"]) == {("mlp", "ensemble"), ("tinyvgg", "ensemble")}
    with pytest.raises(ConfigError, match="unknown engine 'fast'; choose from: auto, loop, ensemble"):
        study_from_args(build_parser().parse_args(base + ["--engine", "fast"]))


def test_unknown_layers_and_mixed_units_are_refused():
    with pytest.raises(ConfigError, match="cannot run layer Dropout"):
        Stack([nn.Sequential(nn.Linear(2, 2), nn.Dropout())] * 2)
    with pytest.raises(ConfigError, match="differ only in their seed"):
        train_ensemble(unit(seeds=(1,)) + unit(seeds=(2,), activation="tanh"), None)
