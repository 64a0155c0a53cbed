"""Files in place (--files-dir): SQL reads CSV, Parquet, JSON and text files
under the files dirs with DuckDB's own readers (globs, '**', hive partitions,
replacement scans) and nothing else on the machine; COPY and SET stay
refused; tables made from files replicate as rows (a replica never reads the
file); the listing (list_files action, GET /api/v1/files); start-up checks of
the layout, of ports in use, and of the spill directory. Real server, real
files, results compared with in-process DuckDB (duckdb==2.0.0, the server's
engine version)."""

import datetime
import os
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import pytest

import conftest
from conftest import action, start_server, stop
from flight_raw import Client
from http_client import Http
from replicas import compare_month

# ADBC statements left open by a stopped server complain when collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MONTH = "2026-03"
OTHER_MONTH = "2026-04"
PRIMARY = f"{MONTH}/node_0"
ROW_GROUP = 122_880
# gRPC PERMISSION_DENIED as the ADBC driver reports it.
UNAUTHORIZED = adbc_driver_manager.AdbcStatusCode.UNAUTHORIZED
# DuckDB's own refusal (allowed_directories with external access off).
DENIED = "Permission Error"


# ---------------------------------------------------------------- helpers


def binary():
    return os.environ.get("DUCKFLOCK_BIN", "duckflock")


def adbc(uri, month=MONTH, autocommit=True):
    return conftest.adbc(uri, month, autocommit)


def sync(uri, month=MONTH):
    return conftest.sync(uri, month)


def rows(cur, sql):
    """A query through the server, as a list of dicts."""
    cur.execute(sql)
    return cur.fetch_arrow_table().to_pylist()


def reference(files_dir):
    """In-process DuckDB resolving relative names like the server (against
    the first files dir)."""
    con = duckdb.connect()
    run(con, f"SET file_search_path = '{files_dir}'")
    return con


def ref_rows(con, sql):
    return con.sql(sql).to_arrow_table().to_pylist()


def run(con, sql):
    """Runs `sql` on in-process DuckDB to the end (duckdb 2.0 refuses other
    work on a connection while a result is unfinished); returns its rows."""
    return con.execute(sql).fetchall()


def one(con, sql):
    return run(con, sql)[0][0]


def duck(sql):
    """Runs `sql` in a throwaway in-process DuckDB (to write files)."""
    con = duckdb.connect()
    run(con, sql)
    con.close()


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def assert_same_table(got, want):
    """Same columns and rows in the same order (values compared through
    Arrow; Python values where the Arrow types differ)."""
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got.column(name), want.column(name)
        try:
            same = g.cast(w.type).equals(w)
        except Exception:
            same = False
        if not same:
            assert g.to_pylist() == w.to_pylist(), name


def refused(cur, sql):
    """The error the server answers `sql` with (it must refuse it)."""
    with pytest.raises(adbc_driver_manager.Error) as e:
        cur.execute(sql)
        cur.fetchall()
    return e.value


def assert_file_refused(cur, sql):
    err = refused(cur, sql)
    assert DENIED in str(err), f"{sql}: {err}"
    assert err.status_code == UNAUTHORIZED, f"{sql}: {err.status_code} {err}"


def tree(root):
    """Every path under `root` (files and folders, relative), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def absolute(files_dir, names):
    """Glob results as absolute paths (DuckDB may answer either way)."""
    return sorted(n if os.path.isabs(n) else os.path.join(files_dir, n) for n in names)


def node_status(uri, month=MONTH):
    return action(uri, "node_status", {"month": month})["months"][0]["nodes"]


def assert_replicas_clean(uri, replicas, month=MONTH):
    """Every node healthy and caught up; no replica ever failed an apply or
    a verification (a replica that re-read a file would have)."""
    st = node_status(uri, month)
    assert len(st) == replicas + 1, st
    assert [n["state"] for n in st] == ["healthy"] * (replicas + 1), st
    for n in st[1:]:
        assert n["lag_lsn"] == 0, n
        assert n["apply_failures"] == 0 and n["mismatches"] == 0, n


def assert_primary_equals_reference(ref, month_dir, tables):
    """The stopped server's primary holds what in-process DuckDB holds:
    same column types, same rows (EXCEPT ALL both ways)."""
    run(ref, f"ATTACH '{os.path.join(month_dir, 'node_0.db')}' AS p (READ_ONLY)")
    try:
        for t in tables:
            cols = """SELECT column_name, data_type FROM duckdb_columns()
                      WHERE database_name = '{}' AND table_name = '{}' ORDER BY column_index"""
            assert run(ref, cols.format("p", t)) == run(ref, cols.format("memory", t)), t
            a = one(ref, f"SELECT count(*) FROM (FROM p.{t} EXCEPT ALL FROM memory.{t})")
            b = one(ref, f"SELECT count(*) FROM (FROM memory.{t} EXCEPT ALL FROM p.{t})")
            n = one(ref, f"SELECT count(*) FROM p.{t}")
            m = one(ref, f"SELECT count(*) FROM memory.{t}")
            assert (a, b, n) == (0, 0, m), f"{t}: {a} rows only on the primary, {b} only in DuckDB ({n} vs {m})"
    finally:
        run(ref, "DETACH p")


def serve_expecting_failure(data_dir, *args):
    """Runs `duckflock serve` that must refuse to start (with RUST_BACKTRACE
    on, so a backtrace would show); returns (exit code, stdout + stderr)."""
    proc = subprocess.Popen(
        [binary(), "serve", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "duckflock=warn", "RUST_BACKTRACE": "1"},
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the server started instead of refusing to: {out}{err}")
    return proc.returncode, out + err


def canonical(tmp_path):
    """tmp_path with symlinks resolved (the server reports canonical paths)."""
    return Path(os.path.realpath(tmp_path))


def host_port(url):
    """'127.0.0.1:PORT' of a grpc:// or http:// URL."""
    return url.split("://", 1)[1].rstrip("/")


