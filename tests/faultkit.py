"""Helpers for the fault tests: processes in sessions of their own, killed only by their id."""
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from actconv.run.store import load_results

BIN = Path(sys.executable).parent
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_where(field: int, value: int) -> list[int]:
    """Live processes whose /proc stat field (after the name: 1 ppid, 3 session id) is value."""
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[field]) == value and fields[0] != "Z" and int(p) != os.getpid():
                pids.append(int(p))
    return pids


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is sid (Linux /proc)."""
    return pids_where(3, sid)


def kill_until_gone(select, timeout: float = 10) -> None:
    """SIGKILL the processes select() names, again, until it names none."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = select()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def session_commands(sid: int) -> list[str]:
    out = []
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                out.append(f.read().replace("\0", " ").strip())
        except OSError:
            pass
    return out


def kill_session(sid: int, timeout: float = 10) -> None:
    """SIGKILL every process of the session we started as sid, until none is left."""
    kill_until_gone(lambda: session_pids(sid), timeout)


# Runs a command in this session and ends every process of the session once the test
# process is gone, so a crashed pytest leaves no Ray behind.
WATCHDOG = f"""
import os, subprocess, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from faultkit import kill_until_gone, pids_where
test_process, command = int(sys.argv[1]), sys.argv[2:]
child = subprocess.Popen(command)
while child.poll() is None:
    try:
        os.kill(test_process, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
kill_until_gone(lambda: pids_where(1, os.getpid()), timeout=5)
"""


def kill_study(cycles: int) -> tuple[str, int]:
    """A study file with enough work (in units of one run) that kills land mid-study, and its run count."""
    seeds = list(range(1, max(2, cycles // 2) + 1))
    text = (f'name = "killme"\nactivations = ["relu", "tanh", "selu", "elu"]\nseeds = {seeds}\n'
            'n_train = [4000]\nepochs = 8\nengine = "loop"\n[models.m]\nkind = "mlp"\nhidden_units = 64\n')
    return text, 4 * len(seeds)


def clean_store(folder: Path, study_text: str) -> Path:
    """The study run once on the local executor, without interruption: what every interrupted store must equal."""
    from actconv import run_study
    from actconv.study import config
    (folder / "s.toml").write_text(study_text)
    run_study(config.load_study(folder / "s.toml"), folder / "out", progress=False)
    return folder / "out"


def start_ray_head(num_cpus: int = 2, timeout: float = 120):
    """`ray start --head --block` on loopback in a session of its own: (process, address)."""
    port = free_port()
    log = open(os.environ.get("TMPDIR", "/tmp") + f"/actconv-ray-head-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()),
         str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--include-dashboard=false", "--num-cpus", str(num_cpus), "--disable-usage-stats"],
        env={**os.environ, **LOOPBACK_ENV}, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see {log.name}")
        if "Ray runtime started" in Path(log.name).read_text():
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.2)
    kill_session(proc.pid)
    raise RuntimeError(f"ray start did not come up in {timeout} s; see {log.name}")


ADD_NODE = """
import os, sys, time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray._private.node import Node
from ray._private.parameter import RayParams
# `ray start --address` refuses to join with the loopback setting, so start the node as
# ray.cluster_utils.Cluster.add_node does.
Node(RayParams(gcs_address=sys.argv[1], node_ip_address="127.0.0.1", num_cpus=int(sys.argv[2]),
               object_store_memory=100 * 2**20, include_log_monitor=False, node_manager_port=0,
               min_worker_port=0, max_worker_port=0, dashboard_agent_listen_port=None),
     head=False, shutdown_at_exit=False, spawn_reaper=False)
print("up", flush=True)
while True:  # until the test kills this session, or the test process is gone
    try:
        os.kill(int(sys.argv[3]), 0)
    except ProcessLookupError:
        os.killpg(0, 9)
    time.sleep(1)
"""


def add_ray_node(address: str, num_cpus: int = 1, timeout: float = 60):
    """A second Ray node on this machine, in a session of its own (kill it to make the node die)."""
    proc = subprocess.Popen([sys.executable, "-c", ADD_NODE, address, str(num_cpus), str(os.getpid())],
                            env={**os.environ, **LOOPBACK_ENV}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if line.strip() != "up":
        kill_session(proc.pid)
        raise RuntimeError("the extra Ray node did not start")
    return proc


def kill_cycles(cmd: list[str], out: Path, cycles: int, seed: int, env=None, timeout: float = 120) -> dict:
    """Start `cmd` and SIGKILL it (the driver only) at a random moment, `cycles` times.

    A fifth of the kills land at a random time in the first seconds (start-up, opening
    the store); the rest once the driver has claimed work, after 0-3 more runs were stored
    and up to 0.3 s more (mid-run, mid-write). Returns counts: cycles, kills
    that landed mid-study (some but not all runs stored) and drivers that finished first.
    """
    rng = random.Random(seed)
    counts = {"cycles": 0, "mid_study": 0, "finished_first": 0}
    for _ in range(cycles):
        before = stored_done(out)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            more, deadline = rng.choice([0, 1, 1, 2, 3]), time.time() + timeout
            while proc.poll() is None and time.time() < deadline and not (
                    claimed(out, proc.pid) and stored_done(out) >= before + more):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        else:
            counts["finished_first"] += 1
        proc.wait()
        kill_session(proc.pid)  # anything the driver left in its session (none expected)
        counts["cycles"] += 1
        counts["mid_study"] += 0 < stored_done(out) < total_runs(out)
    return counts


def count_runs(out: Path, where: str = "1", params=()) -> int:
    """Runs in the store matching a WHERE clause; 0 while it does not exist or is being created."""
    try:
        with sqlite3.connect(out / "actconv.sqlite", timeout=30) as c:
            return c.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", params).fetchone()[0]
    except sqlite3.Error:
        return 0


def claimed(out: Path, pid: int) -> bool:
    """Whether the driver with this pid holds a claim (it got past start-up)."""
    return count_runs(out, "status='running' AND claimed_by LIKE ?", (f"%:{pid}:%",)) > 0


def stored_done(out: Path) -> int:
    return count_runs(out, "status IN ('done', 'diverged')")


def total_runs(out: Path) -> int:
    return count_runs(out)


def assert_same_study(out: Path, clean: Path) -> None:
    """Every run stored exactly once, complete, bitwise equal to an uninterrupted study; file intact."""
    res, ref = load_results(out), load_results(clean)
    assert set(res.runs.status) == {"done"} and len(res.runs) == len(ref.runs)
    assert not res.runs.run_id.duplicated().any()
    assert not res.batches.duplicated(["run_id", "step"]).any()
    assert not res.epochs.duplicated(["run_id", "epoch"]).any()
    a = res.batches.sort_values(["run_id", "step"]).reset_index(drop=True)
    b = ref.batches.sort_values(["run_id", "step"]).reset_index(drop=True)
    assert a[["run_id", "step"]].equals(b[["run_id", "step"]])
    assert np.array_equal(a.loss.to_numpy(), b.loss.to_numpy())
    ea = res.epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    eb = ref.epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    assert ea.equals(eb)
    with sqlite3.connect(out / "actconv.sqlite") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("SELECT COUNT(*) FROM runs WHERE claimed_by IS NOT NULL").fetchone()[0] == 0
