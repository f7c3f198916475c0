"""Ray backend (`--executor ray`): work units as Ray tasks on a cluster; results come back to
the driver, which alone writes the store, so the nodes need no shared filesystem."""
import logging
import os
import socket
from contextlib import contextmanager

from ..errors import ConfigError
from .execution import FAULT_ENV, DataArgs, Lost, Options, execute_unit
from .execution import probe  # noqa: F401 -- checks in the driver, which loads the data anyway for ray.put

# Off, Ray advertises the machine's network address even when told 127.0.0.1; a local Ray
# that actconv starts (or one reached on loopback) must stay on loopback.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_DATA = {}  # per worker process: the study's data, fetched from the object store once
_FETCHES = 0  # how many times this worker fetched data (tests check it is once)


@contextmanager
def start(options: Options):
    """Connect first, so that no Ray or no cluster is an error before the store is touched."""
    with session(options.ray_address, options.jobs) as ray:
        yield lambda feed, data_args: run_units(feed, data_args, ray)


@contextmanager
def session(address: str | None = None, jobs: int = 1):
    """Ray, connected: to the cluster at address, or to a local Ray started on loopback with
    `jobs` CPUs and stopped at the end; a session this process already opened is used as it is."""
    ray, borrowed = _connect(address, jobs)
    try:
        yield ray
    finally:
        if not borrowed:
            ray.shutdown()  # ends this driver's job: Ray stops what is left of its tasks


def run_units(feed, data_args: DataArgs, ray):
    """Yield (unit, results | Lost) for the units feed(busy) hands out, run as Ray tasks."""
    data_ref = ray.put(data_args.load())  # once per study; each worker fetches it once
    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    capacity = max(1, int(2 * sum(cpus)))  # enough queued that no CPU idles between tasks
    task = ray.remote(_execute_task)
    pending = {}
    try:
        while True:
            while len(pending) < capacity and (unit := feed(len(pending))) is not None:
                threads = unit[0].threads
                if threads > max(cpus, default=0):
                    raise ConfigError(f"runs ask for {threads} threads, but no Ray node has more than "
                                      f"{max(cpus, default=0):g} CPUs")
                # max_retries=0: the driver counts tries itself, the same for every executor.
                ref = task.options(num_cpus=threads, max_retries=0, **_runtime_env(unit)).remote(
                    unit, [data_ref], os.environ.get(FAULT_ENV, ""))
                pending[ref] = unit
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # a dead worker or node, a task that cannot load
                yield unit, Lost(_one_line(e))
                continue
            yield unit, results
    finally:
        for ref in pending:  # stopped early (an error, Ctrl-C): free the cluster
            ray.cancel(ref, force=True)


def _runtime_env(unit) -> dict:
    """A user's activation module shipped to the workers (Ray's py_modules), which may sit on
    nodes without the driver's files; its source is checked against the run's fingerprint there.

    A task's runtime_env takes only URIs, so the module is uploaded here, as `ray.init` does
    for a job's (the URI is a hash of its content: an edited module is a new package)."""
    from ..study.activations import Definition
    from ..study.user_activations import shipped_path
    paths = sorted({shipped_path(Definition.from_json(s.activation_def)) for s in unit if s.activation_def} - {""})
    if not paths:
        return {}
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    return {"runtime_env": upload_py_modules_if_needed({"py_modules": paths}, include_gitignore=False,
                                                       logger=logging.getLogger("actconv"))}


def _execute_task(unit, data_ref_box, faults: str):
    """A Ray task: one unit, with the data fetched once per worker process."""
    import ray
    ref = data_ref_box[0]  # boxed in a list so Ray hands over the reference, not a copy per task
    global _FETCHES
    if ref.hex() not in _DATA:
        _DATA.clear()
        _DATA[ref.hex()] = ray.get(ref)
        _FETCHES += 1
    return execute_unit(unit, None, data=_DATA[ref.hex()], faults=faults)


def _connect(address: str | None, jobs: int):
    """Import Ray and connect (or start a local Ray); (ray, whether the session was already open)."""
    if address is None or _is_loopback(address):
        os.environ.setdefault(LOOPBACK_ENV, "0")  # read when Ray is imported
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'actconv[ray]'") from None
    if ray.is_initialized():
        return ray, True
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address is None:
        ray.init(address="local", num_cpus=jobs, _node_ip_address="127.0.0.1", **quiet)  # never a running one
        return ray, False
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:  # a GCS address: fail in seconds, not a minute
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as e:
            raise ConfigError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                              f"`ray start --head` or leave out --ray-address for a local one") from None
    _use_token_if_any()
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot connect to Ray at {address}: {_one_line(e)}") from None
    return ray, False


def _use_token_if_any() -> None:
    """Send Ray's saved token when there is one: since Ray 2.5x a local `ray.init()` saves one,
    and a `ray start` afterwards requires it, while a cluster without auth ignores it."""
    try:
        from ray._private.authentication.authentication_token_setup import \
            maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    logging.getLogger("ray").setLevel(logging.ERROR)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]") or address
    return host in ("localhost", "::1") or host.startswith("127.")


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]
