"""Bulk ingest through ADBC's adbc_ingest (Flight SQL CommandStatementIngest,
DoPut) against the real server: every mode, the errors, values compared with
in-process DuckDB, the catalog option, temporary tables in a session, and a
1M-row upload checked on every replica file. (The Go driver sends ingest
without the open transaction's id; ingest inside a transaction is tested
with arrow-flight's client in tests/flight_sql.rs.)"""

import os
import signal

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import pyarrow as pa
import pytest

from conftest import start_server
from flight_raw import Client
from replicas import compare_month
from test_adbc import reference, same

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def rows(cur, sql):
    cur.execute(sql)
    return cur.fetchall()


def small(n=1000, start=0):
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "name": [f"n{i}" for i in range(start, start + n)],
            "score": pa.array([i * 0.5 for i in range(start, start + n)], pa.float64()),
        }
    )


def test_every_mode(connect, month):
    cur = connect(month=month).cursor()
    assert cur.adbc_ingest("m", small(1000), mode="create") == 1000
    assert cur.adbc_ingest("m", small(500, 1000), mode="append") == 500
    assert rows(cur, "SELECT count(*), sum(id) FROM m") == [(1500, sum(range(1500)))]
    # replace: the old rows are gone, the new schema is the upload's.
    assert cur.adbc_ingest("m", pa.table({"k": ["a", "b"]}), mode="replace") == 2
    assert rows(cur, "SELECT k FROM m ORDER BY k") == [("a",), ("b",)]
    # replace creates a missing table; create_append creates, then appends.
    assert cur.adbc_ingest("r", small(3), mode="replace") == 3
    assert cur.adbc_ingest("ca", small(10), mode="create_append") == 10
    assert cur.adbc_ingest("ca", small(10, 10), mode="create_append") == 10
    assert rows(cur, "SELECT count(DISTINCT id) FROM ca") == [(20,)]


def test_errors(connect, month):
    cur = connect(month=month).cursor()
    cur.adbc_ingest("e", small(5), mode="create")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="ALREADY_EXISTS.*already exists"):
        cur.adbc_ingest("e", small(5), mode="create")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="INVALID_ARGUMENT.*zz"):
        cur.adbc_ingest("e", pa.table({"zz": [1, 2]}), mode="append")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="INVALID_ARGUMENT.*"):
        cur.adbc_ingest("e", pa.table({"id": ["not a number"]}), mode="append")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="NOT_FOUND.*does not exist"):
        cur.adbc_ingest("missing", small(5), mode="append")
    # A failed upload leaves nothing behind.
    assert rows(cur, "SELECT count(*) FROM e") == [(5,)]
    # A constraint violation fails the whole upload.
    cur.execute("CREATE TABLE keyed (id BIGINT PRIMARY KEY, name VARCHAR, score DOUBLE)")
    cur.adbc_ingest("keyed", small(10), mode="append")
    with pytest.raises(adbc_driver_manager.Error, match="(?i)duplicate key"):
        cur.adbc_ingest("keyed", small(20), mode="append")
    assert rows(cur, "SELECT count(*) FROM keyed") == [(10,)]


SAMPLE = """SELECT range AS i, (range % 100)::TINYINT AS t, range::HUGEINT * 1000000000000 AS h,
       (range / 7)::DECIMAL(18, 3) AS d, [range, NULL] AS l, {'a': range, 'b': 'x' || range} AS s,
       CASE range % 5 WHEN 0 THEN 'NaN'::DOUBLE WHEN 1 THEN '-0.0'::DOUBLE WHEN 2 THEN NULL ELSE range / 3 END AS f,
       TIMESTAMP '2026-01-01 00:00:00' + INTERVAL (range) MINUTE AS ts, DATE '2026-03-01' + range::INTEGER AS dt,
       CASE WHEN range % 4 = 0 THEN NULL ELSE 'text ' || range END AS v, range % 2 = 0 AS b,
       MAP {'k': range} AS m, uuid() IS NOT NULL AS u
FROM range(3000)"""


