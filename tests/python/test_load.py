"""`duckflock load`: a CSV, Parquet, JSON or xlsx file sent to the running
server through bulk ingest; what the server holds afterwards is compared
with what in-process DuckDB reads from the same file."""

import os
import subprocess

import duckdb
import pytest

from test_adbc import same


def load(server, *args):
    addr = server.removeprefix("grpc://")
    return subprocess.run(
        [os.environ.get("DUCKFLOCK_BIN", "duckflock"), "load", "--flight-addr", addr, *args],
        capture_output=True, text=True, timeout=300,
    )


SAMPLE = """SELECT range AS id, 'name ' || range AS name, range / 8 AS score,
       TIMESTAMP '2026-01-01' + INTERVAL (range) SECOND AS ts, range % 3 = 0 AS flag,
       CASE WHEN range % 7 = 0 THEN NULL ELSE range % 100 END AS maybe
FROM range(50000)"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE sample AS {SAMPLE}")
    paths = {
        "csv": d / "sample.csv",
        "parquet": d / "sample.parquet",
        "json": d / "sample.ndjson",
    }
    con.execute(f"COPY sample TO '{paths['csv']}' (HEADER)")
    con.execute(f"COPY sample TO '{paths['parquet']}' (FORMAT parquet)")
    con.execute(f"COPY sample TO '{paths['json']}' (FORMAT json)")
    return paths


@pytest.mark.parametrize("kind,reader", [("csv", "read_csv"), ("parquet", "read_parquet"), ("json", "read_json")])
def test_files_arrive_as_duckdb_reads_them(server, connect, month, files, kind, reader):
    path = files[kind]
    r = load(server, "--month", month, "--table", f"from_{kind}", str(path))
    assert r.returncode == 0, r.stderr
    assert "loaded 50000 rows" in r.stdout
    cur = connect(month=month).cursor()
    cur.execute(f"SELECT * FROM from_{kind} ORDER BY id")
    got = cur.fetch_arrow_table()
    want = duckdb.sql(f"SELECT * FROM {reader}('{path}') ORDER BY id").to_arrow_table()
    assert got.schema.names == want.schema.names
    assert got.schema.types == want.schema.types, (got.schema, want.schema)
    assert same(got.to_pylist(), want.to_pylist())


def test_modes(server, connect, month, files):
    csv = str(files["csv"])
    assert load(server, "--month", month, "--table", "m", csv).returncode == 0
    # create-append (the default) appends to an existing table.
    assert load(server, "--month", month, "--table", "m", csv).returncode == 0
    r = load(server, "--month", month, "--table", "m", "--mode", "create", csv)
    assert r.returncode != 0 and "already exists" in r.stderr
    r = load(server, "--month", month, "--table", "nope", "--mode", "append", csv)
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert load(server, "--month", month, "--table", "m", "--mode", "replace", str(files["parquet"])).returncode == 0
    cur = connect(month=month).cursor()
    cur.execute("SELECT count(*) FROM m")
    assert cur.fetchall() == [(50000,)]
    r = load(server, "--month", month, "--table", "x", str(files["csv"]) + ".missing")
    assert r.returncode != 0 and "not a file" in r.stderr


def test_xlsx_first_sheet_with_a_header_row(server, connect, month, tmp_path):
    import datetime

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id", "product", "price", "in_stock", "added"])
    rows = [[i, f"p{i}", i * 1.25, i % 2 == 0, datetime.datetime(2026, 1, 1, 8, 0, i % 60)] for i in range(1, 1001)]
    rows[3][2] = None  # an empty cell
    for r in rows:
        ws.append(r)
    path = tmp_path / "products.xlsx"
    wb.save(path)
    r = load(server, "--month", month, "--table", "products", str(path))
    assert r.returncode == 0, r.stderr
    assert "loaded 1000 rows" in r.stdout
    cur = connect(month=month).cursor()
    cur.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'products' ORDER BY column_index")
    assert cur.fetchall() == [("id", "BIGINT"), ("product", "VARCHAR"), ("price", "DOUBLE"),
                              ("in_stock", "BOOLEAN"), ("added", "TIMESTAMP")]
    cur.execute("SELECT id, product, price, in_stock, added FROM products ORDER BY id LIMIT 5")
    assert cur.fetchall() == [tuple(r) for r in rows[:5]]
