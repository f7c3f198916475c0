"""Run a study: plan work units, execute them serially or on a process pool, store each result."""
import json
import multiprocessing
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from . import data as datasets
from .config import RunSpec, StudySpec
from .errors import ConfigError, DataError
from .seeding import set_threads
from .store import FINISHED, Store
from .train import RunResult, train_run

EXECUTORS = ["local", "ray"]


@dataclass(frozen=True)
class DataArgs:
    """How a worker loads the study's data (once per process)."""
    dataset: str
    data_dir: str | None = None
    download: bool = False
    normalize: str = "none"

    def load(self) -> datasets.Data:
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


def execute_unit(unit: list[RunSpec], data_args: DataArgs, progress: bool = False) -> list[RunResult]:
    """Train one work unit; a run that raises comes back as 'failed' with its error."""
    set_threads(unit[0].threads)
    data = data_args.load()
    if unit[0].engine == "ensemble":
        from .ensemble import train_ensemble
        try:
            return train_ensemble(unit, data)
        except Exception as e:  # noqa: BLE001 -- one unit's failure must not end the study
            return [_failed(s, e) for s in unit]
    results = []
    for spec in unit:
        try:
            results.append(train_run(spec, data, progress=progress))
        except Exception as e:  # noqa: BLE001 -- recorded as the run's error, the study goes on
            results.append(_failed(spec, e))
    return results


def _failed(spec: RunSpec, e: BaseException) -> RunResult:
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return RunResult(spec, "failed", error=f"{type(e).__name__}: {e}{at}")


def _init_worker(threads: int):
    set_threads(threads)


def run_study(study: StudySpec, out_dir, *, jobs: int = 1, executor: str = "local",
              data_dir=None, download: bool = False, progress: bool = True,
              retries: int = 2, ray_address: str | None = None) -> StudyOutcome:
    """Run every unfinished run of a study and store each result as it arrives.

    Args:
        study: the study to run.
        out_dir: output directory holding the store (created if missing).
        jobs: worker processes for the local executor.
        executor: "local" or "ray".
        retries: how many times a failed or lost run is tried again in this call.
    Returns:
        A StudyOutcome with counts by status.
    """
    start = time.perf_counter()
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from: {', '.join(EXECUTORS)}")
    if jobs <= 0:
        raise ConfigError(f"jobs must be positive, got {jobs}")
    specs = study.runs()
    if not specs:
        raise ConfigError("the study has no runs")
    data_args = DataArgs(study.dataset, str(data_dir) if data_dir else None, download, study.normalize)
    data = data_args.load()  # validate everything before the store is touched
    too_big = sorted({s.n_train for s in specs if s.n_train > data.pool_size})
    if too_big:
        raise DataError(f"n_train {too_big[0]} exceeds the {study.dataset} training pool of "
                        f"{data.pool_size} images")
    if any(s.device == "cuda" for s in specs):
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    with Store(out_dir) as store:
        store.register(study.name, json.dumps(asdict(study), default=str), specs)
        statuses = store.statuses()
        todo = [s for s in specs if statuses.get(s.run_id) not in FINISHED]
        outcome = StudyOutcome(str(out_dir), len(specs), len(specs) - len(todo), 0)
        units = plan_units(todo)
        bar = tqdm(total=len(todo), desc=f"{study.name} runs", unit="run", disable=not progress,
                   smoothing=0.05)
        for _ in range(retries + 1):
            if not units:
                break
            if executor == "ray":
                from .ray_executor import run_units
                results_iter = run_units(units, data_args, ray_address)
            elif jobs == 1:
                results_iter = ((u, execute_unit(u, data_args, progress)) for u in units)
            else:
                results_iter = _pool(units, data_args, jobs)
            retry = []
            for unit, results in results_iter:
                for r in results if results is not None else []:
                    store.write(r)
                    outcome.executed += 1
                    bar.update(1)
                if results is None or any(r.status == "failed" for r in results):
                    retry.append(unit)
            units = [[s for s in u if store.statuses([s.run_id])[s.run_id] not in FINISHED] for u in retry]
            units = [u for u in units if u]
        for unit in units:  # still unfinished after every retry: lost with its worker
            for s in unit:
                if store.statuses([s.run_id])[s.run_id] not in (*FINISHED, "failed"):
                    store.write(RunResult(s, "failed", error="worker process died while running it"))
        bar.close()
        outcome.counts = store.summary()
        outcome.failed = store.conn.execute(
            "SELECT run_id, error FROM runs WHERE status='failed'").fetchall()
    outcome.wall_s = time.perf_counter() - start
    return outcome


def _pool(units, data_args, jobs):
    """Yield (unit, results) from a spawn-started pool; a lost worker yields (unit, None)."""
    ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pool started can hang
    threads = units[0][0].threads
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(execute_unit, u, data_args): u for u in units}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                unit = pending.pop(fut)
                try:
                    yield unit, fut.result()
                except BrokenProcessPool:
                    yield unit, None
