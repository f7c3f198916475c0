"""The results store: one SQLite file per output directory, one transaction per run."""
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, StoreError
from ..study.config import RunSpec
from ..train.result import RunResult

if TYPE_CHECKING:  # pandas only where tables are read: a driver that writes runs never needs it
    import pandas as pd

SCHEMA_VERSION = 1
STORE_NAME = "actconv.sqlite"
FINISHED = ("done", "diverged")
# A claim on a run lives this long unless its driver renews it; a driver on another host
# that dies leaves its runs to others after this. (One on this host is seen dead at once.)
LEASE_S = 60.0
CACHE_KB = 64 * 1024
KEY_COLUMNS = ["run_id", "model", "activation", "seed", "n_train"]
TABLES = ("runs", "epochs", "batches", "diagnostics")
ORDER = {"runs": "rowid", "epochs": "run_id, epoch", "batches": "run_id, step",
         "diagnostics": "run_id, epoch, step"}  # the order every reader gets, whatever the writes' order

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT NOT NULL, spec_json TEXT NOT NULL, registered_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, study TEXT, status TEXT NOT NULL DEFAULT 'pending',
    model TEXT NOT NULL, model_kind TEXT NOT NULL, activate_logits INTEGER, hidden_units INTEGER,
    hidden_layers INTEGER, batchnorm INTEGER, init TEXT, activation TEXT NOT NULL,
    seed INTEGER NOT NULL, n_train INTEGER NOT NULL, dataset TEXT, normalize TEXT,
    stratify INTEGER, epochs INTEGER, batch_size INTEGER, optimizer TEXT, lr REAL,
    momentum REAL, weight_decay REAL, engine TEXT, diverged_step INTEGER, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, wall_s REAL, started_at REAL, finished_at REAL,
    torch_version TEXT, device TEXT, threads INTEGER, dtype TEXT, config_json TEXT NOT NULL,
    claimed_by TEXT, lease_until REAL, input_shape TEXT, n_classes INTEGER);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL, model TEXT, activation TEXT, seed INTEGER, n_train INTEGER,
    epoch INTEGER NOT NULL, train_loss REAL, train_accuracy REAL, test_loss REAL,
    test_accuracy REAL, PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL, model TEXT, activation TEXT, seed INTEGER, n_train INTEGER,
    epoch INTEGER NOT NULL, step INTEGER NOT NULL, loss REAL, accuracy REAL,
    PRIMARY KEY (run_id, step));
CREATE TABLE IF NOT EXISTS diagnostics (
    run_id TEXT NOT NULL, epoch INTEGER, step INTEGER, layer TEXT, metric TEXT, value REAL);
