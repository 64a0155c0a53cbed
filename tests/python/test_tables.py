"""The table API (create_table action; the HTTP gateway's POST /api/v1/tables
will call the same engine function): column types are checked by DuckDB to
be one column definition each, and a single integer primary key gets
generated ids that replicate exactly."""

import os
import signal

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from conftest import start_server
from flight_raw import Client
from replicas import compare_month

REFUSED = (pa.ArrowInvalid, fl.FlightError)
MONTH = "2026-07"


def test_generated_ids_replicate_exactly(tmp_path):
    data = str(tmp_path / "data")
    proc, uri = start_server(data, "--replicas", "3")
    try:
        c = Client(uri)
        created = c.action("create_table", {"table_name": "products", "month": MONTH, "columns": [
            {"name": "id", "type": "BIGINT PRIMARY KEY"},
            {"name": "name", "type": "VARCHAR NOT NULL"},
            {"name": "price", "type": "DECIMAL(10, 2)"},
            {"name": "created_at", "type": "TIMESTAMP DEFAULT CURRENT_TIMESTAMP"},
        ]})
        assert created["generated_id"] == "id"
        c.update("INSERT INTO products (name, price) VALUES ('a', 1.5), ('b', 2.5)", month=MONTH)
        report = c.action("execute_batch", {"sql": "INSERT INTO products (name, price) VALUES (?, ?)",
                                            "params": [["c", 3], ["d", 4]], "month": MONTH})
        assert report["succeeded"] == 2
        n, token = c.update("INSERT INTO products (id, name) VALUES (100, 'explicit')", month=MONTH)
        t, _ = c.query("SELECT id, name FROM products ORDER BY id", month=MONTH, token=token)
        assert t.to_pylist() == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"},
                                 {"id": 4, "name": "d"}, {"id": 100, "name": "explicit"}]
        # No generated id without a single integer key.
        plain = c.action("create_table", {"table_name": "pairs", "month": MONTH, "columns": [
            {"name": "a", "type": "INTEGER"}, {"name": "b", "type": "VARCHAR"}]})
        assert plain["generated_id"] is None
        text_key = c.action("create_table", {"table_name": "codes", "month": MONTH, "columns": [
            {"name": "code", "type": "VARCHAR PRIMARY KEY"}]})
        assert text_key["generated_id"] is None
        c.action("sync", {"month": MONTH})
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert compare_month(os.path.join(data, MONTH), 3) == []


@pytest.mark.parametrize("bad", [
    "BIGINT); DROP TABLE products; --",
    "INTEGER, evil INTEGER",
    "INTEGER); CREATE TABLE x (i INTEGER",
    "NOTATYPE",
    "",
])
def test_column_types_must_be_one_column_definition(server, month, bad):
    c = Client(server)
    try:
        with pytest.raises(REFUSED):
            c.action("create_table", {"table_name": "t", "month": month, "columns": [
                {"name": "id", "type": "BIGINT"}, {"name": "x", "type": bad}]})
        # Nothing was created.
        t, _ = c.query("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name IN ('t', 'x')", month=month)
        assert t.column("n")[0].as_py() == 0
    finally:
        c.close()


def test_identifiers_are_quoted(server, month):
    c = Client(server)
    try:
        c.action("create_table", {"table_name": 'odd "name"; --', "month": month, "columns": [
            {"name": "select", "type": "INTEGER PRIMARY KEY"}, {"name": "my col", "type": "VARCHAR"}]})
        c.update('INSERT INTO "odd ""name""; --" ("my col") VALUES (\'v\')', month=month)
        t, _ = c.query('SELECT "select", "my col" FROM "odd ""name""; --"', month=month)
        assert t.to_pylist() == [{"select": 1, "my col": "v"}]
    finally:
        c.close()
