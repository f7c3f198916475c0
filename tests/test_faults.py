"""Faults lose nothing: runs that raise, workers and drivers killed, two drivers on one store."""
import os
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import actconv
from actconv.study import config
from actconv.cli import main
from actconv.run.store import Store, load_results, owner_alive, owner_id
from actconv.run.verify import verify_runs
from faultkit import assert_same_study, clean_store, kill_cycles, kill_study

# The loop engine trains one run per unit, so a fault hits one run (an ensemble unit fails whole, then
# each of its runs is tried again alone).
TINY = {"name": "tiny", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "engine": "loop",
        "activations": ["relu", "tanh"], "seeds": [1, 2], "n_train": [64], "epochs": 1}
CYCLES = int(os.environ.get("ACTCONV_KILL_CYCLES", "3"))  # a soak: ACTCONV_KILL_CYCLES=40
KILL_STUDY, KILL_RUNS = kill_study(CYCLES)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """KILL_STUDY run once without interruption."""
    return clean_store(tmp_path_factory.mktemp("clean"), KILL_STUDY)


def write_study(path, d=TINY):
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in d.items() if k != "models"]
    for name, m in d["models"].items():
        lines += [f"[models.{name}]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in m.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_worker_faults_are_retried_then_failed_and_a_rerun_retries_only_those(tmp_path, monkeypatch, capsys):
    raises, kills, once, fine = (s.run_id for s in config.study_from_dict(TINY).runs())
    faults = f"raise:{raises},kill:{kills},kill-once:{once}:{tmp_path / 'once'}"
    study, out = write_study(tmp_path / "s.toml"), tmp_path / "out"
    argv = ["run", str(study), "--out", str(out), "--jobs", "2", "--retries", "1", "--quiet"]
    # A process of its own: the interpreter's exit is where a leaked-semaphore warning would be printed.
    done = subprocess.run([sys.executable, "-m", "actconv.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "ACTCONV_FAULT": faults}, timeout=300)
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()  # one line: no traceback, no resource_tracker warning
    assert len(err) == 1 and err[0].startswith("actconv: 2 run(s) failed; first "), done.stderr
    runs = load_results(out).runs.set_index("run_id")
    assert runs.status.to_dict() == {raises: "failed", kills: "failed", once: "done", fine: "done"}
    assert runs.error[raises].startswith("RuntimeError: fault injected by ACTCONV_FAULT")
    assert "worker process died" in runs.error[kills]
    # A worker that dies every time is blamed alone and tried 1 + retries times, no more.
    assert runs.attempts[once] >= 2 and 2 <= runs.attempts[kills] <= 3

    assert main(argv) == 0
    assert "(2 executed, 2 already stored)" in capsys.readouterr().out
    checks = list(verify_runs(out, n=0))
    assert len(checks) == 4 and all(c.ok for c in checks), [c.line() for c in checks]


def test_a_failed_ensemble_unit_is_retried_one_member_at_a_time(tmp_path, monkeypatch):
    ens = {**TINY, "engine": "ensemble", "activations": ["relu"], "seeds": [1, 2, 3]}
    specs = config.study_from_dict(ens).runs()
    bad = specs[1].run_id
    clean = actconv.run_study(config.study_from_dict(ens), tmp_path / "clean", progress=False)
    assert clean.counts == {"done": 3}
    monkeypatch.setenv("ACTCONV_FAULT", f"raise:{bad}")  # fails the whole unit of three seeds
    out = actconv.run_study(config.study_from_dict(ens), tmp_path / "out", progress=False, retries=1)
    runs = load_results(tmp_path / "out").runs.set_index("run_id")
    assert out.counts == {"done": 2, "failed": 1} and runs.status[bad] == "failed"
    assert runs.attempts[bad] == 2  # the unit, then alone
    a = load_results(tmp_path / "clean").batches.query("run_id != @bad").sort_values(["run_id", "step"])
    b = load_results(tmp_path / "out").batches.sort_values(["run_id", "step"])
    assert len(a) == len(b) > 0 and np.array_equal(a.loss.to_numpy(), b.loss.to_numpy())  # alone == in the unit


def test_serial_run_that_raises_once_is_retried_in_process(tmp_path, monkeypatch):
    study = config.study_from_dict({**TINY, "activations": ["relu"], "seeds": [1]})
    rid = study.runs()[0].run_id
    monkeypatch.setenv("ACTCONV_FAULT", f"raise-once:{rid}:{tmp_path / 'once'}")
    out = actconv.run_study(study, tmp_path / "a", progress=False)
    assert out.counts == {"done": 1} and out.executed == 1
    monkeypatch.setenv("ACTCONV_FAULT", f"raise:{rid}")
    out = actconv.run_study(study, tmp_path / "b", progress=False, retries=0)
    assert out.counts == {"failed": 1} and load_results(tmp_path / "b").runs.attempts[0] == 1
    with pytest.raises(actconv.ActconvError, match="retries must be zero or more"):
        actconv.run_study(study, tmp_path / "c", progress=False, retries=-1)


def test_driver_killed_at_random_moments_then_resumed(tmp_path, clean):
    """SIGKILL `actconv run --jobs 2` again and again; the finished study equals a clean one."""
    (tmp_path / "s.toml").write_text(KILL_STUDY)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "actconv.cli", "run", str(tmp_path / "s.toml"), "--out", str(out),
           "--jobs", "2", "--quiet"]
    counts = kill_cycles(cmd, out, CYCLES, seed=7)
    assert counts["cycles"] == CYCLES and counts["mid_study"] > 0
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_same_study(out, clean)
    print(f"local pool: {counts}")


def test_two_drivers_on_one_store_share_the_work(tmp_path, clean):
    (tmp_path / "s.toml").write_text(KILL_STUDY)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "actconv.cli", "run", str(tmp_path / "s.toml"), "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    executed = [int(o.split(" executed")[0].rsplit("(", 1)[1]) for o, _ in outputs]
    runs = load_results(out).runs
    assert len(runs) == KILL_RUNS and set(runs.status) == {"done"}
    assert sum(executed) == KILL_RUNS and runs.attempts.max() == 1  # no run was executed twice
    assert_same_study(out, clean)


def test_claims_of_a_live_driver_are_waited_for_and_of_a_dead_one_taken(tmp_path):
    study = config.study_from_dict(TINY)
    held, dead = (s.run_id for s in study.runs()[:2])
    with Store(tmp_path) as store:
        store.register("tiny", "{}", study.runs())
        # Another host's driver: alive as far as we can tell, until its lease runs out.
        assert store.claim([held], "otherhost:1:1", lease_s=1.5) == [held]
        # A driver of this host whose process is gone: its claim is free at once.
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        ghost = f"{socket.gethostname()}:{gone.pid}:x"
        assert not owner_alive(ghost) and owner_alive(owner_id())
        assert store.claim([dead], ghost, lease_s=3600) == [dead]
        assert store.claim([held, dead], owner_id()) == [dead]
        store.release(owner_id())
    start = time.perf_counter()
    out = actconv.run_study(study, tmp_path, progress=False)
    assert out.counts == {"done": 4} and out.executed == 4
    assert time.perf_counter() - start >= 1.0  # it waited for the live lease to run out
    runs = load_results(tmp_path).runs.set_index("run_id")
    assert runs.claimed_by.isna().all() and runs.attempts[held] == 2


def test_release_gives_an_interrupted_drivers_runs_back(tmp_path):
    study = config.study_from_dict(TINY)
    with Store(tmp_path) as store:
        store.register("tiny", "{}", study.runs())
        ids = [s.run_id for s in study.runs()]
        assert store.claim(ids, "me:1:1") == ids
        assert store.held_by_others(ids, "you:2:2") == ids and store.renew("me:1:1") == 4
        store.release("me:1:1")
        assert set(store.statuses().values()) == {"pending"} and store.held_by_others(ids, "you:2:2") == []


def test_ray_executor_errors_are_one_clear_line(tmp_path, monkeypatch, capsys):
    study = write_study(tmp_path / "s.toml")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["run", str(study), "--out", str(tmp_path / "o"), "--executor", "ray", "--quiet"]) == 2
    assert "pip install 'actconv[ray]'" in capsys.readouterr().err
    monkeypatch.undo()
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", str(study), "--out", str(tmp_path / "o"), "--executor", "ray",
                 "--ray-address", f"127.0.0.1:{port}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "actconv.sqlite").exists()


def test_a_store_that_cannot_be_written_is_one_line_and_gives_its_claims_back(tmp_path, monkeypatch, capsys):
    from actconv.run.store import Store as RealStore

    def full_disk(self, results):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(RealStore, "write_many", full_disk)  # what the driver writes a unit with
    study = write_study(tmp_path / "s.toml", {**TINY, "seeds": [1]})
    assert main(["run", str(study), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "database or disk is full" in err and err.count("\n") == 1
    with sqlite3.connect(tmp_path / "o" / "actconv.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert {r[0] for r in c.execute("SELECT status FROM runs")} == {"pending"}


OPEN_AT = """
import sys, time
from actconv.run.store import Store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
with Store(sys.argv[1]):
    pass
"""


def test_drivers_opening_a_new_store_at_the_same_moment_all_get_it(tmp_path):
    # SQLite answers 'database is locked' at once, without waiting, when two connections
    # switch a new file to WAL together (seen ~1 in 20 opens before the store waited for it)
    for i in range(12):
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(tmp_path / str(i)), str(start)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
