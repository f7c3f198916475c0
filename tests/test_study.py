"""A study end to end: store, resume, bitwise reproducibility across dirs, jobs and a SIGKILL."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import actconv
from actconv.study import config
from actconv.cli import build_parser, main
from actconv.run.queue import resolve_jobs
from actconv.run.store import Store, load_results

SMALL = {"name": "small", "models": {"m": {"kind": "mlp", "hidden_units": 8}},
         "activations": ["relu", "tanh"], "seeds": [1, 2], "n_train": [64, 96], "epochs": 2}


def small_study(**kw):
    return config.study_from_dict({**SMALL, **kw})


def test_store_holds_every_run_epoch_and_batch(tmp_path):
    study = small_study()
    out = actconv.run_study(study, tmp_path, progress=False)
    assert out.executed == 8 and out.counts == {"done": 8}
    res = load_results(tmp_path)
    assert len(res.runs) == 8 and set(res.runs.status) == {"done"}
    assert len(res.epochs) == 8 * 3
    assert len(res.batches) == 4 * (2 * 2) + 4 * (3 * 2)  # 64 -> 2 steps, 96 -> 3 steps per epoch
    assert list(res.batches.columns[:9]) == ["run_id", "model", "activation", "seed", "n_train",
                                             "epoch", "step", "loss", "accuracy"]
    row = res.runs.iloc[0]
    assert row.threads == 1 and row.torch_version and row.device == "cpu" and row["dtype"] == "float32"
    spec = config.RunSpec.from_json(row.config_json)
    assert spec.run_id == row.run_id  # every result carries its full config


def test_running_again_executes_nothing(tmp_path):
    study = small_study()
    actconv.run_study(study, tmp_path, progress=False)
    again = actconv.run_study(study, tmp_path, progress=False)
    assert again.executed == 0 and again.skipped == 8


def test_two_output_dirs_are_bitwise_identical(tmp_path):
    study = small_study(activations=["selu"])
    actconv.run_study(study, tmp_path / "a", progress=False)
    actconv.run_study(study, tmp_path / "b", progress=False)
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    assert np.array_equal(a.batches.loss.to_numpy(), b.batches.loss.to_numpy())
    pd.testing.assert_frame_equal(a.epochs, b.epochs)


def test_run_result_does_not_depend_on_grid_order(tmp_path):
    actconv.run_study(small_study(), tmp_path / "full", progress=False)
    actconv.run_study(small_study(activations=["tanh"], seeds=[2], n_train=[96]), tmp_path / "one",
                      progress=False)
    full, one = load_results(tmp_path / "full").batches, load_results(tmp_path / "one").batches
    rid = one.run_id.iloc[0]
    assert np.array_equal(full[full.run_id == rid].loss.to_numpy(), one.loss.to_numpy())


def test_jobs_two_equals_jobs_one(tmp_path):
    study = small_study(models={"m": {"kind": "mlp", "hidden_units": 8}, "v": {"kind": "tinyvgg", "hidden_units": 4}},
                        grid=[{"models": ["m", "v"], "seeds": [1, 2], "n_train": [64]}],
                        activations=["selu", "relu"])
    actconv.run_study(study, tmp_path / "j1", jobs=1, progress=False)
    actconv.run_study(study, tmp_path / "j2", jobs=2, progress=False)
    a, b = load_results(tmp_path / "j1").batches, load_results(tmp_path / "j2").batches
    a, b = a.sort_values(["run_id", "step"]), b.sort_values(["run_id", "step"])
    assert len(a) == len(b) > 0
    assert np.array_equal(a.loss.to_numpy(), b.loss.to_numpy())


def test_cli_default_jobs_is_every_core_and_equals_jobs_one_bitwise(tmp_path):
    flags = ["run", "--models", "mlp", "--hidden-units", "8", "--activations", "relu,tanh", "--seeds", "1,2",
             "--n-train", "64", "--epochs", "1", "--engine", "loop", "--quiet", "--out"]
    assert build_parser().parse_args(flags + ["x"]).jobs == "auto"
    assert resolve_jobs("auto") == len(os.sched_getaffinity(0))
    assert main(flags + [str(tmp_path / "default")]) == 0
    assert main(flags + [str(tmp_path / "one"), "--jobs", "1"]) == 0
    a, b = load_results(tmp_path / "default").batches, load_results(tmp_path / "one").batches
    assert len(a) == len(b) == 4 * 2 and np.array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    for bad in (0, -1, "x", 1.5, True):
        with pytest.raises(actconv.ActconvError, match="jobs must be a positive number or 'auto'"):
            actconv.run_study(small_study(), tmp_path / "bad", jobs=bad, progress=False)
    assert not (tmp_path / "bad").exists()


DRIVER = """
import json, sys
from actconv.cli import build_parser, main
from actconv.run.queue import resolve_jobs
code = main(sys.argv[1:])
print(json.dumps([code, sorted(m for m in ("torch", "pandas", "scipy") if m in sys.modules)]))
"""


def test_a_pool_driver_never_imports_torch(tmp_path):
    # torch is ~300 MB a process: with --jobs 2 only the workers (forked from one server) hold it
    out = subprocess.run([sys.executable, "-c", DRIVER, "run", "--preset", "smoke", "--out", str(tmp_path),
                          "--jobs", "2", "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == '[0, []]', out.stderr[-2000:]
    assert load_results(tmp_path).runs.status.eq("done").all()
    # the checks the driver can no longer make itself come back from a worker as one line
    out = subprocess.run([sys.executable, "-c", DRIVER, "run", "--preset", "smoke", "--out", str(tmp_path / "x"),
                          "--jobs", "2", "--n-train", "5000", "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == '[2, []]'
    assert out.stderr.strip() == "actconv: error: n_train 5000 exceeds the mnist-5k training pool of 4000 images"
    assert not (tmp_path / "x" / "actconv.sqlite").exists()


def test_incompatible_schema_is_refused_and_left_alone(tmp_path):
    actconv.run_study(small_study(seeds=[1], activations=["relu"], n_train=[64]), tmp_path, progress=False)
    db = tmp_path / "actconv.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    before = db.read_bytes()
    with pytest.raises(actconv.ActconvError, match="schema 99"):
        Store(tmp_path)
    assert db.read_bytes() == before


def test_sigkill_mid_study_then_resume_stores_every_run_once(tmp_path):
    study_file = tmp_path / "study.toml"
    study_file.write_text('name = "killme"\nactivations = ["relu", "tanh", "selu"]\n'
                          'seeds = [1, 2, 3]\nn_train = [256]\nepochs = 3\n'
                          '[models.m]\nkind = "mlp"\nhidden_units = 32\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "actconv.cli", "run", str(study_file), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / "actconv.sqlite").exists():
            try:
                with sqlite3.connect(out / "actconv.sqlite", timeout=1) as c:
                    done = c.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 2:
                break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < done < 9, "the kill should land mid-study"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(cmd[:6] + [str(tmp_path / "clean"), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res, clean = load_results(out), load_results(tmp_path / "clean")
    assert len(res.runs) == 9 and set(res.runs.status) == {"done"}
    assert not res.batches.duplicated(["run_id", "step"]).any()
    a = res.batches.sort_values(["run_id", "step"]).loss.to_numpy()
    b = clean.batches.sort_values(["run_id", "step"]).loss.to_numpy()
    assert np.array_equal(a, b)
    with sqlite3.connect(out / "actconv.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cli_run_status_and_listings(tmp_path, capsys):
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert "17 runs (17 executed" in capsys.readouterr().out
    assert main(["status", str(tmp_path)]) == 0
    assert "17 done, 0 diverged, 0 failed, 0 pending" in capsys.readouterr().out
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "seed" in listing and "525 runs" in listing and "demo" in listing
    assert main(["activations"]) == 0
    assert "leaky_relu_0.1" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


def test_cli_grid_flags_apply(tmp_path):
    assert main(["run", "--models", "mlp", "--hidden-units", "8", "--activate-logits",
                 "--activations", "relu", "--seeds", "5", "--n-train", "64", "--epochs", "1",
                 "--out", str(tmp_path), "--quiet"]) == 0
    runs = load_results(tmp_path).runs
    assert len(runs) == 1 and runs.hidden_units[0] == 8 and runs.activate_logits[0] == 1
    assert main(["run", "--models", "mlp", "--hidden-units", "8", "--activations", "relu", "--seeds", "5",
                 "--n-train", "256", "--epochs", "1", "--diagnostics", "--grad-every", "3",
                 "--out", str(tmp_path / "d"), "--quiet"]) == 0
    res = load_results(tmp_path / "d")
    assert config.RunSpec.from_json(res.runs.config_json[0]).grad_every == 3
    grad_steps = sorted(set(res.diagnostics.query("metric == 'grad_norm'").step))
    assert grad_steps == [1, 4, 7], grad_steps  # 8 steps of 32 images: the first, then every third


BAD = [
    (["--models", "resnet"], "unknown model 'resnet'; choose from: mlp, mlp_original, tinyvgg"),
    (["--activations", "swish"], "unknown activation 'swish'"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; choose from: sgd, adam"),
    (["--preset", "nope"], "unknown preset 'nope'; choose from: cifar-small, demo"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--batch-size", "-1"], "batch_size must be positive"),
    (["--grad-every", "0"], "grad_every must be positive"),
    (["--lr", "0"], "lr must be positive"),
    (["--jobs", "0"], "argument --jobs: expected a positive number of processes or 'auto', got '0'"),
    (["--jobs", "x"], "argument --jobs: expected a positive number of processes or 'auto', got 'x'"),
    (["--n-train", "0"], "n_train must be positive"),
    (["--n-train", "5000", "--models", "mlp"], "n_train 5000 exceeds the mnist-5k training pool of 4000"),
    (["--epochs", "two"], "expected comma-separated ints"),
    (["--lr", "0.1,0"], "lr must be positive, got 0.0"),
    (["--optimizer", "adam,rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--validation", "3500", "--n-train", "600", "--models", "mlp"],
     "validation 3500 + n_train 600 exceeds the mnist-5k training pool of 4000"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent-actconv"], "--download"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_flags_give_one_clear_line_and_exit_2(tmp_path, capsys, flags, message):
    assert main(["run", "--out", str(tmp_path / "o"), "--quiet"] + flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("actconv: error:") and "\n" not in err
    assert not (tmp_path / "o" / "actconv.sqlite").exists()


@pytest.mark.parametrize("text,message", [
    ("name = [", "not valid TOML"),
    ('nmae = "typo"', "unknown key 'nmae'"),
    ('epochs = "ten"', "epochs must be int"),
    ('[models.x]\nkind = "transformer"', "unknown model kind 'transformer'"),
    ('[models.x]\nkind = "mlp"\nwidth = 3', "unknown key 'width'"),
    ('[[grid]]\nmodels = ["nope"]', "unknown model 'nope'"),
    ("lr = []", "lr is an empty list"),
    ('[[grid]]\nmodels = ["mlp"]\noptimizer = ["sgd", "lion"]', "unknown optimizer 'lion'"),
    ("validation = -1", "validation must be non-negative"),
])
def test_bad_study_files(tmp_path, capsys, text, message):
    f = tmp_path / "s.toml"
    f.write_text(text)
    assert main(["run", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unwritable_output_and_bad_store_leave_things_alone(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    assert main(["run", "--preset", "smoke", "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "cannot open a store" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "actconv.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    assert main(["run", "--preset", "smoke", "--out", str(junk), "--quiet"]) == 2
    assert "file is not a database" in capsys.readouterr().err
    assert (junk / "actconv.sqlite").read_bytes() == b"this is not sqlite at all" * 100
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no actconv results" in capsys.readouterr().err


def test_example_study_file_runs(tmp_path):
    """The shipped example study, shrunk to one seed, size and epoch of each grid, trains."""
    study = config.load_study(os.path.join(os.path.dirname(__file__), "..", "examples", "study.toml"))
    assert len(study.runs()) > 0
    small = config.with_overrides(study, seeds=[1], n_train=[64], epochs=1, hidden_units=4)
    out = actconv.run_study(small, tmp_path, progress=False)
    assert out.counts.get("done") == out.total == len(small.runs())
    res = actconv.load_results(tmp_path)
    assert set(res.epochs["epoch"]) == {0, 1} and len(res.runs) == out.total


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU machine may have CUDA")
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, jobs):
    assert main(["run", "--preset", "smoke", "--device", "cuda", "--jobs", jobs, "--out", str(tmp_path),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("actconv: error: --device cuda asked for, but torch sees no "
                                               "CUDA device; use --device cpu")
    assert not (tmp_path / "actconv.sqlite").exists()
