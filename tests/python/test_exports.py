"""Exports: results too big to fetch are written under --export-dir by the
engine (Flight action `export`, HTTP POST /api/v1/export) in Parquet, CSV or
newline-delimited JSON, and nowhere else: escape attempts are refused and
leave nothing behind, a query failing half-way leaves no file, SQL COPY … TO
stays refused with a pointer to the action. Files read back with in-process
DuckDB (duckdb==2.0.0) equal the query's result. Real server, real files."""

import os
import signal

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import pytest

from conftest import action, start_server
from flight_raw import Client
from http_client import Http

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MONTH = "2026-06"
HEADER = "adbc.flight.sql.rpc.call_header.x-duckflock-month"
# Crosses DuckDB's vector (2,048) and row group (122,880) sizes.
ROWS = 300_000
QUERY = (
    "SELECT i, i * 2 AS j, 'v' || i AS s, DATE '2026-01-01' + (i % 365)::INTEGER AS d, "
    "CASE WHEN i % 7 = 0 THEN NULL ELSE i / 3.0 END AS x FROM big ORDER BY i"
)




def listing(path):
    return sorted(os.listdir(path))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    data = root / "data"
    proc, uri = start_server(str(data), "--replicas", "2")
    with flight_sql.connect(uri, db_kwargs={HEADER: MONTH}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE big AS SELECT i FROM range({ROWS}) t(i)")
    action(uri, "sync", {"month": MONTH, "timeout_s": 120})
    yield proc, uri, data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def expected():
    con = duckdb.connect()
    con.execute(f"CREATE TABLE big AS SELECT i FROM range({ROWS}) t(i)")
    return con.execute(QUERY).fetchall()


@pytest.mark.parametrize("fmt,reader", [
    ("parquet", "read_parquet"),
    ("csv", "read_csv"),
    ("json", "read_json"),
])
def test_export_writes_the_whole_result_under_the_export_dir(srv, fmt, reader):
    proc, uri, data = srv
    done = action(uri, "export", {"query": QUERY, "format": fmt, "name": f"big_{fmt}", "month": MONTH})
    path = data / "exports" / f"big_{fmt}.{fmt}"
    assert done["path"] == str(path.resolve())
    assert done["name"] == f"big_{fmt}.{fmt}"
    assert done["rows"] == ROWS
    assert done["bytes"] == os.path.getsize(path) > 0
    assert done["node"].startswith(f"{MONTH}/node_")
    con = duckdb.connect()
    cols = "i, j, s, d::DATE, x::DOUBLE"
    got = con.execute(f"SELECT {cols} FROM {reader}('{path}') ORDER BY i").fetchall()
    want = [(i, j, s, d, None if x is None else float(x)) for (i, j, s, d, x) in expected()]
    assert got == want
    # Only finished files: no partial one is left.
    assert not [n for n in listing(data / "exports") if n.startswith(".")]


def test_escapes_and_bad_requests_are_refused_and_leave_nothing(srv, tmp_path):
    proc, uri, data = srv
    before = listing(data / "exports")
    outside = tmp_path / "outside.csv"
    for name in ["../escape", str(outside), "a/b", ".hidden", "..", "x y", "../files/over"]:
        with pytest.raises(Exception) as e:
            action(uri, "export", {"query": "SELECT 1 AS a", "format": "csv", "name": name, "month": MONTH})
        assert "plain file name" in str(e.value)
    assert not outside.exists()
    assert not (data / "escape.csv").exists()
    assert not (data / "files" / "over.csv").exists()
    # A write is not an export, and it did not happen.
    with pytest.raises(Exception) as e:
        action(uri, "export", {"query": "DELETE FROM big", "format": "csv", "name": "del", "month": MONTH})
    assert "only reads" in str(e.value)
    with pytest.raises(Exception):
        action(uri, "export", {"query": "SELECT 1", "format": "xlsx", "month": MONTH})
    # A query failing half-way (after a row group) leaves no file.
    boom = ("SELECT CASE WHEN i < 200000 THEN i ELSE error('boom') END AS i "
            "FROM range(300000) t(i)")
    with pytest.raises(Exception) as e:
        action(uri, "export", {"query": boom, "format": "parquet", "name": "boom", "month": MONTH})
    assert "boom" in str(e.value)
    assert listing(data / "exports") == before
    with flight_sql.connect(uri, db_kwargs={HEADER: MONTH}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM big")
            assert cur.fetchall() == [(ROWS,)]
            # SQL COPY … TO is refused and points to the action.
            for sql in ["COPY (SELECT 1) TO 'copy.csv'", f"COPY big TO '{data}/exports/copy.csv'"]:
                with pytest.raises(Exception) as e:
                    cur.execute(sql)
                assert "export" in str(e.value)
    assert listing(data / "exports") == before
    assert not (data / "files" / "copy.csv").exists()


def test_an_existing_export_is_not_overwritten(srv):
    proc, uri, data = srv
    action(uri, "export", {"query": "SELECT 1 AS a", "format": "csv", "name": "once", "month": MONTH})
    with pytest.raises(Exception) as e:
        action(uri, "export", {"query": "SELECT 2 AS a", "format": "csv", "name": "once.csv", "month": MONTH})
    assert "exists" in str(e.value)
    assert (data / "exports" / "once.csv").read_text() == "a\n1\n"


def test_http_export_list_and_download(srv):
    proc, uri, data = srv
    http = Http(proc.http_url)
    a = http.ok("POST", "/api/v1/export", {"query": QUERY, "format": "parquet", "name": "via_http", "month": MONTH})
    assert a["status"] == "success" and a["rows"] == ROWS
    path = data / "exports" / "via_http.parquet"
    assert a["bytes"] == os.path.getsize(path)
    listed = http.ok("GET", "/api/v1/exports")
    names = [e["name"] for e in listed["exports"]]
    assert "via_http.parquet" in names and listed["count"] == len(names)
    entry = next(e for e in listed["exports"] if e["name"] == "via_http.parquet")
    assert entry["size"] == a["bytes"] and entry["format"] == "parquet"
    import urllib.request
    with urllib.request.urlopen(proc.http_url + "/api/v1/exports/via_http.parquet") as r:
        body = r.read()
        assert r.headers["Content-Type"] == "application/vnd.apache.parquet"
    assert body == path.read_bytes()
    for bad in ["nope.parquet", "..%2Fdata", ".via_http.parquet"]:
        assert http.get(f"/api/v1/exports/{bad}").status == 404
    r = http.post("/api/v1/export", {"query": "SELECT 1", "format": "csv", "name": "../x", "month": MONTH})
    assert r.status == 400 and "plain file name" in r.json["error"]