# ------------------------------------------------- the files the tests read


def make_read_files(files, second, evil):
    """Files for the reading test; every count below follows from them."""
    for d in (files, second, evil):
        os.makedirs(d, exist_ok=True)
    duck(f"COPY (SELECT i, 'name ' || i AS name, i % 7 AS g FROM range(1000) t(i)) TO '{files}/sales.csv' (HEADER)")
    duck(f"COPY (SELECT i AS order_id, i % 1000 AS customer, (i * 0.5)::DECIMAL(12, 2) AS amount FROM range(5000) t(i)) "
         f"TO '{files}/orders.parquet' (FORMAT parquet)")
    duck(f"COPY (SELECT i AS id, 'k' || (i % 3) AS kind FROM range(300) t(i)) TO '{files}/events.json' (FORMAT json)")
    duck(f"COPY (SELECT i AS id FROM range(10) t(i)) TO '{files}/array.json' (FORMAT json, ARRAY true)")
    write_text(f"{files}/notes.txt", "hello files\n")
    os.makedirs(f"{files}/sales", exist_ok=True)
    duck(f"COPY (SELECT i FROM range(0, 100) t(i)) TO '{files}/sales/part-0.parquet' (FORMAT parquet)")
    duck(f"COPY (SELECT i FROM range(100, 250) t(i)) TO '{files}/sales/part-1.parquet' (FORMAT parquet)")
    for year, month, n in [(2024, 1, 10), (2024, 2, 20), (2025, 1, 30)]:
        d = f"{files}/hive/year={year}/month={month}"
        os.makedirs(d, exist_ok=True)
        duck(f"COPY (SELECT i AS v FROM range({n}) t(i)) TO '{d}/data.parquet' (FORMAT parquet)")
    os.makedirs(f"{files}/deep/a/b/c", exist_ok=True)
    duck(f"COPY (SELECT 42 AS answer) TO '{files}/deep/a/b/c/deep.parquet' (FORMAT parquet)")
    write_text(f"{files}/dup.csv", "which\n1\n")
    write_text(f"{second}/dup.csv", "which\n2\n")
    duck(f"COPY (SELECT i AS m FROM range(5) t(i)) TO '{second}/more.csv' (HEADER)")
    write_text(f"{evil}/x.csv", "x\n1\n")


# (SQL, the answer; None: only compared with in-process DuckDB). {second}:
# the second files dir, {files}: the first, by absolute path.
READS = [
    ("SELECT count(*) AS n, sum(i) AS s FROM read_csv('sales.csv')", [{"n": 1000, "s": 499500}]),
    ("SELECT count(*) AS n, sum(i) AS s FROM read_csv_auto('sales.csv')", [{"n": 1000, "s": 499500}]),
    ("SELECT count(*) AS n FROM read_csv('{files}/sales.csv')", [{"n": 1000}]),
    ("SELECT g, count(*) AS n, min(name) AS lo FROM 'sales.csv' GROUP BY g ORDER BY g", None),
    ("SELECT count(*) AS n, sum(amount) AS s FROM read_parquet('orders.parquet')",
     [{"n": 5000, "s": Decimal("6248750.00")}]),
    ("SELECT * FROM 'orders.parquet' WHERE order_id IN (0, 1, 4999) ORDER BY order_id",
     [{"order_id": 0, "customer": 0, "amount": Decimal("0.00")},
      {"order_id": 1, "customer": 1, "amount": Decimal("0.50")},
      {"order_id": 4999, "customer": 999, "amount": Decimal("2499.50")}]),
    ("SELECT kind, count(*) AS n FROM read_json('events.json') GROUP BY kind ORDER BY kind",
     [{"kind": "k0", "n": 100}, {"kind": "k1", "n": 100}, {"kind": "k2", "n": 100}]),
    ("SELECT count(*) AS n, sum(id) AS s FROM read_json_auto('events.json')", [{"n": 300, "s": 44850}]),
    ("SELECT sum(id) AS s FROM 'events.json'", [{"s": 44850}]),
    ("SELECT sum(id) AS s FROM 'array.json'", [{"s": 45}]),
    ("SELECT content FROM read_text('notes.txt')", [{"content": "hello files\n"}]),
    ("SELECT size, content FROM read_blob('notes.txt')", [{"size": 12, "content": b"hello files\n"}]),
    ("SELECT count(*) AS n, sum(i) AS s FROM read_parquet('sales/*.parquet')", [{"n": 250, "s": 31125}]),
    ("SELECT year, month, count(*) AS n, sum(v) AS s FROM read_parquet('hive/*/*/*.parquet', hive_partitioning=true) "
     "GROUP BY ALL ORDER BY ALL",
     [{"year": 2024, "month": 1, "n": 10, "s": 45}, {"year": 2024, "month": 2, "n": 20, "s": 190},
      {"year": 2025, "month": 1, "n": 30, "s": 435}]),
    ("SELECT count(*) AS n FROM read_parquet('hive/**/*.parquet', hive_partitioning=true) WHERE year = 2024",
     [{"n": 30}]),
    ("SELECT answer FROM read_parquet('**/deep.parquet')", [{"answer": 42}]),
    ("SELECT count(*) AS n FROM glob('**/*.parquet')", [{"n": 7}]),
    ("SELECT sum(m) AS s FROM read_csv('{second}/more.csv')", [{"s": 10}]),
    ("SELECT which FROM read_csv('dup.csv')", [{"which": 1}]),
    ("SELECT which FROM read_csv('{second}/dup.csv')", [{"which": 2}]),
    ("SELECT which FROM '{files}/dup.csv'", [{"which": 1}]),
]


