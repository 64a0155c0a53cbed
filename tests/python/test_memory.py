"""Memory that holds: a sort several times --memory-limit spills and streams
to an ADBC client with the server's peak RSS (VmHWM) near the limit; with
twelve months open one long query on one replica borrows the budget idle
files leave (an even 1/96 share fails, as in-process DuckDB shows); a query
that cannot fit is RESOURCE_EXHAUSTED (HTTP 503) and the next query works;
eight large queries at once. Real binary, real files, real gRPC; no timing
in the assertions."""

import os
import signal

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import pyarrow.compute as pc
import pytest

import conftest
from conftest import action, adbc, start_server
from flight_raw import Client
from http_client import Http

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MB = 1 << 20
HEADER = "adbc.flight.sql.rpc.call_header.x-duckflock-month"
# About 48 bytes a row: 12M rows are ~0.6 GB of data, more to sort.
SORT = "SELECT i, md5(i::VARCHAR) AS s FROM range({n}) t(i) ORDER BY s"


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def stop(proc):
    conftest.stop(proc, timeout=120)


def make_month(uri, month):
    with adbc(uri, month) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE marker AS SELECT 1 AS i")
    action(uri, "sync", {"month": month, "timeout_s": 120})


def stream_sorted(cur, sql):
    """Runs `sql` and checks, batch by batch, that column `s` ascends;
    returns the row count (the result is never held whole)."""
    cur.execute(sql)
    reader = cur.fetch_record_batch()
    n, last = 0, None
    for batch in reader:
        if batch.num_rows == 0:
            continue
        s = batch.column("s")
        if last is not None:
            assert last <= s[0].as_py()
        if batch.num_rows > 1:
            assert pc.all(pc.less_equal(s.slice(0, batch.num_rows - 1), s.slice(1))).as_py()
        last = s[batch.num_rows - 1].as_py()
        n += batch.num_rows
    return n


def test_a_sort_four_times_the_limit_spills_and_streams(tmp_path):
    limit = 400_000_000  # --memory-limit 400MB
    proc, uri = start_server(str(tmp_path / "data"), "--memory-limit", "400MB")
    try:
        make_month(uri, "2026-05")
        with adbc(uri, "2026-05") as conn, conn.cursor() as cur:
            n = 12_000_000
            assert stream_sorted(cur, SORT.format(n=n)) == n
            # The server's own answer that it ran on a replica.
            cur.execute("SELECT 42")
            assert cur.fetchall() == [(42,)]
        peak = vm_hwm(proc.pid)
        assert peak <= limit + 256 * MB, f"peak RSS {peak / MB:.0f} MB"
    finally:
        stop(proc)


def test_a_long_query_borrows_what_idle_files_leave(tmp_path):
    """12 months x 8 files under 3 GB: an even share is 32 MB, with which
    DuckDB cannot finish this sort (checked in-process below); lent the
    budget that 95 idle files do not use, the server does."""
    n = 12_000_000
    con = duckdb.connect(config={"memory_limit": "32MB", "threads": "2",
                                 "temp_directory": str(tmp_path / "spill")})
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(f"SELECT count(*), min(s), max(s) FROM ({SORT.format(n=n)} LIMIT {n})").fetchall()
    con.close()

    proc, uri = start_server(str(tmp_path / "data"), "--memory-limit", "3GB", "--threads", "2")
    try:
        months = [f"2025-{m:02d}" for m in range(1, 13)]
        for m in months:
            make_month(uri, m)
        st = action(uri, "node_status", {})["months"]
        assert len(st) == 12 and all(len(m["nodes"]) == 8 for m in st)
        with adbc(uri, months[3]) as conn, conn.cursor() as cur:
            assert stream_sorted(cur, SORT.format(n=n)) == n
            # Back to the even split afterwards; the next query works.
            cur.execute("SELECT count(*) FROM marker")
            assert cur.fetchall() == [(1,)]
        peak = vm_hwm(proc.pid)
        assert peak <= 3_000_000_000 + 256 * MB
    finally:
        stop(proc)


def test_what_cannot_fit_is_resource_exhausted_and_the_server_lives_on(tmp_path):
    proc, uri = start_server(str(tmp_path / "data"), "--memory-limit", "256MB",
                             "--max-temp-size", "64MB")
    try:
        make_month(uri, "2026-05")
        # A list aggregate cannot spill; a sort cannot spill past 64 MB.
        for sql in ["SELECT len(list(i)) AS n FROM range(100000000) t(i)",
                    f"SELECT count(*) FROM ({SORT.format(n=20_000_000)} LIMIT 20000000)"]:
            with adbc(uri, "2026-05") as conn, conn.cursor() as cur:
                with pytest.raises(adbc_driver_manager.Error) as e:
                    cur.execute(sql)
                    cur.fetchall()
                # The Go driver names the gRPC code it received.
                assert "(ResourceExhausted;" in str(e.value), e.value
                assert "Out of Memory" in str(e.value)
                cur.execute("SELECT sum(i) FROM range(1000) t(i)")
                assert cur.fetchall() == [(499500,)]
        http = Http(proc.http_url)
        r = http.post("/api/v1/query/async", {"query": "SELECT len(list(i)) AS n FROM range(100000000) t(i)",
                                              "month": "2026-05"})
        assert r.status == 503, r
        assert "Out of Memory" in r.json["error"]
        assert http.post("/api/v1/query/async", {"query": "SELECT 1 AS x", "month": "2026-05"}).status == 200
        assert proc.poll() is None
    finally:
        stop(proc)


