"""Run a study: plan work units, claim them in the store, execute them serially, on a
process pool or on Ray, and store each result as it arrives (the driver alone writes)."""
import contextlib
import ctypes
import json
import multiprocessing
import os
import select
import signal
import sqlite3
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from .config import RunSpec, StudySpec
from .errors import ActconvError, ConfigError, DataError, StoreError
from .store import FINISHED, LEASE_S, RunResult, Store, owner_id

# torch, the data and the training loop are imported where a unit is trained, never at the
# top: a driver that hands its units to workers holds none of them (~400 MB a process).

EXECUTORS = ["local", "ray"]
FAULT_ENV = "ACTCONV_FAULT"  # test-only fault injection: see _inject_fault
POLL_S = 0.5  # how often a driver waiting on another driver's runs looks again


@dataclass(frozen=True)
class DataArgs:
    """How a worker loads the study's data (once per process)."""
    dataset: str
    data_dir: str | None = None
    download: bool = False
    normalize: str = "none"

    def load(self):
        from . import data as datasets
        return datasets.load(self.dataset, self.data_dir, self.download, self.normalize)


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


def plan_units(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Group runs into work units: ensemble runs that differ only in seed go together."""
    units, groups = [], {}
    for s in specs:
        if s.engine == "ensemble":
            key = json.dumps({k: v for k, v in asdict(s).items() if k != "seed"}, sort_keys=True)
            if key not in groups:
                groups[key] = []
                units.append(groups[key])
            groups[key].append(s)
        else:
            units.append([s])
    return units


def execute_unit(unit: list[RunSpec], data_args: DataArgs | None, progress: bool = False,
                 data=None, faults: str | None = None) -> list[RunResult]:
    """Train one work unit; a run that raises comes back as 'failed' with its error.

    faults: the driver's ACTCONV_FAULT (test-only), passed along because a worker's own
    environment is the one its pool or Ray started it with.
    """
    from .seeding import set_threads
    faults = os.environ.get(FAULT_ENV, "") if faults is None else faults
    set_threads(unit[0].threads)
    data = data if data is not None else data_args.load()
    try:
        return _train_unit(unit, data, progress, faults)
    finally:
        _trim_heap()


def _train_unit(unit: list[RunSpec], data, progress: bool, faults: str) -> list[RunResult]:
    from .train import train_run
    if unit[0].engine == "ensemble":
        from .ensemble import train_ensemble
        try:
            for spec in unit:
                _inject_fault(spec, faults)
            return train_ensemble(unit, data)
        except Exception as e:  # noqa: BLE001 -- one unit's failure must not end the study
            return [_failed(s, e) for s in unit]
    results = []
    for spec in unit:
        try:
            _inject_fault(spec, faults)
            results.append(train_run(spec, data, progress=progress))
        except Exception as e:  # noqa: BLE001 -- recorded as the run's error, the study goes on
            results.append(_failed(spec, e))
    return results


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system after a unit: a long-lived worker
    otherwise keeps the high-water mark of its largest run (~80 MB after a TinyVGG)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _inject_fault(spec: RunSpec, faults: str) -> None:
    """Test-only: ACTCONV_FAULT="raise:RUN_ID,kill:RUN_ID,kill-once:RUN_ID:MARKER" fails these runs.

    raise: the run raises; kill: its process gets SIGKILL; a "-once" kind acts only while the
    marker file does not exist yet (it creates it), so the retry succeeds.
    """
    for item in filter(None, faults.split(",")):
        kind, _, rest = item.partition(":")
        target, _, marker = rest.partition(":")
        if target != spec.run_id:
            continue
        if kind.endswith("-once"):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            kind = kind[:-len("-once")]
        if kind == "raise":
            raise RuntimeError(f"fault injected by {FAULT_ENV}")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


def _failed(spec: RunSpec, e: BaseException) -> RunResult:
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return RunResult(spec, "failed", error=f"{type(e).__name__}: {e}{at}")


@dataclass(frozen=True)
class Lost:
    """A unit whose worker died before it returned.

    alone: it was the only unit on the workers that died, so it is the one to blame.
    """
    error: str
    alone: bool = True


def run_study(study: StudySpec, out_dir, *, jobs: int = 1, executor: str = "local",
              data_dir=None, download: bool = False, progress: bool = True,
              retries: int = 2, ray_address: str | None = None,
              lease_s: float = LEASE_S) -> StudyOutcome:
    """Run every unfinished run of a study and store each result as it arrives.

    Several drivers may run the same study on one store at once: each claims a unit before
    it starts it, so no run is executed twice at the same time.

    Args:
        study: the study to run.
        out_dir: output directory holding the store (created if missing).
        jobs: worker processes for the local executor (Ray: CPUs of a local Ray it starts).
        executor: "local" or "ray".
        retries: how many times a run that failed or lost its worker is tried again.
        ray_address: an existing Ray cluster (default: start a local one).
        lease_s: how long a claim outlives a silent driver on another host.
    Returns:
        A StudyOutcome with counts by status.
    """
    start = time.perf_counter()
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    if jobs <= 0:
        raise ConfigError(f"jobs must be positive, got {jobs}")
    if retries < 0:
        raise ConfigError(f"retries must be zero or more, got {retries}")
    specs = study.runs()
    if not specs:
        raise ConfigError("the study has no runs")
    data_args = DataArgs(study.dataset, str(data_dir) if data_dir else None, download, study.normalize)
    cuda = any(s.device == "cuda" for s in specs)
    # Everything is validated before the store is touched; with a pool, by a worker, so the
    # driver never imports torch.
    models = tuple({s.model: (s.model, s.model_spec, s.activation, s.engine) for s in specs}.values())
    pool_size, has_cuda, input_shape, n_classes = (
        _in_worker(_probe, data_args, cuda, models) if executor == "local" and jobs > 1
        else _probe(data_args, cuda, models))
    too_big = sorted({s.n_train for s in specs if s.n_train > pool_size})
    if too_big:
        raise DataError(f"n_train {too_big[0]} exceeds the {study.dataset} training pool of "
                        f"{pool_size} images")
    if cuda and not has_cuda:
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if executor == "ray":
        from . import ray_executor  # connects first: no Ray or no cluster is an error before the store
        ray_session = ray_executor.session(ray_address, jobs)
    else:
        ray_session = contextlib.nullcontext()
    with ray_session as ray, Store(out_dir) as store:
        store.register(study.name, json.dumps(asdict(study), default=str), specs, input_shape, n_classes)
        statuses = store.statuses()
        todo = [s for s in specs if statuses.get(s.run_id) not in FINISHED]
        outcome = StudyOutcome(str(out_dir), len(specs), len(specs) - len(todo), 0)
        owner = owner_id()
        work = _WorkQueue(store, plan_units(todo), owner, retries, lease_s)
        bar = tqdm(total=len(todo), desc=f"{study.name} runs", unit="run", disable=not progress,
                   smoothing=0.05)
        try:
            with _Heartbeat(out_dir, owner, lease_s):
                if executor == "ray":
                    results_iter = ray_executor.run_units(work.feed, data_args, ray)
                elif jobs == 1:
                    results_iter = _serial(work.feed, data_args, progress)
                else:
                    results_iter = _pool(work.feed, data_args, jobs)
                for unit, results in results_iter:
                    for r in work.settle(unit, results):
                        store.write(r)
                        outcome.executed += 1
                        bar.update(1)
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


def _probe(data_args: DataArgs, cuda: bool, models=()) -> tuple[int, bool, tuple, int]:
    """The data loads (its pool size, input shape and class count), every model takes it
    (models: (name, ModelSpec, an activation, engine)) and, if asked, torch sees a CUDA device."""
    from .models import check_fits
    data = data_args.load()
    for name, spec, activation, engine in models:
        check_fits(name, spec, activation, engine, data_args.dataset, data.input_shape, data.n_classes)
    if not cuda:
        return data.pool_size, False, data.input_shape, data.n_classes
    import torch
    return data.pool_size, torch.cuda.is_available(), data.input_shape, data.n_classes


def _in_worker(fn, *args):
    """fn(*args) in a process forked from the pool's server; its ActconvError is raised here."""
    with ProcessPoolExecutor(1, mp_context=_mp_context()) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise ActconvError(f"the worker process running {fn.__name__} died (out of memory?)") from None


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


def _serial(feed, data_args: DataArgs, progress: bool):
    """Yield (unit, results), training each unit in this process."""
    while (unit := feed(0)) is not None:
        yield unit, execute_unit(unit, data_args, progress)


def _init_worker(threads: int, driver: int):
    from .seeding import set_threads
    threading.Thread(target=_exit_when_gone, args=(driver,), name="actconv-driver-watch", daemon=True).start()
    set_threads(threads)


def _exit_when_gone(pid: int) -> None:
    """A pool worker ends itself when its driver dies, instead of running on orphaned."""
    try:
        fd = os.pidfd_open(pid)  # Linux: readable once the process has ended
        select.select([fd], [], [])
    except (AttributeError, OSError):
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
    os._exit(1)


def _mp_context():
    """Workers forked from a server that imported actconv but never computed: a fresh pool
    starts in a fraction of a second (spawn would import torch again), and a fork after
    torch's thread pool started, which can hang, never happens. Spawn where there is no forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["actconv.worker"])
    return ctx


def _pool(feed, data_args: DataArgs, jobs: int):
    """Yield (unit, results) from a spawn-started pool; units lost with a broken pool come as Lost.

    A worker that dies breaks the whole pool: the units that were still running come back
    as Lost (alone when there was only one), and a fresh pool takes the rest.
    """
    pool, pending, ctx = None, {}, _mp_context()
    try:
        while True:
            while len(pending) < jobs and (unit := feed(len(pending))) is not None:
                if pool is None:
                    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                               initargs=(unit[0].threads, os.getpid()))
                pending[pool.submit(execute_unit, unit, data_args, faults=os.environ.get(FAULT_ENV, ""))] = unit
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                wait(pending)  # a broken pool fails every future it holds
                done = list(pending)
            finished = {f: pending.pop(f) for f in done}
            broken = [f for f in finished if isinstance(f.exception(), BrokenProcessPool)]
            for fut, unit in finished.items():
                if fut in broken:
                    yield unit, Lost("its worker process died (killed by a signal or out of memory)",
                                     alone=len(broken) == 1)
                elif fut.exception() is not None:
                    e = fut.exception()
                    yield unit, Lost(f"{type(e).__name__}: {e}")
                else:
                    yield unit, fut.result()
            if broken:
                pool.shutdown(wait=True)
                pool = None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
