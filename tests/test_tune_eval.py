"""Tuning runs that score only at the ends (`tune_eval = "ends"`): scoring never touches the
weights, so every batch and every final score is what a run scoring every epoch records; a
search so scored chooses exactly what one scoring every epoch does, and its report draws the
confirmed view, not a figure set per trial."""
import math
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


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def _check(every, ends, epochs: int) -> None:
    assert ends.status == every.status == "done"
    for col in ("loss", "accuracy", "step"):
        assert (every.batches[col] == ends.batches[col]).all()  # bitwise: the same training
    for e, f in zip(every.epochs, ends.epochs, strict=True):
        assert e["train_loss"] == f["train_loss"] and e["train_accuracy"] == f["train_accuracy"]
        scored = e["epoch"] in (0, epochs)
        for col in ("test_loss", "test_accuracy", "val_loss", "val_accuracy"):
            if scored:
                assert f[col] == e[col] and f[col] is not None
            else:
                assert f.get(col) is None and e[col] is not None


@pytest.mark.parametrize("engine, spec", [("loop", VGG), ("ensemble", MLP)])
def test_scoring_at_the_ends_changes_no_batch_and_no_final_score(mnist5k, engine, spec):
    base = [RunSpec(model="m", model_spec=spec, activation="selu", seed=s, n_train=64, epochs=3,
                    lr=0.05, momentum=0.5, validation=50, engine=engine) for s in (1, 2)]
    ends = [replace(s, evaluate="ends") for s in base]
    assert len({s.run_id for s in base + ends}) == 4  # what a run records is part of the run
    if engine == "loop":
        pairs = [(train_run(a, mnist5k), train_run(b, mnist5k)) for a, b in zip(base, ends)]
    else:
        pairs = list(zip(train_ensemble(base, mnist5k), train_ensemble(ends, mnist5k)))
    for every, at_ends in pairs:
        _check(every, at_ends, 3)


def _study(tune_eval):
    d = {"name": "ends", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "activations": ["relu", "tanh"],
         "seeds": [7], "n_train": [64, 128], "epochs": 3, "validation": 100,
         "search": {"space": {"lr": "log(0.05, 1)", "momentum": [0, 0.5]}, "trials": 3, "batch": 3,
                    "sampler": "random", "tune_seeds": [1, 2], "confirm_seeds": [7, 8],
                    "tune_eval": tune_eval}}
    return config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")


def test_a_search_scored_at_the_ends_chooses_as_one_scored_every_epoch(tmp_path):
    every = run_search(_study("every"), tmp_path / "every", progress=False)
    ends = run_search(_study("ends"), tmp_path / "ends", progress=False)
    assert [(t.cell, t.number, t.params, t.value) for t in ends.trials] == \
        [(t.cell, t.number, t.params, t.value) for t in every.trials]
    assert {c: t.number for c, t in ends.best.items()} == {c: t.number for c, t in every.best.items()}
    q = """SELECT r.seed IN (1, 2), e.epoch, COUNT(*), COUNT(e.test_loss), COUNT(e.val_loss)
           FROM epochs e JOIN runs r USING (run_id) GROUP BY 1, 2 ORDER BY 1, 2"""
    with sqlite3.connect(tmp_path / "ends" / "actconv.sqlite") as conn:
        counts = conn.execute(q).fetchall()
    tune, confirm = [c for c in counts if c[0]], [c for c in counts if not c[0]]
    assert [(e, n == t == v) for _, e, n, t, v in confirm] == [(0, True), (1, True), (2, True), (3, True)]
    assert [(e, t == v == (n if e in (0, 3) else 0)) for _, e, n, t, v in tune] == \
        [(0, True), (1, True), (2, True), (3, True)]


def test_the_cli_takes_tune_eval_and_refuses_an_unknown_one(tmp_path, capsys):
    flags = ["--dataset", "digits", "--models", "mlp", "--hidden-units", "8", "--activations", "relu",
             "--n-train", "64", "--epochs", "2", "--jobs", "1", "--quiet", "--validation", "100",
             "--search", "lr=[0.1, 0.5]", "--trials", "2", "--sampler", "random", "--tune-seeds", "1",
             "--confirm-seeds", "5,6"]
    bad = tmp_path / "bad"
    assert main(["run", "--out", str(bad), *flags, "--tune-eval", "sometimes"]) == 2
    err = capsys.readouterr().err
    assert "unknown tune_eval 'sometimes'; choose from: every, ends" in err and err.count("\n") == 1
    assert not bad.exists()
    out = tmp_path / "ok"
    assert main(["run", "--out", str(out), *flags, "--tune-eval", "ends"]) == 0
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        mid = conn.execute("SELECT r.seed, e.test_loss FROM epochs e JOIN runs r USING (run_id) "
                           "WHERE e.epoch = 1 ORDER BY r.seed").fetchall()
    assert [s for s, t in mid if t is None] == [1, 1] and all(t is not None for s, t in mid if s != 1)