CREATE INDEX IF NOT EXISTS diagnostics_run ON diagnostics (run_id);
"""
# What the worker reports of the model it built (models.facts), written with the run's result;
# NULL in rows of stores from before (and for runs not trained yet).
MODEL_FACTS = {"parameters": "INTEGER", "activation_modules": "INTEGER", "replaced_activations": "TEXT"}
# Columns added after stores existed, with their value in earlier rows (None: NULL): a writer
# adds the missing ones on open and a reader of an unchanged store sees that value, so stores
# of an earlier actconv keep opening, reporting and resuming under the same schema version.
ADDED_COLUMNS = {"epochs": {"val_loss": ("REAL", None), "val_accuracy": ("REAL", None)},
                 "runs": {"validation": ("INTEGER", 0), **{c: (kind, None) for c, kind in MODEL_FACTS.items()}}}
EPOCH_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "val_loss", "val_accuracy"]


# The dataset columns of `runs` (C x H x W as text, and the class count), added after the first
# stores: those held only MNIST-shaped runs, so their rows read as what these defaults say.
DATA_COLUMNS = {"input_shape": ("TEXT", "1x28x28"), "n_classes": ("INTEGER", 10)}


def n_classes_of(runs: "pd.DataFrame") -> int:
    """The class count of these runs (`runs` table; the most common where datasets differ;
    10 for stores written before the count was stored)."""
    if "n_classes" not in runs or runs["n_classes"].isna().all():
        return DATA_COLUMNS["n_classes"][1]
    return int(runs["n_classes"].dropna().astype(int).mode().iloc[0])


def chance_accuracy(n_classes: int) -> float:
    """The test accuracy of guessing: one class in n_classes."""
    return 1.0 / n_classes


@dataclass
class Results:
    """The long tables of one output directory: every one a DataFrame (`load_results`), or
    batches and diagnostics left in the store as `rows.StoredRows` (`stored_results`)."""
    runs: "pd.DataFrame"
    epochs: "pd.DataFrame"
    batches: "pd.DataFrame"
    diagnostics: "pd.DataFrame"
    source: Path | None = None       # the output directory, where `skipped` rows were left
    skipped: tuple[str, ...] = ()    # prefixes of the diagnostics metrics not read (select reads them)


def store_path(out_dir) -> Path:
    return Path(out_dir) / STORE_NAME


class Store:
    """An open results store; every write is one transaction."""

    def __init__(self, out_dir, create: bool = True):
        self.path = store_path(out_dir)
        if not create and not self.path.exists():
            raise StoreError(f"no actconv results in {out_dir} (expected {self.path})")
        try:
            if create:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
            if create and not os.access(out_dir, os.W_OK):
                raise StoreError(f"output directory {out_dir} is not writable")
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            self._wal()
            self.conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives a killed process
            # A 64 MB page cache (the default is 2 MB) keeps a large store's index pages in
            # memory: commits into a 2,000-run store went from 97 to 124 runs/s (medians of
            # 3 alternating rounds, benchmarks/commit_throughput.py, on the busy 2-core machine).
            self.conn.execute(f"PRAGMA cache_size = {-CACHE_KB}")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open a store in {out_dir}: {e}") from None
        self._check_schema(create)

    def _wal(self, timeout: float = 60.0) -> None:
        """Switch to WAL (readers never block the writer). The switch needs the file to
        itself and SQLite reports 'locked' at once, without waiting, when another driver is
        opening the same new store: so wait here."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _check_schema(self, create: bool):
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                found = int(row[0]) if row else None
                if found != SCHEMA_VERSION:
                    raise StoreError(f"{self.path} was written with store schema {found}; this actconv "
                                     f"reads schema {SCHEMA_VERSION}: use a new --out directory")
            elif tables:
                raise StoreError(f"{self.path} is not an actconv store (no schema version)")
            elif create:
                with self.transaction():
                    self._create_tables()
                    self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                      (str(SCHEMA_VERSION),))
            if create:
                self._add_columns()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a readable SQLite store: {e}") from None

    def _create_tables(self):
        # executescript would commit the open transaction, so run the statements one by one.
        for statement in filter(str.strip, SCHEMA.split(";")):
            self.conn.execute(statement)

    def _add_columns(self):
        with self.transaction():  # checked inside: another driver may be adding them at this moment
            for table, columns in ADDED_COLUMNS.items():
                have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                for name, (kind, earlier) in columns.items():
                    if name not in have:
                        default = "" if earlier is None else f" DEFAULT {earlier!r}"
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}{default}")

    def transaction(self):
        return _Transaction(self.conn)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- runs ---------------------------------------------------------------------------
    def register(self, study_name: str, study_json: str, specs: list[RunSpec],
                 input_shape=None, n_classes: int | None = None) -> None:
        """Record the study and every run as pending; runs already known keep their state.

        input_shape, n_classes: the dataset's, stored with each run for the analysis.
        """
        data = {"input_shape": "x".join(map(str, input_shape)) if input_shape else None,
                "n_classes": n_classes}
        rows = [{**_run_row(study_name, s), **data} for s in specs]
        cols = list(rows[0]) if rows else []
        self._add_data_columns()
        with self.transaction():
            self.conn.execute("INSERT INTO studies VALUES (?, ?, ?)", (study_name, study_json, time.time()))
            if rows:
                self.conn.executemany(
                    f"INSERT OR IGNORE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [tuple(r.values()) for r in rows])

    def _add_data_columns(self) -> None:
        """A store from before the dataset columns gets them, its rows reading as MNIST's."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
        with self.transaction():
            for name, (kind, default) in DATA_COLUMNS.items():
                if name not in have:
                    self.conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind} DEFAULT {default!r}")

    def statuses(self, run_ids=None) -> dict[str, str]:
        """run_id -> status."""
        rows = self.conn.execute("SELECT run_id, status FROM runs").fetchall()
        out = dict(rows)
        return out if run_ids is None else {r: out.get(r, "unknown") for r in run_ids}

    def write(self, result: RunResult) -> None:
        """Store one run's rows and its final status atomically (replacing any earlier try)."""
        self.write_many([result])

    def write_many(self, results: list[RunResult]) -> None:
        """Store several runs in one transaction (each whole or not at all, as `write`): one
        commit, one fsync of the log, for many runs, so that one driver keeps up with many workers."""
        with self.transaction():
            for result in results:
                self._write_rows(result)

    def _write_rows(self, result: RunResult) -> None:
        """One run's rows and status, inside the caller's transaction."""
        s, rid = result.spec, result.run_id
        key = (rid, s.model, s.activation, s.seed, s.n_train)
        b = result.batches
        # Whole columns converted at once (tolist gives Python ints and floats, the values
        # int() and float() would give one by one, several times faster).
        columns = [np.asarray(b.get(c, []), dtype).tolist()
                   for c, dtype in (("epoch", np.int64), ("step", np.int64), ("loss", np.float64),
                                    ("accuracy", np.float64))]
        batch_rows = [key + row for row in zip(*columns)]
        epoch_rows = [key + tuple(e.get(c) for c in EPOCH_COLUMNS) for e in result.epochs]
        env = result.env or {}
        current = self.conn.execute("SELECT status FROM runs WHERE run_id=?", (rid,)).fetchone()
        if result.status == "failed" and current and current[0] in FINISHED:
            return  # another driver finished it meanwhile: its result stands
        if current and current[0] in (*FINISHED, "failed"):  # only a stored try has rows to replace
            for table in ("epochs", "batches", "diagnostics"):
                self.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (rid,))
        self.conn.executemany(f"INSERT INTO epochs ({', '.join(KEY_COLUMNS + EPOCH_COLUMNS)}) "
                              f"VALUES ({', '.join('?' * (len(KEY_COLUMNS) + len(EPOCH_COLUMNS)))})",
                              epoch_rows)
        self.conn.executemany("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?)", batch_rows)
        self.conn.executemany("INSERT INTO diagnostics VALUES (?,?,?,?,?,?)",
                              [(rid,) + tuple(d) for d in result.diagnostics])
        self.conn.execute("INSERT OR IGNORE INTO runs (run_id, model, model_kind, activation, seed, "
                          "n_train, config_json) VALUES (?,?,?,?,?,?,?)",
                          (rid, s.model, s.model_spec.kind, s.activation, s.seed, s.n_train, s.to_json()))
        self.conn.execute(
            "UPDATE runs SET status=?, diverged_step=?, error=?, wall_s=?, finished_at=?, "
            "attempts=MAX(attempts, 1), torch_version=?, device=?, threads=?, dtype=?, claimed_by=NULL, "
            f"lease_until=NULL, {', '.join(f'{c}=?' for c in MODEL_FACTS)} WHERE run_id=?",
            (result.status, result.diverged_step, result.error, result.wall_s, time.time(),
             env.get("torch_version"), env.get("device"), env.get("threads"), env.get("dtype"),
             *(env.get(c) for c in MODEL_FACTS), rid))

    # -- claims: drivers sharing one store never run a run twice at once ----------------
    def claim(self, run_ids, owner: str, lease_s: float = LEASE_S) -> list[str]:
        """Claim the unfinished runs among run_ids that no live driver holds; returns those claimed.

        A claim sets status 'running', the owner and a lease, and counts an attempt.
        """
        now, ids = time.time(), list(run_ids)
        with self.transaction():
            rows = self.conn.execute(
                f"SELECT run_id, status, claimed_by, lease_until FROM runs WHERE run_id IN "
                f"({', '.join('?' * len(ids))})", ids).fetchall()
            free = [rid for rid, status, by, until in rows if status not in FINISHED and (
                status != "running" or by is None or by == owner or (until or 0) < now
                or not owner_alive(by))]
            self.conn.executemany(
                "UPDATE runs SET status='running', claimed_by=?, lease_until=?, started_at=?, "
                "attempts=attempts+1 WHERE run_id=?", [(owner, now + lease_s, now, r) for r in free])
        free = set(free)
        return [r for r in dict.fromkeys(ids) if r in free]

    def held_by_others(self, run_ids, owner: str) -> list[str]:
        """The runs among run_ids that another live driver is running now."""
        now, ids = time.time(), list(run_ids)
        rows = self.conn.execute(
            f"SELECT run_id, claimed_by, lease_until FROM runs WHERE status='running' AND run_id IN "
            f"({', '.join('?' * len(ids))})", ids).fetchall()
        held = {rid for rid, by, until in rows
                if by is not None and by != owner and (until or 0) >= now and owner_alive(by)}
        return [r for r in dict.fromkeys(ids) if r in held]

    def renew(self, owner: str, lease_s: float = LEASE_S) -> int:
        """Extend every lease the owner holds; returns how many."""
        with self.transaction():
            return self.conn.execute("UPDATE runs SET lease_until=? WHERE claimed_by=? AND status='running'",
                                     (time.time() + lease_s, owner)).rowcount

    def release(self, owner: str) -> None:
        """Give back the owner's unfinished claims (an interrupted driver), as pending."""
        with self.transaction():
            self.conn.execute("UPDATE runs SET status='pending', claimed_by=NULL, lease_until=NULL "
                              "WHERE claimed_by=? AND status='running'", (owner,))

    def query(self, sql: str, params=()) -> "pd.DataFrame":
        """The rows of one read-only SQL statement as a DataFrame.

        Values go in params (`?` or `:name` placeholders), never into sql; a statement that
        would write is refused, as is more than one statement.
        """
        import pandas as pd
        self.conn.execute("PRAGMA query_only = ON")
        try:
            return pd.read_sql_query(sql, self.conn, params=params)
        except (sqlite3.Error, pd.errors.DatabaseError) as e:
            raise ConfigError(f"query failed on {self.path}: {str(e).splitlines()[0]}") from None
        finally:
            self.conn.execute("PRAGMA query_only = OFF")

    def summary(self) -> dict[str, int]:
        """Run counts by status."""
        return dict(self.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: a run is stored whole or not at all."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def _run_row(study_name: str, s: RunSpec) -> dict:
    m = s.model_spec
    return dict(run_id=s.run_id, study=study_name, status="pending", model=s.model, model_kind=m.kind,
                activate_logits=int(m.activate_logits), hidden_units=m.hidden_units,
                hidden_layers=m.hidden_layers, batchnorm=int(m.batchnorm), init=m.init,
                activation=s.activation, seed=s.seed, n_train=s.n_train, dataset=s.dataset,
                normalize=s.normalize, stratify=int(s.stratify), epochs=s.epochs,
                batch_size=s.batch_size, optimizer=s.optimizer, lr=s.lr, momentum=s.momentum,
                weight_decay=s.weight_decay, engine=s.engine, device=s.device, dtype=s.dtype,
                threads=s.threads, validation=s.validation, config_json=s.to_json())


def owner_id() -> str:
    """This driver's name in claims: host, pid and the pid's start time (pids get reused)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool:
    """False only when the owner is surely dead: a driver on this host whose process is gone."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: only its lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_time(int(pid)) == started


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); '' where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def load_results(out_dir, skip_metrics=()) -> Results:
    """Every table of a store as pandas DataFrames (the data contract's long tables).

    skip_metrics: prefixes of diagnostics metrics whose rows stay in the store (the result
    names them and its source; `select` reads them for the runs that need them).
    """
    import pandas as pd
    store = Store(out_dir, create=False)
    where = {t: "" for t in TABLES}
    params = {t: () for t in TABLES}
    if skip_metrics:
        where["diagnostics"] = "WHERE " + " AND ".join(
            "(metric IS NULL OR substr(metric, 1, ?) <> ?)" for _ in skip_metrics)
        params["diagnostics"] = tuple(v for p in skip_metrics for v in (len(p), p))
    try:
        frames = {t: with_defaults(t, read_frame(store.conn, f"SELECT * FROM {t} {where[t]} ORDER BY {ORDER[t]}",
                                                 params[t]))
                  for t in TABLES}
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        raise StoreError(f"cannot read {store.path}: {e}") from None
    finally:
        store.close()
    return Results(**frames, source=Path(out_dir) if skip_metrics else None, skipped=tuple(skip_metrics))


