"""Run a study: plan work units, claim them in the store, hand them to a backend from
BACKENDS (serial, process pool, Ray), retry what failed, and store each result as it
arrives (the driver alone writes)."""
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, StoreError
from ..study import zoo
from ..study.config import RunSpec, StudySpec
from . import pool, ray_tasks, serial
from .execution import DataArgs, Lost, Options
from .store import FINISHED, LEASE_S, RunResult, Store, owner_id

# A backend is a module with two functions, so that a new one is one module and one line here:
#   probe(data_args, cuda) -> (training pool size, torch sees CUDA): the checks made before
#       the store is touched, run where that backend wants them (a pool driver never imports torch);
#   start(options) -> a context manager (entered before the store is touched, so that a
#       cluster that cannot be reached is an error first) yielding run(feed, data_args): an
#       iterator of (unit, list[RunResult] | Lost) over the units feed(busy) hands out.
# `--executor local` is the serial backend with one job and the pool with more.
BACKENDS = {"local": pool, "ray": ray_tasks, "serial": serial}
POLL_S = 0.5  # how often a driver waiting on another driver's runs looks again


@dataclass
class StudyOutcome:
    """What one `run_study` call did."""
    out_dir: str
    total: int
    skipped: int
    executed: int
    counts: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)  # (run_id, error)
    wall_s: float = 0.0


# What ensemble runs of one unit may differ in (train/ensemble.py FREE): seeds, perturbed
# siblings beside their originals, and the elementwise optimizer settings, so that a cell's
# search trials and their seeds train as one unit.
UNIT_FREE = ("seed", "perturb", "replica", "lr", "momentum", "weight_decay")


def plan_units(specs: list[RunSpec], jobs: int = 1) -> list[list[RunSpec]]:
    """Group runs into work units: ensemble runs that differ only in UNIT_FREE go together,
    the largest unit halved while there are fewer units than `jobs` (an idle core costs more
    than a smaller stack, and a member's numbers do not depend on its unit-mates)."""
    units, groups = [], {}
    for s in specs:
        if s.engine == "ensemble":
            key = json.dumps({k: v for k, v in asdict(s).items() if k not in UNIT_FREE}, sort_keys=True)
            if key not in groups:
                groups[key] = []
                units.append(groups[key])
            groups[key].append(s)
        else:
            units.append([s])
    while len(units) < jobs and max(map(len, units), default=1) > 1:
        i = max(range(len(units)), key=lambda j: len(units[j]))
        half = len(units[i]) // 2
        units[i:i + 1] = [units[i][:half], units[i][half:]]
    return units


def resolve_jobs(jobs) -> int:
    """A positive process count; "auto" is the cores this process may use (its affinity, not the machine's)."""
    if jobs == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs <= 0:
        raise ConfigError(f"jobs must be a positive number or 'auto', got {jobs!r}")
    return jobs


def run_study(study: StudySpec, out_dir, *, jobs: int | str = 1, executor: str = "local",
              data_dir=None, download: bool = False, progress: bool = True,
              retries: int = 2, ray_address: str | None = None,
              lease_s: float = LEASE_S) -> StudyOutcome:
    """Run every unfinished run of a study and store each result as it arrives.

    Several drivers may run the same study on one store at once: each claims a unit before
    it starts it, so no run is executed twice at the same time.

    Args:
        study: the study to run.
        out_dir: output directory holding the store (created if missing).
        jobs: worker processes for the local executor (Ray: CPUs of a local Ray it starts), or
            "auto" for every core this process may use; 1 (the default) trains in this process.
        executor: a name in BACKENDS: "local" (one job: in this process) or "ray".
        retries: how many times a run that failed or lost its worker is tried again.
        ray_address: an existing Ray cluster (default: start a local one).
        lease_s: how long a claim outlives a silent driver on another host.
    Returns:
        A StudyOutcome with counts by status.
    """
    start = time.perf_counter()
    if executor not in BACKENDS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(BACKENDS)}")
    jobs = resolve_jobs(jobs)
    if retries < 0:
        raise ConfigError(f"retries must be zero or more, got {retries}")
    specs = study.runs()
    if not specs:
        raise ConfigError("the study has no runs")
    data_args = DataArgs(study.dataset, str(data_dir) if data_dir else None, download, study.normalize)
    cuda = any(s.device == "cuda" for s in specs)
    backend = BACKENDS["serial" if executor == "local" and jobs == 1 else executor]
    # Everything is validated before the store is touched (with a pool, by a worker, so the
    # driver never imports torch).
    # One activation per model, but every one for a zoo network: whether it builds may depend on
    # the activation (a torchvision network that reuses a module refuses a parametric one).
    models = tuple({(s.model, s.activation if zoo.is_zoo(s.model_spec.kind) else ""):
                    (s.model, s.model_spec, s.activation, s.engine, s.activation_def) for s in specs}.values())
    pool_size, has_cuda, input_shape, n_classes = backend.probe(data_args, cuda, models)
    too_big = sorted({s.n_train for s in specs if s.n_train > pool_size})
    if too_big:
        raise DataError(f"n_train {too_big[0]} exceeds the {study.dataset} training pool of "
                        f"{pool_size} images")
    too_big = sorted({(s.validation + s.n_train, s.validation, s.n_train) for s in specs
                      if s.validation + s.n_train > pool_size})
    if too_big:
        _, v, n = too_big[-1]
        raise DataError(f"validation {v} + n_train {n} exceeds the {study.dataset} training pool of "
                        f"{pool_size} images")
    if cuda and not has_cuda:
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    with backend.start(Options(jobs, progress, ray_address)) as run, Store(out_dir) as store:
        store.register(study.name, json.dumps(asdict(study), default=str), specs, input_shape, n_classes)
        statuses = store.statuses()
        todo = [s for s in specs if statuses.get(s.run_id) not in FINISHED]
        outcome = StudyOutcome(str(out_dir), len(specs), len(specs) - len(todo), 0)
        owner = owner_id()
        work = _WorkQueue(store, plan_units(todo, jobs), owner, retries, lease_s)
        bar = tqdm(total=len(todo), desc=f"{study.name} runs", unit="run", disable=not progress,
                   smoothing=0.05)
        try:
            with _Heartbeat(out_dir, owner, lease_s):
                for unit, results in run(work.feed, data_args):
                    # A unit's runs (an ensemble's seeds) in one transaction: each run is
                    # still whole or absent, and a driver killed here redoes the unit.
                    settled = work.settle(unit, results)
                    store.write_many(settled)
                    outcome.executed += len(settled)
                    bar.update(len(settled))
        except sqlite3.Error as e:  # a full disk, a store broken underneath us
            raise StoreError(f"cannot write {store.path}: {e}; the runs stored before are safe") from None
        finally:
            bar.close()
            with contextlib.suppress(sqlite3.Error):
                store.release(owner)  # an interrupted driver leaves its unfinished runs to the next
        outcome.counts = store.summary()
        outcome.failed = store.conn.execute(
            "SELECT run_id, error FROM runs WHERE status='failed'").fetchall()
    outcome.wall_s = time.perf_counter() - start
    return outcome


