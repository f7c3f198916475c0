"""Rows of the batches or diagnostics table left in the store, read a selection at a time.

A study's `runs` and `epochs` grow with its runs; `batches` and `diagnostics` grow with
runs x steps (466 and 970 rows a run in the seed preset: 47 and 97 million at 100,000 runs),
so the report keeps them in the store as `StoredRows`: a selection of runs, and the condition
label each run is shown under, that the analysis narrows with `only` and `relabel` without
reading a row. Where a figure or a claim needs rows it reads its own selection (`frame`); a
per-run analysis (a fit, the spikes, steps to a threshold) is mapped over a chunk of runs at
a time (`per_run`), once for every run of the store, and each narrower selection reads its
runs' part of that result. Memory follows the largest selection read, not the store.
"""
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

RUNS_PER_CHUNK = 500   # runs a per-run pass holds at once (about 250,000 batch rows)
CHUNK_ROWS = 250_000   # rows a read converts at once
# Where a selection lists this many runs or fewer, SQLite is given them in an IN list; more
# go into a temporary table it joins with.
IN_LIST = 900


@dataclass(frozen=True, eq=False)
class StoredRows:
    """A selection of one store table's rows: every run of the store, or `ids`; `labels` maps
    a run to the model label it is shown under (a condition). `cache` holds what `per_run`
    computed for the whole store, shared by every selection narrowed from this one."""
    path: Path                                # the store's SQLite file
    table: str                                # batches or diagnostics
    order: str                                # the ORDER BY every reader gets
    read: Callable                            # (conn, table, sql, params, whole) -> DataFrame (the store's reader)
    ids: frozenset | None = None              # None: every run of the store
    labels: Mapping | None = None             # run_id -> model (relabelled runs only)
    skip: tuple = ()                          # diagnostics metric prefixes never read here
    cache: dict = field(default_factory=dict, repr=False)

    # -- selections (no row is read) -------------------------------------------------------
    def only(self, ids) -> "StoredRows":
        """These runs' rows (of those selected already)."""
        ids = frozenset(ids)
        return replace(self, ids=ids if self.ids is None else self.ids & ids)

    def relabel(self, mapping: Mapping) -> "StoredRows":
        """The same rows with `model` read as mapping[run_id] for the runs it names."""
        return replace(self, labels={**(self.labels or {}), **mapping})

    @property
    def columns(self) -> list[str]:
        if "columns" not in self.cache:
            with self._connect() as conn:
                self.cache["columns"] = [r[1] for r in conn.execute(f"PRAGMA table_info({self.table})")]
        return self.cache["columns"]

    def run_ids(self) -> list[str]:
        """The selected runs that have rows in the table, sorted."""
        if "run_ids" not in self.cache:  # the whole store's, once: an index seek per run
            with self._connect() as conn:
                self.cache["run_ids"] = [r[0] for r in conn.execute(
                    f"SELECT run_id FROM runs r WHERE EXISTS (SELECT 1 FROM {self.table} t "
                    f"WHERE t.run_id = r.run_id) ORDER BY run_id")]
        have = self.cache["run_ids"]
        return have if self.ids is None else [i for i in have if i in self.ids]

    @property
    def empty(self) -> bool:
        return not self.run_ids()

    # -- reads ---------------------------------------------------------------------------
    def frame(self, metrics=None, columns=None):
        """The selected rows as one DataFrame, in the store's order (diagnostics: only the
        `metrics` named, when given)."""
        return self._read(self.ids, metrics, columns)

    def chunks(self, runs: int | None = None, columns=None):
        """The selected rows, `runs` runs at a time (default RUNS_PER_CHUNK), in run order (each
        run whole in one chunk); with `columns`, those and the run's keys (model, activation,
        seed, n_train) alone."""
        ids, runs = self.run_ids(), runs or RUNS_PER_CHUNK
        for i in range(0, len(ids), runs):
            yield self._read(ids[i:i + runs], columns=columns, keys=columns is not None)

    def per_run(self, key: str, fn: Callable, columns=None) -> "object":
        """`fn(rows)` for the selected runs, where fn's result holds one part per run that
        depends on that run's rows alone (a `run_id` column, in run order): computed once
        for every run of the store, a chunk of runs at a time, under `key` (`columns`: the
        table's columns fn reads, beside the run's keys)."""
        if ("per_run", key) not in self.cache:
            self.prefetch({key: fn}, columns)
        out = self.cache[("per_run", key)]
        if self.ids is not None:
            out = out[out["run_id"].isin(self.ids)].reset_index(drop=True)
        return self._labelled(out)

    def prefetch(self, fns: Mapping, columns=None) -> None:
        """`per_run` of several functions {key: fn} in one pass over the store's rows."""
        import pandas as pd
        todo = {k: f for k, f in fns.items() if ("per_run", k) not in self.cache}
        if not todo:
            return
        whole = replace(self, ids=None, labels=None)
        parts = {k: [] for k in todo}
        for chunk in whole.chunks(columns=columns):
            for k, f in todo.items():
                parts[k].append(f(chunk))
        for k, f in todo.items():
            got = [p for p in parts[k] if len(p)] or parts[k][:1]
            self.cache[("per_run", k)] = (pd.concat(got, ignore_index=True) if len(got) > 1 else got[0]
                                          if got else f(whole._read([], columns=columns, keys=columns is not None)))

    def _labelled(self, frame):
        if self.labels and "model" in frame.columns and len(frame):
            frame = frame.assign(model=frame["run_id"].map(self.labels).fillna(frame["model"]))
        return frame

    def _read(self, ids, metrics=None, columns=None, keys=False):
        if keys and metrics is None and not self.skip and ids is not None and len(ids) <= IN_LIST:
            frame = self._read_arrow(ids, columns)
            if frame is not None:
                with self._connect() as conn:
                    return self._labelled(self._with_keys(conn, frame))
        where, params, join = [], [], ""
        if keys:  # the run's keys from its one row in `runs`, not from every row of the table
            columns = ["run_id", *[c for c in columns if c != "run_id"]]
        with self._connect() as conn:
            if ids is not None and len(ids) <= IN_LIST:
                where.append(f"t.run_id IN ({', '.join('?' * len(ids))})" if ids else "0")
                params += sorted(ids)
            elif ids is not None:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS selected (run_id TEXT PRIMARY KEY) WITHOUT ROWID")
                conn.execute("DELETE FROM selected")
                conn.executemany("INSERT INTO selected VALUES (?)", ((i,) for i in sorted(ids)))
                # CROSS JOIN keeps `selected` the outer loop: an index seek per selected run,
                # where SQLite's own choice scanned the whole table's index for a large selection.
                join = "selected s CROSS JOIN "
            if metrics is not None:
                metrics = list(metrics)
                where.append(f"t.metric IN ({', '.join('?' * len(metrics))})" if metrics else "0")
                params += metrics
            for prefix in self.skip:
                where.append("(t.metric IS NULL OR substr(t.metric, 1, ?) <> ?)")
                params += [len(prefix), prefix]
            picked = ", ".join(f"t.{c}" for c in columns) if columns else "t.*"
            order = ", ".join(f"t.{c.strip()}" for c in self.order.split(","))
            sql = (f"SELECT {picked} FROM {join}{self.table} t" + (" ON t.run_id = s.run_id" if join else "")
                   + (f" WHERE {' AND '.join(where)}" if where else "") + f" ORDER BY {order}")
            frame = self.read(conn, self.table, sql, params, not columns)
            if keys:
                frame = self._with_keys(conn, frame)
        return self._labelled(frame)

    def _read_arrow(self, ids, columns):
        """run_id and `columns` of these runs, in the store's order, read by SQLite's ADBC driver
        straight into Arrow: a third of the time of sqlite3's Python object per value, the bulk
        of a per-run pass. None where it cannot serve (not installed, a column it cannot type)."""
        try:
            import adbc_driver_sqlite.dbapi as adbc
        except ImportError:
            return None
        if not ids:
            return None
        declared = self.declared_types()
        picked = ["t.run_id"]
        for c in (c for c in columns if c != "run_id"):
            kind = declared.get(c)
            if kind == "REAL":  # Arrow types a column by its first rows: NULL first would read as int
                picked += [f"IFNULL(t.{c}, 0.0) AS {c}", f"t.{c} IS NULL AS {c}__null"]
            elif kind == "INTEGER NOT NULL":
                picked.append(f"t.{c}")
            else:
                return None
        order = ", ".join(f"t.{c.strip()}" for c in self.order.split(","))
        sql = (f"SELECT {', '.join(picked)} FROM {self.table} t WHERE t.run_id IN "
               f"({', '.join('?' * len(ids))}) ORDER BY {order}")
        try:
            with adbc.connect(f"file:{self.path}?mode=ro") as conn, conn.cursor() as cur:
                cur.execute(sql, sorted(ids))
                frame = cur.fetch_arrow_table().to_pandas()
        except Exception:  # noqa: BLE001 -- whatever the driver refuses, sqlite3 reads
            return None
        for c in [c for c in frame.columns if c.endswith("__null")]:
            frame.loc[frame[c].astype(bool), c[:-len("__null")]] = float("nan")
            del frame[c]
        return frame

    def declared_types(self) -> dict:
        """column -> its declared type (with NOT NULL where declared)."""
        if "declared" not in self.cache:
            with self._connect() as conn:
                self.cache["declared"] = {r[1]: r[2].upper() + (" NOT NULL" if r[3] else "")
                                          for r in conn.execute(f"PRAGMA table_info({self.table})")}
        return self.cache["declared"]

    @staticmethod
    def _with_keys(conn, frame):
        """The frame with model, activation, seed and n_train of each row's run beside run_id."""
        import pandas as pd
        ids = list(frame["run_id"].unique())
        keys = pd.DataFrame(
            [r for i in range(0, len(ids), IN_LIST) for r in conn.execute(
                f"SELECT run_id, model, activation, seed, n_train FROM runs WHERE run_id IN "
                f"({', '.join('?' * len(ids[i:i + IN_LIST]))})", ids[i:i + IN_LIST])],
            columns=["run_id", "model", "activation", "seed", "n_train"]).set_index("run_id")
        codes, uniques = pd.factorize(frame["run_id"])  # rows come run by run: few uniques
        keys = keys.reindex(uniques)
        out = frame[["run_id"]].copy()
        for c in keys.columns:
            out[c] = keys[c].to_numpy()[codes] if len(frame) else keys[c].iloc[0:0].to_numpy()
        for c in frame.columns[1:]:
            out[c] = frame[c]
        return out

    def _connect(self):
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
        conn.execute(f"PRAGMA cache_size = -{64 * 1024}")
        conn.execute("PRAGMA temp_store = MEMORY")
        return _Closing(conn)


class _Closing:
    """A connection closed on leaving the block (sqlite3's own context manager only commits)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()
