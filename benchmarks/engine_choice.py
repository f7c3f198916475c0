#!/usr/bin/env python3
"""Where the report's per-run batch work should run: SQLite rows into NumPy, or DuckDB, side by side.

    python benchmarks/engine_choice.py STORE_DIR [--runs 2000] [--duckdb-path DIR]

On the first `--runs` runs of a store (e.g. one written by synth_store.py) it times, in one
process, the per-run pass the report makes over the batch rows (run_id, epoch, step, loss):

- reading them 500 runs at a time with sqlite3 (the report before ADBC) and with SQLite's ADBC
  driver into Arrow (the report now);
- two per-run aggregates on those rows: the least-squares slope of loss on step with the mean
  loss (a GROUP BY), and the running median and MAD of the previous 50 losses (a window, the
  spike baseline), in NumPy as the report computes them, and in DuckDB over a Parquet copy of
  the same rows (with the time to write it) and over the Arrow chunks in memory (DuckDB cannot
  read the store itself offline: its sqlite extension downloads on first use; tried, reported).

DuckDB is not a dependency: give a folder it is installed in (`pip install --target DIR duckdb`)
with --duckdb-path, or install it. Prints a markdown table of seconds.
"""
import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CHUNK = 500
WINDOW = 50


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sqlite3_chunks(db: Path, ids: list):
    import pandas as pd
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for i in range(0, len(ids), CHUNK):
            part = ids[i:i + CHUNK]
            yield pd.read_sql_query(
                f"SELECT run_id, epoch, step, loss FROM batches WHERE run_id IN ({', '.join('?' * len(part))}) "
                f"ORDER BY run_id, step", conn, params=part)
    finally:
        conn.close()


def arrow_chunks(db: Path, ids: list):
    import adbc_driver_sqlite.dbapi as adbc
    with adbc.connect(f"file:{db}?mode=ro") as conn, conn.cursor() as cur:
        for i in range(0, len(ids), CHUNK):
            part = ids[i:i + CHUNK]
            cur.execute(f"SELECT run_id, epoch, step, IFNULL(loss, 0.0) AS loss, loss IS NULL AS missing "
                        f"FROM batches WHERE run_id IN ({', '.join('?' * len(part))}) ORDER BY run_id, step", part)
            yield cur.fetch_arrow_table()


def numpy_aggregates(frame) -> tuple:
    """Per run: slope of loss on step, mean loss (sums by run), and the running median (and MAD)
    of the previous WINDOW losses (the report's `_running_baselines`)."""
    from actconv.analysis.stats import _running_baselines
    codes, _ = frame["run_id"].factorize()
    x, y = frame["step"].to_numpy(float), frame["loss"].to_numpy(float)
    ok = np.isfinite(y)
    n = np.bincount(codes[ok])
    sx, sy = np.bincount(codes[ok], x[ok]), np.bincount(codes[ok], y[ok])
    sxx, sxy = np.bincount(codes[ok], x[ok] ** 2), np.bincount(codes[ok], x[ok] * y[ok])
    slope = (n * sxy - sx * sy) / (n * sxx - sx ** 2)
    median, _ = _running_baselines(y, codes, WINDOW, min_history=1)
    return slope, sy / n, median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--duckdb-path", type=Path)
    args = p.parse_args()
    if args.duckdb_path:
        sys.path.insert(0, str(args.duckdb_path))
    db = args.store / "actconv.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT run_id FROM runs r WHERE EXISTS (SELECT 1 FROM batches b WHERE b.run_id = r.run_id) "
            "ORDER BY run_id LIMIT ?", (args.runs,))]
    rows = []
    list(arrow_chunks(db, ids))  # the pages into the OS cache first: neither read pays the disk
    t_sql, parts = timed(lambda: list(sqlite3_chunks(db, ids)))
    rows.append(("read, sqlite3 (500 runs a query)", t_sql))
    t_arrow, tables = timed(lambda: list(arrow_chunks(db, ids)))
    rows.append(("read, ADBC into Arrow (500 runs a query)", t_arrow))
    t_np, _ = timed(lambda: [numpy_aggregates(p) for p in parts])
    rows.append(("slope, mean and running median, NumPy (the report's pass)", t_np))
    n_rows = sum(len(p) for p in parts)
    try:
        import duckdb
    except ImportError:
        rows.append(("DuckDB", float("nan")))
        duckdb = None
    if duckdb is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "batches.parquet"

            def write():
                table = pa.concat_tables(tables)
                pq.write_table(table, path)
            t_write, _ = timed(write)
            rows.append(("write the Parquet copy (from the Arrow chunks already read)", t_write))
            con = duckdb.connect()
            try:
                con.execute("INSTALL sqlite")
                rows.append(("DuckDB's sqlite extension: installed", float("nan")))
            except Exception as e:  # noqa: BLE001 -- offline: report why
                print(f"DuckDB cannot read the store itself: {str(e).splitlines()[0]}", file=sys.stderr)
            for where, src in (("Parquet", f"read_parquet('{path}')"), ("the Arrow chunks", "arrow_table")):
                con.register("arrow_table", pa.concat_tables(tables))  # scanned in place, no copy
                t_group, g = timed(lambda: con.execute(
                    f"SELECT run_id, regr_slope(loss, step), avg(loss) FROM {src} WHERE NOT missing "
                    f"GROUP BY run_id").fetchnumpy())
                rows.append((f"slope and mean, DuckDB GROUP BY over {where}", t_group))
                value = "CASE WHEN missing THEN NULL ELSE loss END"
                frame = f"OVER (PARTITION BY run_id ORDER BY step ROWS BETWEEN {WINDOW} PRECEDING AND 1 PRECEDING)"
                t_window, w = timed(lambda: con.execute(
                    f"SELECT run_id, step, median({value}) {frame}, mad({value}) {frame} FROM {src}").fetchnumpy())
                rows.append((f"running median and MAD of the previous 50, DuckDB window over {where}", t_window))
            assert len(g["run_id"]) == len(ids) and len(w["run_id"]) == n_rows
    print(f"{len(ids):,} runs, {n_rows:,} batch rows, {args.store}\n")
    print("| step | seconds |\n|---|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} |" if s == s else f"| {name} | n/a |")


if __name__ == "__main__":
    main()