def test_values_and_types_match_in_process_duckdb(connect, month):
    """The upload is what in-process DuckDB produced; reading it back must
    give the same values, and the table the same column types DuckDB's own
    Arrow scan gives."""
    ref = reference()
    data = ref.sql(SAMPLE).to_arrow_table()
    cur = connect(month=month).cursor()
    assert cur.adbc_ingest("typed", data, mode="create") == 3000
    cur.execute("SELECT * FROM typed ORDER BY i")
    got = cur.fetch_arrow_table()
    ref.execute("CREATE TABLE typed AS SELECT * FROM data")
    want = ref.sql("SELECT * FROM typed ORDER BY i").to_arrow_table()
    assert got.schema.types == want.schema.types, (got.schema, want.schema)
    assert same(got.to_pylist(), want.to_pylist())
    server_types = rows(cur, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'typed' ORDER BY column_index")
    local_types = ref.sql("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'typed' ORDER BY column_index").fetchall()
    assert server_types == local_types


def test_append_matches_columns_by_name_and_fills_defaults(connect, month):
    cur = connect(month=month).cursor()
    cur.execute("CREATE SEQUENCE ids START 1")
    cur.execute("CREATE TABLE auto (id BIGINT PRIMARY KEY DEFAULT nextval('ids'), name VARCHAR, score DOUBLE DEFAULT 7)")
    assert cur.adbc_ingest("auto", pa.table({"name": ["a", "b", "c"]}), mode="append") == 3
    assert rows(cur, "SELECT id, name, score FROM auto ORDER BY id") == [(1, "a", 7.0), (2, "b", 7.0), (3, "c", 7.0)]


def test_catalog_option_is_the_month(connect, month):
    cur = connect().cursor()  # no month header
    assert cur.adbc_ingest("by_catalog", small(7), mode="create", catalog_name=month) == 7
    assert rows(connect(month=month).cursor(), "SELECT count(*) FROM by_catalog") == [(7,)]
    other = connect(month=month).cursor()
    other.execute("CREATE SCHEMA s2")
    assert cur.adbc_ingest("in_schema", small(3), mode="create", catalog_name=month, db_schema_name="s2") == 3
    assert rows(other, "SELECT count(*) FROM s2.in_schema") == [(3,)]


def test_temporary_tables_live_in_the_session(server, month):
    session = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    with flight_sql.connect(server, autocommit=True, db_kwargs=session) as conn:
        conn.adbc_current_catalog = month  # starts the Flight SQL session
        cur = conn.cursor()
        assert cur.adbc_ingest("scratch", small(4), mode="create", temporary=True) == 4
        assert rows(cur, "SELECT count(*) FROM temp.main.scratch") == [(4,)]
    # Not persistent, and not visible outside the session.
    with flight_sql.connect(server, autocommit=True,
                            db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": month}) as conn:
        cur = conn.cursor()
        assert rows(cur, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'") == [(0,)]
        with pytest.raises(adbc_driver_manager.ProgrammingError, match="session"):
            cur.adbc_ingest("scratch", small(4), mode="create", temporary=True)


MONTH = "2026-05"


def test_million_rows_reach_every_replica(tmp_path):
    data = str(tmp_path / "data")
    proc, uri = start_server(data, "--replicas", "7")
    try:
        conn = flight_sql.connect(
            uri, autocommit=True,
            db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": MONTH})
        cur = conn.cursor()
        big = duckdb.sql(
            "SELECT range AS id, range * 0.25 AS v, 'row ' || range AS s, "
            "CASE WHEN range % 10 = 0 THEN NULL ELSE [range, range + 1] END AS l FROM range(1000000)"
        ).to_arrow_table()
        assert cur.adbc_ingest("big", big, mode="create") == 1_000_000
        assert cur.adbc_ingest("big", big.slice(0, 1000), mode="append") == 1000
        c = Client(uri)
        c.action("sync", {"month": MONTH, "timeout_s": 300})
        st = c.action("node_status", {"month": MONTH})["months"][0]["nodes"]
        assert all(n["lag_lsn"] == 0 for n in st)
        c.close()
        cur.close()
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    assert compare_month(os.path.join(data, MONTH), 7) == []
    con = duckdb.connect(os.path.join(data, MONTH, "node_7.db"), read_only=True)
    assert con.sql("SELECT count(*), count(DISTINCT id), sum(id) FROM big").fetchall() == [
        (1_001_000, 1_000_000, sum(range(1_000_000)) + sum(range(1000)))
    ]
    con.close()


def test_tens_of_millions_of_rows_in_bounded_memory(tmp_path):
    """40 M rows (640 MB as Arrow) streamed in (256 K-row batches, from a
    reader: never held whole by the client either) under --memory-limit
    256MB: the server's peak RSS stays below the size of the upload (the
    limit plus a fixed allowance), and both replicas hold every row."""
    import numpy as np

    n, step = 40_000_000, 1 << 18
    data = str(tmp_path / "data")
    proc, uri = start_server(data, "--replicas", "2", "--memory-limit", "256MB")

    def peak_rss_mb():
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

    def batches():
        for s in range(0, n, step):
            k = min(step, n - s)
            yield pa.record_batch({"id": np.arange(s, s + k, dtype=np.int64), "v": np.full(k, 0.5)})

    try:
        reader = pa.RecordBatchReader.from_batches(
            pa.schema([("id", pa.int64()), ("v", pa.float64())]), batches())
        conn = flight_sql.connect(uri, autocommit=True,
                                  db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": MONTH})
        cur = conn.cursor()
        assert cur.adbc_ingest("huge", reader, mode="create") == n
        c = Client(uri)
        c.action("sync", {"month": MONTH, "timeout_s": 600})
        c.close()
        assert peak_rss_mb() < 256 + 256, f"peak RSS {peak_rss_mb():.0f} MB"
        cur.close()
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    for node in range(3):
        con = duckdb.connect(os.path.join(data, MONTH, f"node_{node}.db"), read_only=True)
        assert con.sql("SELECT count(*), sum(id) FROM huge").fetchall() == [(n, n * (n - 1) // 2)]
        con.close()