def make_join_files(files):
    """customers.csv, orders.parquet and items.json: more rows than a row
    group where it matters, NULLs, quotes, commas and non-ASCII text."""
    duck(f"""COPY (SELECT i AS id,
                    CASE WHEN i % 11 = 0 THEN 'Müller, "Jr" ' || i ELSE 'cust ' || i END AS name,
                    CASE WHEN i % 13 = 0 THEN NULL ELSE ['Zürich', 'Oslo', 'Lima', 'Kyōto'][1 + i % 4] END AS city,
                    DATE '2020-01-01' + (i % 1500)::INTEGER AS signup
             FROM range(5000) t(i)) TO '{files}/customers.csv' (HEADER)""")
    duck(f"""COPY (SELECT i AS order_id, (i * 7) % 5100 AS customer_id,
                    ((i % 10000) * 0.25)::DECIMAL(10, 2) AS amount,
                    TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i * 37) AS ordered_at
             FROM range(140000) t(i)) TO '{files}/orders.parquet' (FORMAT parquet)""")
    duck(f"""COPY (SELECT (i * 3) % 150000 AS order_id, 'sku-' || (i % 97) AS sku,
                    CASE WHEN i % 17 = 0 THEN NULL ELSE i % 9 END AS qty,
                    (i % 1000) / 8 AS price
             FROM range(150000) t(i)) TO '{files}/items.json' (FORMAT json)""")


JOINS = [
    """SELECT c.id AS customer, c.name, c.city, c.signup, o.order_id, o.amount, o.ordered_at,
              i.sku, i.qty, i.price
       FROM read_csv('customers.csv') c
       JOIN read_parquet('orders.parquet') o ON o.customer_id = c.id
       JOIN read_json('items.json') i ON i.order_id = o.order_id
       ORDER BY ALL""",
    """SELECT c.city, count(DISTINCT c.id) AS customers, count(DISTINCT o.order_id) AS orders,
              count(i.sku) AS items, sum(i.qty * o.amount) AS revenue, max(o.ordered_at) AS last
       FROM 'customers.csv' c
       LEFT JOIN 'orders.parquet' o ON o.customer_id = c.id
       LEFT JOIN 'items.json' i ON i.order_id = o.order_id
       GROUP BY ALL ORDER BY ALL""",
]


# --------------------------------------------------------------- the tests


