"""Tuning runs that score only after the last epoch (`tune_eval = "last"`): scoring never
touches the weights, so every batch and every final score is what a run scoring every epoch
records; a search so scored chooses exactly what one scoring every epoch does. And the SGD
that steps all tensors in one call steps them bitwise as one call per tensor did."""
import sqlite3
from dataclasses import replace

import pytest

from actconv.cli import main
from actconv.run.search import run_search
from actconv.study import config
from actconv.study.config import ModelSpec, RunSpec
from actconv.train.ensemble import train_ensemble
from actconv.train.loop import train_run

MLP = ModelSpec("mlp", hidden_units=16, activate_logits=True)
VGG = ModelSpec("tinyvgg", hidden_units=4)


def _check(every, last, epochs: int) -> None:
    assert last.status == every.status == "done"
    for col in ("loss", "accuracy", "step"):
        assert (every.batches[col] == last.batches[col]).all()  # bitwise: the same training
    for e, f in zip(every.epochs, last.epochs, strict=True):
        assert e["train_loss"] == f["train_loss"] and e["train_accuracy"] == f["train_accuracy"]
        scored = e["epoch"] == epochs
        for col in ("test_loss", "test_accuracy", "val_loss", "val_accuracy"):
            if scored:
                assert f[col] == e[col] and f[col] is not None
            else:
                assert f.get(col) is None and e[col] is not None


@pytest.mark.parametrize("engine, spec", [("loop", VGG), ("ensemble", MLP)])
def test_scoring_after_the_last_epoch_only_changes_no_batch_and_no_final_score(mnist5k, engine, spec):
    base = [RunSpec(model="m", model_spec=spec, activation="selu", seed=s, n_train=64, epochs=3,
                    lr=0.05, momentum=0.5, validation=50, engine=engine) for s in (1, 2)]
    last = [replace(s, evaluate="last") for s in base]
    assert len({s.run_id for s in base + last}) == 4  # what a run records is part of the run
    if engine == "loop":
        pairs = [(train_run(a, mnist5k), train_run(b, mnist5k)) for a, b in zip(base, last)]
    else:
        pairs = list(zip(train_ensemble(base, mnist5k), train_ensemble(last, mnist5k)))
    for every, at_last in pairs:
        _check(every, at_last, 3)


def _study(tune_eval):
    d = {"name": "last", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "activations": ["relu", "tanh"],
         "seeds": [7], "n_train": [64, 128], "epochs": 3, "validation": 100,
         "search": {"space": {"lr": "log(0.05, 1)", "momentum": [0, 0.5]}, "trials": 3, "batch": 3,
                    "sampler": "random", "tune_seeds": [1, 2], "confirm_seeds": [7, 8],
                    "tune_eval": tune_eval}}
    return config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")


def test_a_search_scored_after_the_last_epoch_chooses_as_one_scored_every_epoch(tmp_path):
    every = run_search(_study("every"), tmp_path / "every", progress=False)
    last = run_search(_study("last"), tmp_path / "last", progress=False)
    assert [(t.cell, t.number, t.params, t.value) for t in last.trials] == \
        [(t.cell, t.number, t.params, t.value) for t in every.trials]
    assert {c: t.number for c, t in last.best.items()} == {c: t.number for c, t in every.best.items()}
    q = """SELECT r.seed IN (1, 2), e.epoch, COUNT(*), COUNT(e.test_loss), COUNT(e.val_loss)
           FROM epochs e JOIN runs r USING (run_id) GROUP BY 1, 2 ORDER BY 1, 2"""
    with sqlite3.connect(tmp_path / "last" / "actconv.sqlite") as conn:
        counts = conn.execute(q).fetchall()
    tune, confirm = [c for c in counts if c[0]], [c for c in counts if not c[0]]
    assert [(e, n == t == v) for _, e, n, t, v in confirm] == [(0, True), (1, True), (2, True), (3, True)]
    assert [(e, t == v == (n if e == 3 else 0)) for _, e, n, t, v in tune] == \
        [(0, True), (1, True), (2, True), (3, True)]


def test_the_cli_takes_tune_eval_and_refuses_an_unknown_one(tmp_path, capsys):
    flags = ["--dataset", "digits", "--models", "mlp", "--hidden-units", "8", "--activations", "relu",
             "--n-train", "64", "--epochs", "2", "--jobs", "1", "--quiet", "--validation", "100",
             "--search", "lr=[0.1, 0.5]", "--trials", "2", "--sampler", "random", "--tune-seeds", "1",
             "--confirm-seeds", "5,6"]
    bad = tmp_path / "bad"
    assert main(["run", "--out", str(bad), *flags, "--tune-eval", "sometimes"]) == 2
    err = capsys.readouterr().err
    assert "unknown tune_eval 'sometimes'; choose from: every, last" in err and err.count("\n") == 1
    assert not bad.exists()
    out = tmp_path / "ok"
    assert main(["run", "--out", str(out), *flags, "--tune-eval", "last"]) == 0
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        mid = conn.execute("SELECT r.seed, e.test_loss FROM epochs e JOIN runs r USING (run_id) "
                           "WHERE e.epoch = 1 ORDER BY r.seed").fetchall()
    assert [s for s, t in mid if t is None] == [1, 1] and all(t is not None for s, t in mid if s != 1)


def test_sgd_stepping_all_tensors_at_once_is_bitwise_one_call_per_tensor(mnist5k, monkeypatch):
    # make_optimizer asks for foreach; runs stored when it stepped tensor by tensor must verify
    import torch
    from actconv.train import ensemble, loop
    unit = [RunSpec(model="m", model_spec=MLP, activation="tanh", seed=s, n_train=64, epochs=2, lr=lr,
                    momentum=m, weight_decay=wd, engine="ensemble")
            for s, lr, m, wd in ((1, 0.1, 0.9, 1e-3), (2, 0.03, 0.0, 0.0), (3, 0.3, 0.5, 0.0))]
    vgg = replace(unit[0], model_spec=VGG, engine="loop")
    assert loop.make_optimizer(vgg, [torch.zeros(1, requires_grad=True)]).defaults["foreach"] is True
    now = [*train_ensemble(unit, mnist5k), train_run(vgg, mnist5k)]

    def per_tensor(spec, params):
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               foreach=False)
    monkeypatch.setattr(loop, "make_optimizer", per_tensor)
    monkeypatch.setattr(ensemble, "make_optimizer", per_tensor)
    before = [*train_ensemble(unit, mnist5k), train_run(vgg, mnist5k)]
    for a, b in zip(now, before, strict=True):
        assert (a.batches["loss"] == b.batches["loss"]).all()
        assert [e["test_loss"] for e in a.epochs] == [e["test_loss"] for e in b.epochs]