def stored_results(out_dir, skip_metrics=()) -> Results:
    """`runs` and `epochs` as DataFrames, `batches` and `diagnostics` left in the store as
    `StoredRows` (read a selection at a time): what the report computes with, in memory
    that follows its selections rather than the store's size."""
    import pandas as pd
    from .rows import StoredRows
    store = Store(out_dir, create=False)
    try:
        frames = {t: with_defaults(t, read_frame(store.conn, f"SELECT * FROM {t} ORDER BY {ORDER[t]}",
                                                 shared_text=True))
                  for t in ("runs", "epochs")}
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        raise StoreError(f"cannot read {store.path}: {e}") from None
    finally:
        store.close()
    lazy = {t: StoredRows(store_path(out_dir), t, ORDER[t], _read_rows,
                          skip=tuple(skip_metrics) if t == "diagnostics" else ())
            for t in ("batches", "diagnostics")}
    return Results(**frames, **lazy, source=Path(out_dir), skipped=tuple(skip_metrics))


def _read_rows(conn, table: str, sql: str, params, whole: bool) -> "pd.DataFrame":
    """StoredRows' reader: a query's rows as `load_results` gives them (`whole`: every column,
    with the columns added since an earlier store at their value there)."""
    frame = read_frame(conn, sql, params, shared_text=True)
    return with_defaults(table, frame) if whole else frame


