"""Local process-pool backend (`--jobs N > 1`): units on N worker processes forked from one
server that imported the training code once (see worker.py); the driver never imports torch."""
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from ..errors import ActconvError
from . import execution
from .execution import FAULT_ENV, DataArgs, Lost, Options, execute_unit


def probe(data_args: DataArgs, cuda: bool, models=()) -> tuple[int, bool, tuple, int]:
    """execution.probe in a forked worker, so that the driver never loads the data or torch."""
    return _in_worker(execution.probe, data_args, cuda, models)


@contextmanager
def start(options: Options):
    """The pool starts with the first unit (its thread count comes from the runs)."""
    yield lambda feed, data_args: _pool(feed, data_args, options.jobs)


def _in_worker(fn, *args):
    """fn(*args) in a process forked from the pool's server; its ActconvError is raised here."""
    with ProcessPoolExecutor(1, mp_context=_mp_context()) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise ActconvError(f"the worker process running {fn.__name__} died (out of memory?)") from None


def _init_worker(threads: int, driver: int):
    from tqdm import tqdm

    from ..train.seeding import set_threads
    # tqdm's first bar makes a multiprocessing lock, registered with the driver's resource
    # tracker; a worker killed mid-run never unregisters it, and at exit the tracker warns of
    # "leaked semaphore objects". A worker's bars are its own: a thread lock is enough.
    tqdm.set_lock(threading.RLock())
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
    ctx.set_forkserver_preload(["actconv.run.worker"])
    return ctx


def _pool(feed, data_args: DataArgs, jobs: int):
    """Yield (unit, results) from the pool; units lost with a broken pool come as Lost.

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