class _WorkQueue:
    """The driver's queue of units: claimed in the store as workers ask, retried a bounded number of times."""

    def __init__(self, store: Store, units: list[list[RunSpec]], owner: str, retries: int, lease_s: float):
        self.store, self.owner, self.retries, self.lease_s = store, owner, retries, lease_s
        self.queue = deque(units)
        self.waiting = []       # runs another live driver holds: looked at again later
        self.failures = {}      # run_id -> failed tries in this call
        self.suspects = set()   # run_ids in flight when a pool broke: each runs alone next
        self.solo = None        # the suspect unit in flight: nothing starts beside it

    def feed(self, busy: int) -> list[RunSpec] | None:
        """The next unit to start, claimed for this driver; None when nothing should start now."""
        while self.solo is None:
            if not self.queue and self.waiting:
                self._look_again(wait=busy == 0)
            if not self.queue:
                return None
            suspect = any(s.run_id in self.suspects for s in self.queue[0])
            if suspect and busy:
                return None  # let the others finish, then run it alone
            unit = self.queue.popleft()
            claimed = set(self.store.claim([s.run_id for s in unit], self.owner, self.lease_s))
            if len(claimed) < len(unit):
                self.waiting.append([s for s in unit if s.run_id not in claimed])
            unit = [s for s in unit if s.run_id in claimed]
            if unit:
                self.solo = unit if suspect else None
                return unit
        return None

    def _look_again(self, wait: bool) -> None:
        """Queue the waiting runs that came free; drop those another driver settled."""
        while self.waiting:
            statuses = self.store.statuses()
            units = [[s for s in u if statuses.get(s.run_id) not in (*FINISHED, "failed")] for u in self.waiting]
            units = [u for u in units if u]
            held = set(self.store.held_by_others([s.run_id for u in units for s in u], self.owner))
            self.waiting = [u for u in units if any(s.run_id in held for s in u)]
            self.queue.extend(u for u in units if not any(s.run_id in held for s in u))
            if self.queue or not wait or not self.waiting:
                return
            time.sleep(POLL_S)

    def settle(self, unit: list[RunSpec], results) -> list[RunResult]:
        """The results of a unit that came back that should be stored now; requeues the rest."""
        if self.solo is unit:
            self.solo = None
        if isinstance(results, Lost):
            if not results.alone:  # one of several units killed the pool: find out which, alone
                self.suspects.update(s.run_id for s in unit)
                self.queue.appendleft(unit)
                return []
            results = [RunResult(s, "failed", error=results.error) for s in unit]
        retry = []
        for r in results:
            if r.status == "failed":
                self.failures[r.run_id] = self.failures.get(r.run_id, 0) + 1
                if self.failures[r.run_id] <= self.retries:
                    retry.append(r.spec)
        # Each run is tried again alone: an ensemble member's numbers do not depend on its
        # unit-mates (tested bitwise), so one bad seed, or a unit too big for memory, no
        # longer takes the other seeds down with it.
        self.queue.extend([s] for s in retry)
        again = {s.run_id for s in retry}
        return [r for r in results if r.run_id not in again]


class _Heartbeat:
    """Renews this driver's leases from a thread of its own while the study runs."""

    def __init__(self, out_dir, owner: str, lease_s: float):
        self.out_dir, self.owner, self.lease_s = out_dir, owner, lease_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="actconv-lease", daemon=True)

    def _run(self):
        with Store(self.out_dir, create=False) as store:
            while not self.stop.wait(self.lease_s / 4):
                try:
                    store.renew(self.owner, self.lease_s)
                except Exception:  # noqa: BLE001 -- a busy store: the next beat tries again
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
