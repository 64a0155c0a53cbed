"""Deletes, updates and truncates of any size replicate exactly (issue 11).

Every statement kind that removes or rewrites rows runs on tables just below,
at and above one DuckDB row group (122,880 rows), keyed and keyless, in
autocommit and inside a Flight SQL transaction, each case in a month of its
own on one real server with two replicas. After `sync` the server checks
itself (`verify_replicas`); then the server is stopped and every node file is
compared with the primary by DuckDB (EXCEPT ALL both ways, catalogs), and the
primary with the same statements run by in-process DuckDB.
"""

import os
import signal

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import pytest

from conftest import start_server
from flight_raw import Client
from replicas import compare_month

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

REPLICAS = 2
ROW_GROUP = 122_880
SIZES = [ROW_GROUP - 1, ROW_GROUP, 300_000]

# name -> statements ({n}: the table's size; `b` exists only for two_tables).
STATEMENTS = {
    "delete_all": ["DELETE FROM a"],
    "update_all": ["UPDATE a SET v = v || '+', d = d * 2"],
    "truncate": ["TRUNCATE a"],
    "delete_returning": ["DELETE FROM a WHERE i >= 1000 RETURNING i, v"],
    "delete_most": ["DELETE FROM a WHERE i < {n} * 5 // 6"],
    "delete_prefix": ["DELETE FROM a WHERE i < 130000"],
    "delete_even": ["DELETE FROM a WHERE i % 2 = 0"],
    "delete_thirds": ["DELETE FROM a WHERE i % 3 = 0"],
    "delete_few": ["DELETE FROM a WHERE i < 10"],
    "update_key": ["UPDATE a SET i = i + {n}"],
    "update_half": ["UPDATE a SET d = -d WHERE i % 2 = 1"],
    # Many row groups of two tables in one change set.
    "two_tables": [
        "DELETE FROM a WHERE i % 5 <> 0",
        "UPDATE b SET v = v || '!' WHERE i % 7 <> 0",
        "DELETE FROM b WHERE i < {n} // 2",
    ],
}

# keyed: `i` is the primary key; ctas: the table is made by CREATE TABLE AS
# (replicas get a table image), else by CREATE TABLE + INSERT.
KEYED, KEYLESS, KEYLESS_CTAS = ("keyed", True, False), ("keyless", False, False), ("keyless_ctas", False, True)
MODES = ["autocommit", "transaction"]


def _cases():
    """Every kind of statement the issue names across the boundary; the
    other shapes of deletes and updates at the sizes its table tried."""
    out = []
    for mode in MODES:
        for shape in [KEYED, KEYLESS]:
            for size in SIZES:
                for stmt in ["delete_all", "update_all", "truncate", "delete_returning", "two_tables"]:
                    out.append((size, shape, stmt, mode))
            for stmt in ["delete_most", "delete_prefix", "delete_even", "delete_few", "update_key", "update_half"]:
                out.append((300_000, shape, stmt, mode))
            out.append((ROW_GROUP - 1, shape, "delete_thirds", mode))
        for stmt in ["delete_all", "delete_most", "update_all", "delete_even"]:
            out.append((300_000, KEYLESS_CTAS, stmt, mode))
    return out


CASES = _cases()


def case_id(c):
    size, shape, stmt, mode = c
    return f"{size}-{shape[0]}-{stmt}-{mode}"


def month_of(index):
    return f"{2100 + index // 12:04d}-{index % 12 + 1:02d}"


def tables_of(stmt):
    return ["a", "b"] if stmt == "two_tables" else ["a"]


def setup_sql(size, keyed, ctas, tables):
    key = " PRIMARY KEY" if keyed else ""
    rows = f"SELECT range AS i, 'v' || range AS v, range / 7 AS d FROM range({size})"
    out = []
    for t in tables:
        if ctas:
            out.append(f"CREATE TABLE {t} AS {rows}")
        else:
            out.append(f"CREATE TABLE {t} (i BIGINT{key}, v VARCHAR, d DOUBLE)")
            out.append(f"INSERT INTO {t} {rows}")
    return out


def adbc(uri, month, autocommit=True):
    return flight_sql.connect(
        uri,
        db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": month},
        autocommit=autocommit,
    )


def run_case(uri, month, case):
    """Runs one case on the server; returns what the client saw."""
    size, (_, keyed, ctas), stmt, mode = case
    conn = adbc(uri, month)
    cur = conn.cursor()
    for sql in setup_sql(size, keyed, ctas, tables_of(stmt)):
        cur.execute(sql)
    cur.close()
    conn.close()
    sync(uri, month)  # the setup is on every replica before the change
    conn = adbc(uri, month, autocommit=(mode == "autocommit"))
    cur = conn.cursor()
    seen = []
    for sql in STATEMENTS[stmt]:
        cur.execute(sql.format(n=size))
        rows = cur.fetchall()
        # DML answers DuckDB's one-row count; RETURNING answers the rows.
        seen.append(len(rows) if "RETURNING" in sql else rows[0][0])
    if mode == "transaction":
        conn.commit()
    cur.close()
    conn.close()
    return seen