def test_files_are_read_in_place(tmp_path):
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    files, second, evil = tmp_path / "files", tmp_path / "second", tmp_path / "files_evil"
    make_read_files(files, second, evil)
    proc, uri = start_server(str(data), "--replicas", "2", "--files-dir", str(files), "--files-dir", str(second))
    try:
        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE TABLE marker AS SELECT 1 AS i")
        sync(uri)
        ref = reference(files)
        for sql, want in READS:
            sql = sql.format(files=files, second=second)
            got = rows(cur, sql)
            assert got == ref_rows(ref, sql), sql
            if want is not None:
                assert got == want, sql
            else:
                assert got, sql
        # glob() lists the files (DuckDB answers with absolute paths).
        got = [r["file"] for r in rows(cur, "SELECT file FROM glob('*.csv')")]
        assert absolute(files, got) == [f"{files}/dup.csv", f"{files}/sales.csv"]
        got = [r["file"] for r in rows(cur, "SELECT file FROM glob('**/*.parquet')")]
        assert absolute(files, got) == sorted(
            [f"{files}/orders.parquet", f"{files}/sales/part-0.parquet", f"{files}/sales/part-1.parquet",
             f"{files}/hive/year=2024/month=1/data.parquet", f"{files}/hive/year=2024/month=2/data.parquet",
             f"{files}/hive/year=2025/month=1/data.parquet", f"{files}/deep/a/b/c/deep.parquet"])
        got = [r["file"] for r in rows(cur, f"SELECT file FROM glob('{second}/*.csv')")]
        assert absolute(second, got) == [f"{second}/dup.csv", f"{second}/more.csv"]
        # A directory beside the files dir whose name merely starts the same
        # is not inside it.
        assert_file_refused(cur, f"SELECT * FROM read_csv('{evil}/x.csv')")
        # Reads run on the replicas, which read the files in place too.
        c = Client(uri)
        t, node = c.query("SELECT count(*) AS n FROM read_csv('sales.csv')", month=MONTH)
        assert t.to_pylist() == [{"n": 1000}]
        assert node != PRIMARY, node
        c.close()
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_everything_outside_the_files_dirs_is_refused(tmp_path):
    # The default files dir, <data-dir>/files: the node files, other months
    # and the data dir itself are one '..' away.
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    files = data / "files"
    outside = tmp_path / "outside"
    assert not data.exists()
    proc, uri = start_server(str(data), "--replicas", "2")
    try:
        assert files.is_dir(), "the default files dir is created at start-up"
        os.makedirs(outside)
        write_text(f"{outside}/secret.csv", "s\nsecret\n")
        write_text(f"{data}/secret.csv", "s\nsecret\n")
        duck(f"COPY (SELECT i, 'v' || i AS s FROM range(100) t(i)) TO '{files}/sales.csv' (HEADER)")
        write_text(f"{files}/sub/ok.csv", "n\n7\n")
        os.symlink(f"{outside}/secret.csv", f"{files}/link.csv")
        os.symlink(str(outside), f"{files}/outdir")
        os.symlink(f"{data}/secret.csv", f"{files}/up.csv")
        out_rel = os.path.relpath(f"{outside}/secret.csv", files)  # ../../outside/secret.csv

        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE TABLE marker AS SELECT 1 AS i")
        other = adbc(uri, OTHER_MONTH)
        ocur = other.cursor()
        ocur.execute("CREATE TABLE o AS SELECT 1 AS i")
        sync(uri)
        sync(uri, OTHER_MONTH)
        other_file = data / OTHER_MONTH / "node_0.db"
        assert other_file.exists() and (data / OTHER_MONTH / "node_1.db").exists()

        # What lies inside is readable, '..' that stays inside included.
        assert rows(cur, "SELECT count(*) AS n, sum(i) AS s FROM read_csv('sales.csv')") == [{"n": 100, "s": 4950}]
        assert rows(cur, f"SELECT count(*) AS n FROM read_csv('{files}/sales.csv')") == [{"n": 100}]
        assert rows(cur, "SELECT count(*) AS n FROM read_csv('sub/../sales.csv')") == [{"n": 100}]
        assert rows(cur, "SELECT n FROM read_csv('sub/ok.csv')") == [{"n": 7}]

        for sql in [
            f"SELECT * FROM read_csv('{outside}/secret.csv')",
            f"SELECT * FROM read_csv('{out_rel}')",
            f"SELECT * FROM read_csv('sub/../{out_rel}')",
            f"SELECT * FROM '{outside}/secret.csv'",
            f"SELECT * FROM read_csv(['sales.csv', '{outside}/secret.csv'])",
            f"SELECT * FROM glob('{outside}/*')",
            f"SELECT * FROM read_parquet('{outside}/**/*.parquet')",
            # Symlinks inside the files dir that lead out.
            "SELECT * FROM read_csv('link.csv')",
            "SELECT * FROM read_csv('outdir/secret.csv')",
            "SELECT * FROM read_csv('outdir/*.csv')",
            "SELECT * FROM read_csv('up.csv')",
            # The data dir: a file in it, other months' node files.
            f"SELECT * FROM read_csv('{data}/secret.csv')",
            "SELECT * FROM read_csv('../secret.csv')",
            f"SELECT * FROM read_csv('{files}/../secret.csv')",
            f"SELECT size FROM read_blob('{other_file}')",
            f"SELECT size FROM read_blob('../{OTHER_MONTH}/node_1.db')",
            f"SELECT count(*) FROM read_text('{data}/{OTHER_MONTH}/*')",
            f"SELECT * FROM glob('{data}/*')",
            "SELECT * FROM glob('../*')",
            # The rest of the machine.
            "SELECT content FROM read_text('/etc/passwd')",
            "SELECT * FROM read_csv('/etc/passwd')",
        ]:
            assert_file_refused(cur, sql)
        # Writes that read outside are refused too and leave nothing behind.
        assert_file_refused(cur, f"CREATE TABLE stolen AS SELECT * FROM read_csv('{outside}/secret.csv')")
        assert_file_refused(cur, f"INSERT INTO marker SELECT 2 FROM read_csv('{data}/secret.csv')")
        assert rows(cur, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'stolen'") == [{"n": 0}]
        assert rows(cur, "SELECT count(*) AS n FROM marker") == [{"n": 1}]

        # COPY would write into (or load from) the files dir: refused, nothing
        # written. (In-process DuckDB with the same settings runs all of them.)
        cur.execute("CREATE TABLE t (i BIGINT, s VARCHAR)")
        before = tree(files)
        for sql in [
            "COPY (SELECT 1 AS i) TO 'copied.csv'",
            "COPY t TO 'copied.parquet' (FORMAT parquet)",
            "COPY t FROM 'sales.csv'",
            "COPY t FROM 'sales.csv' (HEADER)",
        ]:
            err = refused(cur, sql)
            assert err.status_code == UNAUTHORIZED, f"{sql}: {err}"
            assert "COPY" in str(err), f"{sql}: {err}"
        # EXPORT DATABASE is refused too, but DuckDB creates its target
        # directory while binding the statement, before the server learns
        # its type (the C API has no parse-only statement type): at most an
        # empty directory is left, nothing is written into it.
        err = refused(cur, "EXPORT DATABASE 'exported'")
        assert err.status_code == UNAUTHORIZED, err
        assert "COPY" in str(err), err
        if (files / "exported").exists():
            assert os.listdir(files / "exported") == []
            os.rmdir(files / "exported")
        err = refused(cur, f"COPY (SELECT 1 AS i) TO '{outside}/copied.csv'")
        assert err.status_code == UNAUTHORIZED, err
        assert tree(files) == before
        assert not os.path.exists(f"{outside}/copied.csv")
        assert rows(cur, "SELECT count(*) AS n FROM t") == [{"n": 0}]

        # Settings stay out of reach, the sandbox's first of all.
        for sql in [
            "SET enable_external_access = true",
            "SET GLOBAL enable_external_access = true",
            "RESET enable_external_access",
            "SET allowed_directories = ['/']",
            "SET file_search_path = '/'",
            "PRAGMA memory_limit='1GB'",
            "PRAGMA threads=1",
        ]:
            err = refused(cur, sql)
            assert err.status_code == UNAUTHORIZED, f"{sql}: {err}"
            assert "SET" in str(err), f"{sql}: {err}"
        assert str(rows(cur, "SELECT current_setting('enable_external_access') AS v")[0]["v"]).lower() == "false"
        assert_file_refused(cur, f"SELECT * FROM read_csv('{outside}/secret.csv')")
        assert rows(cur, "SELECT count(*) AS n FROM read_csv('sales.csv')") == [{"n": 100}]
        ocur.close()
        other.close()
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_listing(tmp_path):
    tmp_path = canonical(tmp_path)
    import openpyxl

    data = tmp_path / "data"
    files, second, outside = tmp_path / "files", tmp_path / "second", tmp_path / "outside"
    for d in (files, second, outside):
        os.makedirs(d)
    duck(f"COPY (SELECT i, 'v' || i AS s FROM range(1000) t(i)) TO '{files}/sales.csv' (HEADER)")
    duck(f"COPY (SELECT i FROM range(2000) t(i)) TO '{files}/orders.parquet' (FORMAT parquet)")
    duck(f"COPY (SELECT i FROM range(30) t(i)) TO '{files}/events.json' (FORMAT json)")
    for year, n in [(2024, 4), (2025, 5)]:
        os.makedirs(f"{files}/hive/year={year}")
        duck(f"COPY (SELECT i FROM range({n}) t(i)) TO '{files}/hive/year={year}/p.parquet' (FORMAT parquet)")
    wb = openpyxl.Workbook()
    wb.active.append(["a", "b"])
    wb.active.append([1, "x"])
    wb.save(f"{files}/book.xlsx")
    write_text(f"{files}/notes.txt", "some notes\n")
    write_text(f"{files}/README", "no extension\n")
    write_text(f"{files}/blob.bin", "\x00\x01")
    duck(f"COPY (SELECT i FROM range(7) t(i)) TO '{second}/more.csv' (HEADER)")
    write_text(f"{outside}/secret.csv", "s\nsecret\n")
    os.symlink(f"{outside}/secret.csv", f"{files}/link.csv")
    os.symlink(str(outside), f"{files}/outdir")
    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    os.utime(f"{files}/sales.csv", (stamp.timestamp(), stamp.timestamp()))

    first, sec = os.path.realpath(files), os.path.realpath(second)
    formats = {
        "sales.csv": "csv", "orders.parquet": "parquet", "events.json": "json",
        "hive/year=2024/p.parquet": "parquet", "hive/year=2025/p.parquet": "parquet",
        "book.xlsx": "xlsx", "notes.txt": "text", "README": None, "blob.bin": None,
        f"{sec}/more.csv": "csv",
    }
    counts = {"sales.csv": 1000, "orders.parquet": 2000, "events.json": 30,
              "hive/year=2024/p.parquet": 4, "hive/year=2025/p.parquet": 5, f"{sec}/more.csv": 7}

    proc, uri = start_server(str(data), "--replicas", "2", "--files-dir", str(files), "--files-dir", str(second))
    try:
        listed = action(uri, "list_files", {})["files"]
        by_name = {f["name"]: f for f in listed}
        assert len(by_name) == len(listed)
        # Names relative to the first files dir, absolute for the second;
        # the symlinks that lead out are not there (nor what they lead to).
        assert sorted(by_name) == sorted(formats)
        for name, fmt in formats.items():
            f = by_name[name]
            path = name if os.path.isabs(name) else os.path.join(first, name)
            assert f["format"] == fmt, f
            assert f["path"] == path, f
            assert f["size"] == os.path.getsize(path), f
            assert f["modified"], f
        modified = datetime.datetime.fromisoformat(by_name["sales.csv"]["modified"].replace("Z", "+00:00"))
        assert modified == stamp, by_name["sales.csv"]

        # A listed name is what SQL takes.
        conn = adbc(uri)
        cur = conn.cursor()
        for name, n in counts.items():
            assert rows(cur, f"SELECT count(*) AS n FROM '{name}'") == [{"n": n}], name

        # The HTTP gateway answers the same entries.
        answer = Http(proc.http_url).get("/api/v1/files")
        assert answer.status == 200, answer
        body = answer.json
        assert body["status"] == "success", body
        assert body["count"] == len(listed)
        assert sorted(body["files"], key=lambda f: f["name"]) == sorted(listed, key=lambda f: f["name"])

        # The listing is of the directory now, not of start-up.
        os.remove(f"{files}/notes.txt")
        os.makedirs(f"{files}/hive/year=2026")
        duck(f"COPY (SELECT 1 AS i) TO '{files}/hive/year=2026/late.parquet' (FORMAT parquet)")
        names = {f["name"]: f["format"] for f in action(uri, "list_files", {})["files"]}
        assert "notes.txt" not in names
        assert names["hive/year=2026/late.parquet"] == "parquet"
        assert len(names) == len(formats)
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_tables_made_from_files_replicate_without_the_files(tmp_path):
    # The replicas lag (every batch waits 200 ms) and the source files are
    # deleted or rewritten right after each statement: a replica that read
    # the file itself would fail or get other rows.
    tmp_path = canonical(tmp_path)
    replicas = 7
    data = tmp_path / "data"
    files = tmp_path / "files"
    os.makedirs(files)
    duck(f"""COPY (SELECT i, i * 2 AS j, 'v' || i AS s, DATE '2024-01-01' + (i % 366)::INTEGER AS d
             FROM range(300000) t(i)) TO '{files}/sales.csv' (HEADER)""")
    duck(f"""COPY (SELECT i, i * 3 AS k, 'p' || i AS s, ((i % 1000) * 0.25)::DECIMAL(10, 2) AS amount
             FROM range(300000) t(i)) TO '{files}/big.parquet' (FORMAT parquet)""")
    duck(f"""COPY (SELECT i AS id, 'e' || (i % 97) AS kind, i % 5 = 0 AS flag
             FROM range(150000) t(i)) TO '{files}/events.json' (FORMAT json)""")
    duck(f"COPY (SELECT i, 't' || i AS s FROM range(130000) t(i)) TO '{files}/tx.csv' (HEADER)")
    ref = reference(files)
    proc, uri = start_server(str(data), "--replicas", str(replicas), "--apply-delay-ms", "200",
                             "--files-dir", str(files))
    try:
        conn = adbc(uri)
        cur = conn.cursor()

        def both(sql):
            cur.execute(sql)
            run(ref, sql)

        both("CREATE TABLE sales AS SELECT * FROM read_csv('sales.csv')")
        os.remove(f"{files}/sales.csv")
        both("CREATE TABLE orders AS SELECT * FROM 'big.parquet'")
        both("INSERT INTO orders SELECT * FROM read_parquet('big.parquet') WHERE i % 2 = 0")
        # The same file name, other rows: what was loaded before stays.
        duck(f"""COPY (SELECT i, -i AS k, 'changed' || i AS s, 0.5::DECIMAL(10, 2) AS amount
                 FROM range(200000) t(i)) TO '{files}/big.parquet' (FORMAT parquet)""")
        both("INSERT INTO orders SELECT * FROM read_parquet('big.parquet') WHERE i < 130000")
        both("CREATE TABLE events (id BIGINT PRIMARY KEY, kind VARCHAR, flag BOOLEAN)")
        both("INSERT INTO events SELECT * FROM read_json('events.json')")
        os.remove(f"{files}/events.json")
        os.remove(f"{files}/big.parquet")
        both("UPDATE events SET kind = kind || '!' WHERE id % 3 = 0")
        both("DELETE FROM sales WHERE i % 5 = 0")
        both("INSERT INTO sales VALUES (-1, -2, 'after', DATE '2000-01-01')")
        both("CREATE TABLE tx (i BIGINT, s VARCHAR)")
        # Loaded in a Flight SQL transaction.
        tconn = adbc(uri, autocommit=False)
        tcur = tconn.cursor()
        tcur.execute("INSERT INTO tx SELECT * FROM read_csv('tx.csv')")
        tcur.execute("INSERT INTO tx SELECT i + 1000000, s FROM read_csv('tx.csv') WHERE i < 10")
        tconn.commit()
        tcur.close()
        tconn.close()
        run(ref, "INSERT INTO tx SELECT * FROM read_csv('tx.csv')")
        run(ref, "INSERT INTO tx SELECT i + 1000000, s FROM read_csv('tx.csv') WHERE i < 10")
        os.remove(f"{files}/tx.csv")
        both("INSERT INTO tx VALUES (-1, 'last')")

        tables = ["sales", "orders", "events", "tx"]
        want = {t: one(ref, f"SELECT count(*) FROM {t}") for t in tables}
        assert want == {"sales": 240001, "orders": 580000, "events": 150000, "tx": 130011}
        # Reads (on the replicas) see the rows.
        for t in tables:
            digest = f"SELECT count(*) AS n, sum(hash(x))::VARCHAR AS h FROM {t} x"
            assert rows(cur, digest) == ref_rows(ref, digest), t
        sync(uri)
        v = action(uri, "verify_replicas", {"month": MONTH})["months"][0]
        assert v["ok"] and v["tables"] == len(tables) and v["rows"] == sum(want.values()), v
        assert_replicas_clean(uri, replicas)
        cur.close()
        conn.close()
    finally:
        stop(proc)
    month_dir = os.path.join(data, MONTH)
    assert compare_month(month_dir, replicas) == []
    assert_primary_equals_reference(ref, month_dir, tables)
    ref.close()


def test_volatile_create_table_as_is_the_same_on_every_replica(tmp_path):
    tmp_path = canonical(tmp_path)
    replicas = 7
    data = tmp_path / "data"
    files = tmp_path / "files"
    os.makedirs(files)
    duck(f"COPY (SELECT i, 'v' || i AS s FROM range(150000) t(i)) TO '{files}/sales.csv' (HEADER)")
    proc, uri = start_server(str(data), "--replicas", str(replicas), "--files-dir", str(files))
    try:
        conn = adbc(uri)
        cur = conn.cursor()
        for sql in [
            "CREATE TABLE r AS SELECT i, random() AS x, now() AS t, uuid() AS u FROM range(5000) t(i)",
            "CREATE TABLE rbig AS SELECT i, random() AS x, gen_random_uuid()::VARCHAR AS u FROM range(300000) t(i)",
            "CREATE TABLE fr AS SELECT *, random() AS x, current_timestamp AS loaded FROM read_csv('sales.csv') "
            "WHERE random() < 0.5",
            "CREATE TABLE sampled AS SELECT * FROM rbig USING SAMPLE 10 PERCENT (bernoulli)",
            "CREATE TABLE shuffled AS SELECT i, row_number() OVER (ORDER BY r) AS rn "
            "FROM (SELECT i, random() AS r FROM range(130000) t(i))",
            "CREATE OR REPLACE TABLE r AS SELECT i, random() AS x, now() AS t, uuid() AS u FROM range(5000) t(i)",
        ]:
            cur.execute(sql)
        tconn = adbc(uri, autocommit=False)
        tcur = tconn.cursor()
        tcur.execute("INSERT INTO r SELECT i + 5000, random(), now(), uuid() FROM range(1000) t(i)")
        tcur.execute("INSERT INTO fr SELECT *, random(), now() FROM read_csv('sales.csv') WHERE random() < 0.1")
        tconn.commit()
        tcur.close()
        tconn.close()
        os.remove(f"{files}/sales.csv")
        cur.execute("UPDATE r SET x = random() WHERE i % 2 = 0")
        # Not vacuous: the values are random.
        got = rows(cur, "SELECT count(*) AS n, count(DISTINCT x) AS dx, count(DISTINCT u) AS du FROM r")[0]
        assert got["n"] == 6000 and got["dx"] > 5990 and got["du"] == 6000, got
        n_fr = rows(cur, "SELECT count(*) AS n FROM fr")[0]["n"]
        assert 60000 < n_fr < 105000, n_fr
        n_sampled = rows(cur, "SELECT count(*) AS n FROM sampled")[0]["n"]
        assert 0 < n_sampled < 300000, n_sampled
        assert rows(cur, "SELECT count(*) AS n, count(DISTINCT rn) AS d FROM shuffled") == [{"n": 130000, "d": 130000}]
        sync(uri)
        v = action(uri, "verify_replicas", {"month": MONTH})["months"][0]
        assert v["ok"] and v["tables"] == 5, v
        assert v["rows"] == 6000 + 300000 + n_fr + n_sampled + 130000, v
        assert_replicas_clean(uri, replicas)
        cur.close()
        conn.close()
    finally:
        stop(proc)
    month_dir = os.path.join(data, MONTH)
    assert compare_month(month_dir, replicas) == []
    con = duckdb.connect(os.path.join(month_dir, "node_3.db"), read_only=True)
    assert run(con, "SELECT count(*), count(DISTINCT x) > 5990 FROM r") == [(6000, True)]
    assert run(con, "SELECT count(*) FROM fr") == [(n_fr,)]
    con.close()


def test_csv_parquet_json_join_matches_duckdb(tmp_path):
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    files = tmp_path / "files"
    os.makedirs(files)
    make_join_files(files)
    ref = reference(files)
    proc, uri = start_server(str(data), "--replicas", "2", "--files-dir", str(files))
    try:
        conn = adbc(uri)
        cur = conn.cursor()
        for sql in JOINS:
            cur.execute(sql)
            got = cur.fetch_arrow_table()
            want = ref.sql(sql).to_arrow_table()
            assert want.num_rows > 0, sql
            assert_same_table(got, want)
        # The join loaded into a table and read back (a write on the
        # primary, a read on a replica) is the same.
        cur.execute(f"CREATE TABLE joined AS {JOINS[0]}")
        cur.execute("SELECT * FROM joined ORDER BY ALL")
        got = cur.fetch_arrow_table()
        want = ref.sql(JOINS[0]).to_arrow_table()
        assert want.num_rows > ROW_GROUP
        assert_same_table(got, want)
        cur.close()
        conn.close()
    finally:
        stop(proc)
    ref.close()


def test_layouts_that_expose_files_are_refused_at_start_up(tmp_path):
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    files = tmp_path / "files"
    ports = ["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    for args, flag in [
        # A files dir holding the data dir (its parent, or the dir itself).
        (["--files-dir", str(tmp_path)], "--files-dir"),
        (["--files-dir", str(data)], "--files-dir"),
        (["--files-dir", str(files), "--files-dir", str(tmp_path)], "--files-dir"),
        # Exports written where files are read.
        (["--files-dir", str(files), "--export-dir", str(files / "exports")], "--export-dir"),
    ]:
        rc, out = serve_expecting_failure(data, *ports, *args)
        assert rc != 0, out
        assert flag in out, out
        # Refused by the server, not by the command line parser.
        assert "unexpected argument" not in out and "Usage:" not in out, out
        assert "listening" not in out, out
        assert "stack backtrace" not in out.lower(), out
        # No month was opened.
        assert not list(data.glob("*/node_*.db"))
    # The same flags with the directories beside each other: it starts.
    proc, uri = start_server(str(data), "--replicas", "1", "--files-dir", str(files),
                             "--export-dir", str(tmp_path / "exports"))
    try:
        write_text(f"{files}/ok.csv", "n\n5\n")
        conn = adbc(uri)
        cur = conn.cursor()
        assert rows(cur, "SELECT n FROM read_csv('ok.csv')") == [{"n": 5}]
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_a_port_in_use_is_one_clear_error(tmp_path):
    tmp_path = canonical(tmp_path)
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "1")
    try:
        flight_addr, http_addr = host_port(uri), host_port(proc.http_url)
        rc, out = serve_expecting_failure(tmp_path / "data2", "--flight-addr", flight_addr, "--http-addr", "127.0.0.1:0")
        assert rc != 0, out
        assert f"Flight SQL: cannot listen on {flight_addr}" in out, out
        assert "stack backtrace" not in out.lower(), out
        assert "listening" not in out, out
        rc, out = serve_expecting_failure(tmp_path / "data3", "--flight-addr", "127.0.0.1:0", "--http-addr", http_addr)
        assert rc != 0, out
        assert f"HTTP gateway: cannot listen on {http_addr}" in out, out
        assert "stack backtrace" not in out.lower(), out
        assert "listening" not in out, out
        # The first server is unharmed.
        conn = adbc(uri)
        cur = conn.cursor()
        assert rows(cur, "SELECT 42 AS v") == [{"v": 42}]
        assert Http(proc.http_url).get("/health").status == 200
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_spill_directory_is_cleaned_at_start_up(tmp_path):
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    stale = data / ".tmp" / "duckdb_temp_999_0_stale.tmp"
    os.makedirs(stale.parent)
    stale.write_bytes(b"\0" * 4096)
    keep = data / "keep.txt"
    keep.write_text("not a spill file\n")
    proc, uri = start_server(str(data), "--replicas", "1")
    try:
        assert not stale.exists()
        assert keep.read_text() == "not a spill file\n"
        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE TABLE s AS SELECT range AS i FROM range(1000)")
        assert rows(cur, "SELECT count(*) AS n FROM s") == [{"n": 1000}]
        cur.close()
        conn.close()
    finally:
        stop(proc)