def test_eight_large_queries_at_once(tmp_path):
    import threading

    limit = 512_000_000  # --memory-limit 512MB
    proc, uri = start_server(str(tmp_path / "data"), "--memory-limit", "512MB")
    try:
        make_month(uri, "2026-05")
        results, errors = [], []

        def run():
            try:
                with adbc(uri, "2026-05") as conn, conn.cursor() as cur:
                    results.append(stream_sorted(cur, SORT.format(n=2_000_000)))
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert results == [2_000_000] * 8
        assert vm_hwm(proc.pid) <= limit + 256 * MB
    finally:
        stop(proc)


def test_http_answers_share_one_json_budget(tmp_path):
    """--http-result-limit 8MB: one answer may hold 8 MB of JSON, all
    answers being built together 32 MB. Twelve requests of about 6 MB each
    at once either answer in full or get 503 with Retry-After; the most the
    gateway held at once stays within the budget."""
    import re
    import threading

    proc, uri = start_server(str(tmp_path / "data"), "--http-result-limit", "8MB")
    try:
        make_month(uri, "2026-05")
        http = Http(proc.http_url)
        sql = "SELECT i, repeat('x', 50) AS pad FROM range(100000) t(i)"
        answers = []

        def run():
            answers.append(http.post("/api/v1/query/async", {"query": sql, "month": "2026-05"}))

        threads = [threading.Thread(target=run) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 12
        for a in answers:
            if a.status == 200:
                assert a.json["results"][0]["data"]["count"] == 100000
            else:
                assert a.status == 503, a
                assert a.headers["Retry-After"] == "1"
                assert "retry" in a.json["error"]
        assert any(a.status == 200 for a in answers)
        text = http.get("/metrics").body
        peak = int(float(re.search(r"^duckflock_http_json_peak_bytes (\S+)$", text, re.M).group(1)))
        assert 6 * MB <= peak <= 32 * MB, peak
    finally:
        stop(proc)


def test_a_csv_of_2_5_gb_streams_to_adbc_under_512mb(tmp_path):
    """The original tool's failure: a 2.5 GB CSV took 8 GB+. Scanned in
    place and streamed whole to an ADBC client, it keeps the server's peak
    RSS within --memory-limit 512MB + 256 MB."""
    data = tmp_path / "data"
    files = data / "files"
    os.makedirs(files)
    n = 52_000_000  # about 2.53 GB of CSV
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i, i * 7 % 1000003 AS j, md5(i::VARCHAR) AS s FROM range({n}) t(i)) "
                f"TO '{files}/big.csv' (HEADER)")
    con.close()
    size = os.path.getsize(files / "big.csv")
    assert size >= 2_500_000_000, size
    proc, uri = start_server(str(data), "--memory-limit", "512MB")
    try:
        with adbc(uri, "2026-05") as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM read_csv('big.csv')")
            rows, total = 0, 0
            for batch in cur.fetch_record_batch():
                rows += batch.num_rows
                total += pc.sum(batch.column("j")).as_py() or 0
            assert rows == n
            assert total == expected_j_sum(n)
        peak = vm_hwm(proc.pid)
        # --memory-limit 512MB is 512,000,000 bytes.
        assert peak <= 512_000_000 + 256 * MB, f"peak RSS {peak / MB:.0f} MiB"
    finally:
        stop(proc)


def expected_j_sum(n):
    """sum(i * 7 % 1000003) for i < n, computed by in-process DuckDB."""
    return duckdb.sql(f"SELECT sum(i * 7 % 1000003)::BIGINT FROM range({n}) t(i)").fetchall()[0][0]


def test_a_hash_join_and_an_aggregate_bigger_than_the_limit_spill(tmp_path):
    """Under --memory-limit 400MB: a hash join whose build side and an
    aggregate whose groups are each larger than the limit complete by
    spilling, with the answers in-process DuckDB gives."""
    side = "SELECT i, md5(i::VARCHAR) AS s, i * {k} AS j FROM range(8000000) t(i)"
    join = (f"SELECT count(*) AS n, sum(a.j + b.j)::BIGINT AS t FROM ({side.format(k=3)}) a "
            f"JOIN ({side.format(k=5)}) b USING (s)")
    agg = ("SELECT count(*) AS n, sum(c)::BIGINT AS t FROM (SELECT s, count(*) AS c, max(i) AS m "
           "FROM (SELECT i, md5((i % 12000000)::VARCHAR) AS s FROM range(16000000) t(i)) GROUP BY s)")
    want = {q: duckdb.sql(q).fetchall() for q in (join, agg)}
    proc, uri = start_server(str(tmp_path / "data"), "--memory-limit", "400MB")
    try:
        make_month(uri, "2026-05")
        with adbc(uri, "2026-05") as conn, conn.cursor() as cur:
            for q in (join, agg):
                cur.execute(q)
                assert cur.fetchall() == want[q]
        assert vm_hwm(proc.pid) <= 400_000_000 + 256 * MB
    finally:
        stop(proc)