READ_CHUNK = 250_000  # rows a read holds as Python tuples at once


def read_frame(conn, sql: str, params=(), shared_text: bool = False) -> "pd.DataFrame":
    """A query's rows as one `read_sql_query` gives them (values and dtypes), read a chunk at a time.

    read_sql_query holds every row as a tuple of Python objects before it builds the frame:
    for the batches and diagnostics tables that transient was most of the report's peak
    memory (6 GB at 10,000 runs, for frames of 1.3 GB). With `shared_text` equal strings of
    a chunk are one object (SQLite hands out a new one per row: a run id, a layer and a
    metric name cost some 70 bytes each in every row, a shared one 8).
    """
    import pandas as pd
    parts = list(pd.read_sql_query(sql, conn, params=params, chunksize=READ_CHUNK))
    if shared_text:
        parts = [_shared_text(p) for p in parts]
    if len(parts) <= 1:
        return parts[0] if parts else pd.read_sql_query(sql, conn, params=params)
    frame = pd.concat(parts, ignore_index=True)
    for c in frame.columns[frame.dtypes == object]:  # a chunk of NULLs only read as objects
        filled = {p[c].dtype for p in parts if p[c].notna().any()}
        if len(filled) == 1 or (filled and all(pd.api.types.is_numeric_dtype(d) for d in filled)):
            kind = filled.pop()
            frame[c] = pd.to_numeric(frame[c]) if pd.api.types.is_numeric_dtype(kind) else \
                frame[c].astype(kind)
    return frame


