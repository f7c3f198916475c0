"""The Ray executor on a real local cluster (`ray start --head` on loopback, one per module)."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: stay on loopback
if os.environ.get("ACTCONV_REQUIRE_RAY"):  # CI (.ci/run): a missing extra must fail, not skip
    import ray
else:
    ray = pytest.importorskip("ray")

import actconv  # noqa: E402
from actconv.study import config
from actconv.run import ray_tasks as ray_executor  # noqa: E402
from actconv.cli import main  # noqa: E402
from actconv.run.store import load_results  # noqa: E402
from faultkit import (LOOPBACK_ENV, add_ray_node, assert_same_study, clean_store, kill_cycles,  # noqa: E402
                      kill_session, kill_study, session_commands, start_ray_head)

pytestmark = pytest.mark.ray

MIXED = {"name": "mixed", "models": {"m": {"kind": "mlp", "hidden_units": 8}, "v": {"kind": "tinyvgg", "hidden_units": 4}},
         "activations": ["relu", "selu"], "seeds": [1, 2], "n_train": [64], "epochs": 1}
CYCLES = int(os.environ.get("ACTCONV_KILL_CYCLES", "2"))  # each cycle starts fresh Ray workers
KILL_STUDY, KILL_RUNS = kill_study(CYCLES)


@pytest.fixture(scope="module")
def head():
    """One Ray head for the module, in a session of its own; its processes are killed by that id."""
    proc, address = start_ray_head(num_cpus=2)
    yield address
    kill_session(proc.pid)


@pytest.fixture(scope="module")
def connected(head):
    """This process connected to the head (run_study then borrows the session)."""
    with ray_executor.session(head):
        yield head


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """KILL_STUDY run once without interruption."""
    return clean_store(tmp_path_factory.mktemp("clean"), KILL_STUDY)


def cli(*args):
    return [sys.executable, "-m", "actconv.cli", "run", *args, "--quiet"]


def test_ray_results_are_bitwise_those_of_the_local_executor(connected, tmp_path):
    study = config.study_from_dict(MIXED)
    on_ray = actconv.run_study(study, tmp_path / "ray", executor="ray", ray_address=connected, progress=False)
    actconv.run_study(study, tmp_path / "local", progress=False)
    assert on_ray.counts == {"done": 8} and on_ray.executed == 8
    a, b = load_results(tmp_path / "ray"), load_results(tmp_path / "local")
    ba, bb = (r.batches.sort_values(["run_id", "step"]).reset_index(drop=True) for r in (a, b))
    assert len(ba) == len(bb) > 0 and np.array_equal(ba.loss.to_numpy(), bb.loss.to_numpy())
    ea, eb = (r.epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True) for r in (a, b))
    assert ea.equals(eb)
    assert set(a.runs.threads) == {1}


def test_each_worker_fetches_the_data_once(connected, tmp_path):
    def probe():
        from actconv.run import ray_tasks as ray_executor
        time.sleep(0.2)  # keep the worker busy, so the probes spread over every worker
        return os.getpid(), ray_executor._FETCHES

    def fetches():
        return dict(ray.get([ray.remote(probe).options(num_cpus=1).remote() for _ in range(8)]))
    before = fetches()
    study = config.study_from_dict({**MIXED, "models": {"m": {"kind": "mlp", "hidden_units": 8}},
                                    "seeds": [1, 2, 3, 4, 5, 6], "engine": "loop"})
    out = actconv.run_study(study, tmp_path, executor="ray", ray_address=connected, progress=False)
    assert out.executed == 12
    new = {pid: n - before.get(pid, 0) for pid, n in fetches().items()}
    assert max(new.values()) == 1  # a worker that ran this study's units fetched its data once
    assert 0 < sum(new.values()) < 12


def test_cli_on_the_cluster_retries_worker_faults_then_reruns_only_failed(connected, tmp_path, monkeypatch, capsys):
    """`actconv run --executor ray`: a run that raises and a worker SIGKILLed, then a rerun."""
    study_file = tmp_path / "s.toml"
    study_file.write_text('name = "faults"\nactivations = ["relu", "tanh", "selu", "elu"]\nseeds = [1, 2]\n'
                          'n_train = [64]\nepochs = 1\nengine = "loop"\n[models.m]\nkind = "mlp"\nhidden_units = 8\n')
    raises, kills, once, *_ = (s.run_id for s in config.load_study(study_file).runs())
    out = tmp_path / "out"
    argv = ["run", str(study_file), "--out", str(out), "--executor", "ray", "--ray-address", connected,
            "--retries", "1", "--quiet"]
    monkeypatch.setenv("ACTCONV_FAULT", f"raise:{raises},kill:{kills},kill-once:{once}:{tmp_path / 'once'}")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("actconv: 2 run(s) failed; first ")
    runs = load_results(out).runs.set_index("run_id")
    assert runs.status[raises] == runs.status[kills] == "failed"
    assert runs.error[raises].startswith("RuntimeError: fault injected")
    assert runs.error[kills].startswith("WorkerCrashedError")
    assert runs.attempts[kills] == 2 and runs.status[once] == "done" and runs.attempts[once] == 2
    monkeypatch.delenv("ACTCONV_FAULT")
    assert main(argv) == 0
    assert "(2 executed, 6 already stored)" in capsys.readouterr().out


def test_without_an_address_a_local_ray_on_loopback_is_started_and_stopped(connected, tmp_path):
    """A Ray of its own, not the running one, and nothing of it left when actconv exits."""
    study_file = tmp_path / "s.toml"
    study_file.write_text('name = "alone"\nactivations = ["relu"]\nseeds = [1, 2]\nn_train = [64]\nepochs = 1\n'
                          'engine = "loop"\n[models.m]\nkind = "mlp"\nhidden_units = 8\n')
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["RAY_AUTH_MODE"] = "disabled"  # else Ray saves a token in ~/.ray for every later cluster
    proc = subprocess.Popen(cli(str(study_file), "--out", str(tmp_path / "out"), "--executor", "ray", "--jobs", "1"),
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
        left = session_commands(proc.pid)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 0, stderr
    assert "2 runs (2 executed" in stdout and not left, left
    assert len(ray.nodes()) == 1  # the module's cluster did not get the runs


def test_a_node_that_dies_mid_study_loses_nothing(connected, tmp_path, clean):
    node = add_ray_node(connected, num_cpus=1)
    killed = threading.Event()

    def kill_node_once_busy():
        deadline = time.time() + 120
        while time.time() < deadline:
            if any(c.startswith("ray::_execute_task") for c in session_commands(node.pid)):
                time.sleep(0.2)
                kill_session(node.pid)
                killed.set()
                return
            time.sleep(0.02)
    killer = threading.Thread(target=kill_node_once_busy, daemon=True)
    killer.start()
    try:
        (tmp_path / "s.toml").write_text(KILL_STUDY)
        study = config.load_study(tmp_path / "s.toml")
        out = actconv.run_study(study, tmp_path / "out", executor="ray", ray_address=connected, progress=False)
    finally:
        killer.join(timeout=1)
        kill_session(node.pid)
    assert killed.is_set(), "no unit ran on the extra node"
    assert out.counts == {"done": KILL_RUNS}
    assert load_results(tmp_path / "out").runs.attempts.max() >= 2  # the unit on the dead node ran again
    assert_same_study(tmp_path / "out", clean)


def test_driver_killed_at_random_moments_on_ray_then_resumed(head, tmp_path, clean):
    (tmp_path / "s.toml").write_text(KILL_STUDY)
    out = tmp_path / "out"
    cmd = cli(str(tmp_path / "s.toml"), "--out", str(out), "--executor", "ray", "--ray-address", head)
    env = {**os.environ, **LOOPBACK_ENV}
    counts = kill_cycles(cmd, out, CYCLES, seed=11, env=env)
    assert counts["cycles"] == CYCLES and counts["mid_study"] > 0
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    assert_same_study(out, clean)
    print(f"ray: {counts}")


def test_a_search_on_ray_asks_and_stores_what_a_local_search_does(connected, tmp_path):
    from actconv.run.search import run_search
    study = config.with_overrides(config.study_from_dict({
        "name": "ray-search", "dataset": "digits", "models": {"m": {"kind": "mlp", "hidden_units": 8}},
        "activations": ["relu", "tanh"], "n_train": [128], "epochs": 2, "validation": 100,
        "search": {"space": {"lr": "log(0.05, 1)"}, "trials": 2, "tune_seeds": [1, 2], "confirm_seeds": [5]}}),
        device="cpu")
    on_ray = run_search(study, tmp_path / "ray", executor="ray", ray_address=connected, progress=False)
    local = run_search(study, tmp_path / "local", progress=False)
    assert [(t.params, t.value) for t in on_ray.trials] == [(t.params, t.value) for t in local.trials]
    assert on_ray.executed == local.executed == 2 * 2 * 2 + 2
    ea, eb = (load_results(tmp_path / d).epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True)
              for d in ("ray", "local"))
    assert ea.equals(eb)
