"""`actconv verify`: stored runs re-executed and compared bitwise, the first difference named."""
import sqlite3

import pytest

import actconv
from actconv.study import config
from actconv.cli import main
from actconv.run.verify import verify_runs

STUDY = {"name": "v", "models": {"m": {"kind": "mlp", "hidden_units": 8}},
         "activations": ["relu", "selu"], "seeds": [1, 2], "n_train": [64], "epochs": 2}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify")
    actconv.run_study(config.study_from_dict(STUDY), out, progress=False)
    return out


def test_every_stored_run_reproduces(stored, capsys):
    assert main(["verify", str(stored), "--runs", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(ln.startswith("ok ") for ln in lines[:4])
    assert "4 batch losses and 3 epochs match bitwise" in lines[0]
    assert lines[-1] == "4 of 4 runs reproduce bitwise"


def test_a_sample_and_named_runs(stored):
    ids = sorted(r.run_id for r in config.study_from_dict(STUDY).runs())
    sample = [c.run_id for c in verify_runs(stored, n=2, seed=3)]
    assert len(sample) == 2 and sample == [c.run_id for c in verify_runs(stored, n=2, seed=3)]
    assert [c.run_id for c in verify_runs(stored, run_ids=[ids[1]])] == [ids[1]]


def test_a_changed_loss_is_reported_at_its_step(tmp_path, capsys):
    actconv.run_study(config.study_from_dict({**STUDY, "activations": ["relu"], "seeds": [1]}), tmp_path,
                      progress=False)
    with sqlite3.connect(tmp_path / "actconv.sqlite") as c:
        rid = c.execute("SELECT run_id FROM runs").fetchone()[0]
        # One ulp on step 3's loss: bitwise means bitwise.
        (loss,) = c.execute("SELECT loss FROM batches WHERE run_id=? AND step=3", (rid,)).fetchone()
        import numpy as np
        c.execute("UPDATE batches SET loss=? WHERE run_id=? AND step=3", (float(np.nextafter(loss, 1.0)), rid))
    assert main(["verify", str(tmp_path), "--run-id", rid]) == 1
    out = capsys.readouterr().out
    assert f"DIFF {rid}" in out and "first difference at step 3 (epoch 2): batch loss" in out
    assert out.splitlines()[-1] == "0 of 1 runs reproduce bitwise; 1 differ"
    with sqlite3.connect(tmp_path / "actconv.sqlite") as c:
        c.execute("UPDATE batches SET loss=? WHERE run_id=? AND step=3", (loss, rid))
        c.execute("UPDATE epochs SET test_loss=test_loss*2 WHERE run_id=? AND epoch=1", (rid,))
    assert main(["verify", str(tmp_path), "--run-id", rid]) == 1
    assert "first difference at epoch 1: test_loss" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--run-id", "0123456789abcdef"], "no run '0123456789abcdef'"),
    (["--runs", "-1"], "--runs must be zero or more"),
])
def test_bad_requests_are_one_line_and_exit_2(stored, capsys, argv, message):
    assert main(["verify", str(stored)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_nothing_to_verify(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "none")]) == 2
    assert "no actconv results" in capsys.readouterr().err