def test_a_view_over_a_file_works_on_every_node(tmp_path):
    """CREATE VIEW over a file ships as its text: every node has the same
    sandbox over the same files dir and reads the file when the view is
    queried, so the view answers the file's current rows on the primary and
    on each replica, and the catalogs stay equal."""
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    files = data / "files"
    os.makedirs(files)
    duck(f"COPY (SELECT i, i * 2 AS j FROM range(5000) t(i)) TO '{files}/v.csv' (HEADER)")
    proc, uri = start_server(str(data), "--replicas", "3")
    try:
        conn = adbc(uri)
        cur = conn.cursor()
        cur.execute("CREATE VIEW fv AS SELECT i, j FROM read_csv('v.csv')")
        sync(uri)
        seen = set()
        c = Client(uri)
        for _ in range(40):
            t, node = c.query("SELECT count(*) AS n, sum(j) AS s FROM fv", month=MONTH)
            assert t.to_pylist() == [{"n": 5000, "s": 2 * sum(range(5000))}], node
            seen.add(node)
        assert len(seen - {PRIMARY}) >= 2, seen  # several replicas answered
        # The view reads the file as it is now, on every node.
        duck(f"COPY (SELECT i, i * 2 AS j FROM range(10) t(i)) TO '{files}/v.csv' (HEADER)")
        for _ in range(10):
            t, node = c.query("SELECT count(*) AS n FROM fv", month=MONTH)
            assert t.to_pylist() == [{"n": 10}], node
        c.close()
        cur.close()
        conn.close()
    finally:
        stop(proc)
    assert compare_month(str(data / MONTH), 3) == []