def sync(uri, month):
    c = Client(uri)
    try:
        return c.action("sync", {"month": month, "timeout_s": 300})
    finally:
        c.close()


def reference(case):
    """The same statements in in-process DuckDB: the primary must hold this."""
    size, (_, keyed, ctas), stmt, _ = case
    con = duckdb.connect()
    for sql in setup_sql(size, keyed, ctas, tables_of(stmt)):
        con.execute(sql)
    seen = []
    for sql in STATEMENTS[stmt]:
        r = con.execute(sql.format(n=size)).fetchall()
        seen.append(len(r) if "RETURNING" in sql else r[0][0])
    return con, seen


@pytest.fixture(scope="module")
def ran(request, tmp_path_factory):
    """Runs every selected case on one server, verifies, stops the server."""
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if hasattr(item, "callspec") and "case" in item.callspec.params
    }
    data = str(tmp_path_factory.mktemp("large") / "data")
    # Months close soon after their case, so the server never holds 200.
    proc, uri = start_server(data, "--replicas", str(REPLICAS), "--month-idle-timeout", "3")
    results = {}
    try:
        for index, case in enumerate(CASES):
            if case not in selected:
                continue
            month = month_of(index)
            r = {"month": month, "error": None}
            try:
                r["seen"] = run_case(uri, month, case)
                sync(uri, month)
                c = Client(uri)
                r["verify"] = c.action("verify_replicas", {"month": month})["months"][0]
                r["status"] = c.action("node_status", {"month": month})["months"][0]
                c.close()
            except Exception as e:  # reported by the case's own test
                r["error"] = repr(e)
            results[case_id(case)] = r
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    return data, results


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_large_change_replicates_exactly(ran, case):
    data, results = ran
    r = results[case_id(case)]
    assert r["error"] is None, r["error"]
    # The server's own check found every replica equal to the primary.
    v = r["verify"]
    assert v["ok"] and [x["result"] for x in v["replicas"]] == ["ok"] * REPLICAS, v
    nodes = r["status"]["nodes"]
    assert [n["state"] for n in nodes] == ["healthy"] * (REPLICAS + 1)
    assert all(n["lag_lsn"] == 0 for n in nodes)
    # The client saw DuckDB's row counts.
    con, want = reference(case)
    assert r["seen"] == want
    # The node files: every replica equals the primary ...
    month_dir = os.path.join(data, r["month"])
    assert compare_month(month_dir, REPLICAS) == []
    # ... and the primary holds what in-process DuckDB holds (row count and
    # an order-independent hash of the rows).
    con.execute(f"ATTACH '{os.path.join(month_dir, 'node_0.db')}' AS p (READ_ONLY)")
    for t in tables_of(case[2]):
        digest = "SELECT count(*), sum(hash(i, v, d))::VARCHAR FROM {}.{}"
        assert con.execute(digest.format("p", t)).fetchall() == con.execute(digest.format("memory", t)).fetchall(), t
    con.close()


def all_types_sql(keyed):
    """180,000 rows of every type DuckDB's test_all_types() has."""
    key = "ALTER TABLE w ADD PRIMARY KEY (id)" if keyed else "SELECT 1"
    return [
        "CREATE TABLE w AS SELECT row_number() OVER () AS id, t.* FROM test_all_types() AS t, range(60000)",
        key,
    ]


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
def test_every_column_type_across_row_groups(tmp_path, keyed):
    data = str(tmp_path / "data")
    month = "2099-01"
    proc, uri = start_server(data, "--replicas", str(REPLICAS))
    try:
        conn = adbc(uri, month)
        cur = conn.cursor()
        for sql in all_types_sql(keyed):
            cur.execute(sql)
        # More old and new images than a row group in one statement (the
        # LIST columns make DuckDB update by delete + insert).
        cur.execute("""UPDATE w SET "bool" = NOT "bool", "varchar" = "varchar" || '!' WHERE id % 8 <> 0""")
        assert cur.fetchall() == [(157500,)]
        cur.execute("DELETE FROM w WHERE id % 4 <> 0")
        assert cur.fetchall() == [(135000,)]
        cur.execute("UPDATE w SET id = -id WHERE id % 3 = 0")
        assert cur.fetchall() == [(15000,)]
        tconn = adbc(uri, month, autocommit=False)
        tcur = tconn.cursor()
        tcur.execute("DELETE FROM w WHERE id > 0 AND id % 5 = 0")
        tcur.execute("UPDATE w SET id = id * 10 WHERE id > 0")
        tconn.commit()
        tcur.close()
        tconn.close()
        cur.close()
        conn.close()
        sync(uri, month)
        c = Client(uri)
        v = c.action("verify_replicas", {"month": month})["months"][0]
        c.close()
        assert v["ok"] and v["rows"] > 30000, v
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    month_dir = os.path.join(data, month)
    assert compare_month(month_dir, REPLICAS) == []
    con = duckdb.connect(os.path.join(month_dir, "node_1.db"), read_only=True)
    assert con.execute("SELECT count(*) FROM w").fetchone()[0] > 30000
    con.close()

