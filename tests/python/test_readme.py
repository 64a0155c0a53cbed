"""The README's Python quick start runs as written against a real server."""

import os
import re
import signal

from conftest import start_server

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def quick_start():
    text = open(README).read()
    section = text[text.index("## Python quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_quick_start_runs(tmp_path, capsys):
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "2")
    try:
        code = quick_start().replace("grpc://127.0.0.1:50051", uri)
        for _ in range(2):  # rerunnable: it leaves the same two rows
            exec(compile(code, "README.md", "exec"), {})
        out = capsys.readouterr().out
        assert "goose" in out and "12.25" in out, out
        assert out.count("duck") == 2, out  # only polars prints every row, once per run
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def files_in_place_sql():
    text = open(README).read()
    section = text[text.index("### Files in place"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    # One statement per `;` (the block has no `;` inside strings).
    return [s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]


def test_files_in_place_examples_run(tmp_path):
    """Every statement of the README's files-in-place block runs against
    files shaped as its names suggest."""
    import duckdb
    import openpyxl
    import adbc_driver_flightsql.dbapi as flight_sql

    data = tmp_path / "data"
    files = data / "files"
    os.makedirs(files / "lake" / "year=2025", exist_ok=True)
    os.makedirs(files / "lake" / "year=2026", exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS id, 9.5 AS amount) TO '{files}/sales.csv' (HEADER)")
    con.execute(f"COPY (SELECT i AS customer_id, i * 2.5 AS amount FROM range(10) t(i)) "
                f"TO '{files}/orders.parquet' (FORMAT parquet)")
    for y in (2025, 2026):
        con.execute(f"COPY (SELECT {y} * 10 AS v) TO '{files}/lake/year={y}/part.parquet' (FORMAT parquet)")
    con.execute(f"COPY (SELECT 'click' AS kind) TO '{files}/events.ndjson' (FORMAT json)")
    con.execute(f"COPY (SELECT i AS customer_id, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END AS region "
                f"FROM range(10) t(i)) TO '{files}/customers.csv' (HEADER)")
    wb = openpyxl.Workbook()
    wb.active.title = "Q1"
    wb.active.append(["region", "target"])
    wb.active.append(["north", 100.0])
    wb.save(files / "budget.xlsx")
    wb = openpyxl.Workbook()
    wb.active.append(["region", "goal"])
    wb.active.append(["north", 5.0])
    wb.active.append(["south", 7.0])
    wb.save(files / "targets.xlsx")
    proc, uri = start_server(str(data), "--replicas", "1")
    try:
        header = "adbc.flight.sql.rpc.call_header.x-duckflock-month"
        with flight_sql.connect(uri, db_kwargs={header: "2026-01"}, autocommit=True) as conn:
            with conn.cursor() as cur:
                statements = files_in_place_sql()
                assert len(statements) >= 6
                for sql in statements:
                    cur.execute(sql)
                    cur.fetch_arrow_table()
                cur.execute("SELECT count(*) FROM orders")
                assert cur.fetchall() == [(10,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_refused_upserts_are_refused_and_the_suggested_way_works(tmp_path):
    """The README says INSERT OR REPLACE, ON CONFLICT DO UPDATE and MERGE are
    refused on replicated tables, and to use DELETE then INSERT in one
    transaction instead: both halves, against a real server."""
    import adbc_driver_flightsql.dbapi as flight_sql
    import pytest

    text = open(README).read()
    assert "`INSERT OR REPLACE`, `ON CONFLICT DO\nUPDATE` and `MERGE`" in text
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "1")
    header = "adbc.flight.sql.rpc.call_header.x-duckflock-month"
    try:
        with flight_sql.connect(uri, db_kwargs={header: "2026-01"}, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, name VARCHAR)")
                cur.execute("INSERT INTO p VALUES (1, 'duck')")
                for sql in [
                    "INSERT OR REPLACE INTO p VALUES (1, 'goose')",
                    "INSERT INTO p VALUES (1, 'goose') ON CONFLICT DO UPDATE SET name = excluded.name",
                    "MERGE INTO p USING (SELECT 1 AS id, 'goose' AS name) s USING (id) "
                    "WHEN MATCHED THEN UPDATE SET name = s.name",
                ]:
                    with pytest.raises(Exception, match="duckflock replicates the rows"):
                        cur.execute(sql)
                        cur.fetchall()
                cur.execute("SELECT name FROM p")
                assert cur.fetchall() == [("duck",)]
        with flight_sql.connect(uri, db_kwargs={header: "2026-01"}, autocommit=False) as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM p WHERE id = 1")
                cur.execute("INSERT INTO p VALUES (1, 'goose')")
            conn.commit()
            with conn.cursor() as cur:
                cur.execute("SELECT name FROM p")
                assert cur.fetchall() == [("goose",)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