def _shared_text(frame: "pd.DataFrame") -> "pd.DataFrame":
    """The frame with each text column's equal values one object (the same values)."""
    import numpy as np
    for c in frame.columns[frame.dtypes == object]:
        values = frame[c].to_numpy()
        codes, uniques = frame[c].factorize()
        shared = uniques.to_numpy(dtype=object)[np.maximum(codes, 0)] if len(uniques) else values.copy()
        shared[codes < 0] = values[codes < 0]  # NULLs stay as read
        frame[c] = shared
    return frame


def with_defaults(table: str, frame: "pd.DataFrame") -> "pd.DataFrame":
    """A table of a store of an earlier actconv with the columns added since, at their value there."""
    added = {**(DATA_COLUMNS if table == "runs" else {}), **ADDED_COLUMNS.get(table, {})}
    for name, (_, earlier) in added.items():
        if name not in frame:
            frame[name] = float("nan") if earlier is None else earlier
    return frame


def select(out_dir, table: str, columns=None, **conditions) -> "pd.DataFrame":
    """The rows of one table that match every condition, read from the store without loading the rest.

    Args:
        out_dir: the study's output directory.
        table: runs, epochs, batches or diagnostics.
        columns: the table's columns to return (default: all).
        conditions: column=value, column=[values] (any of them) or column=None (missing);
            a run setting the table lacks (lr, model, ...) is matched on the run's row in `runs`.
    Returns:
        A DataFrame in the order `load_results` gives.
    """
    import pandas as pd
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose from: {', '.join(TABLES)}")
    store = Store(out_dir, create=False)
    try:
        have = [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")]
        runs = [r[1] for r in store.conn.execute("PRAGMA table_info(runs)")]
        for c in columns or ():
            if c not in have:
                raise ConfigError(f"{table} has no column {c!r}; choose from: {', '.join(have)}")
        where, params = [], []
        for key, value in conditions.items():
            if key in have:
                col = f"t.{key}"
            elif key in runs:
                col = f"r.{key}"
            else:
                raise ConfigError(f"no column {key!r} in {table} or runs; choose from: "
                                  f"{', '.join(dict.fromkeys(have + runs))}")
            if value is None:
                where.append(f"{col} IS NULL")
            elif isinstance(value, (list, tuple, set, frozenset)):
                values = [int(v) if isinstance(v, bool) else v for v in value]
                where.append(f"{col} IN ({', '.join('?' * len(values))})" if values else "0")
                params += values
            else:
                where.append(f"{col} = ?")
                params.append(int(value) if isinstance(value, bool) else value)
        join = " JOIN runs r ON r.run_id = t.run_id" if any(w.startswith("r.") for w in where) else ""
        picked = ", ".join(f"t.{c}" for c in columns) if columns else "t.*"
        order = ", ".join(f"t.{c.strip()}" for c in ORDER[table].split(","))
        sql = (f"SELECT {picked} FROM {table} t{join}" + (f" WHERE {' AND '.join(where)}" if where else "")
               + f" ORDER BY {order}")
        frame = store.query(sql, params)
    finally:
        store.close()
    return frame if columns else with_defaults(table, frame)


def study_specs(out_dir) -> list[dict]:
    """The specs of every study registered in a store (its `studies` table), as dicts."""
    import json
    store = Store(out_dir, create=False)
    try:
        return [json.loads(r[0]) for r in store.conn.execute("SELECT spec_json FROM studies")]
    except (sqlite3.Error, ValueError) as e:
        raise StoreError(f"cannot read {store.path}: {e}") from None
    finally:
        store.close()
