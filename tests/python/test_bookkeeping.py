"""The server's bookkeeping (schema __duckflock, shadow tables, capture
triggers) stays out of users' catalog queries on every node, and a column
type replicas cannot receive is refused with a reason (issue 11, item 6)."""

import adbc_driver_manager
import pytest

HIDDEN = "'__duckflock'"

CATALOG_QUERIES = [
    f"SELECT count(*) FROM duckdb_columns() WHERE schema_name = {HIDDEN}",
    f"SELECT count(*) FROM duckdb_tables() WHERE schema_name = {HIDDEN}",
    f"SELECT count(*) FROM duckdb_schemas() WHERE schema_name = {HIDDEN}",
    f"SELECT count(*) FROM duckdb_sequences() WHERE schema_name = {HIDDEN}",
    f"SELECT count(*) FROM duckdb_constraints() WHERE schema_name = {HIDDEN}",
    f"SELECT count(*) FROM information_schema.columns WHERE table_schema = {HIDDEN}",
    f"SELECT count(*) FROM information_schema.tables WHERE table_schema = {HIDDEN}",
    f"SELECT count(*) FROM information_schema.schemata WHERE schema_name = {HIDDEN}",
    "SELECT count(*) FROM duckdb_triggers() WHERE starts_with(trigger_name, '__df_')",
    "SELECT count(*) FROM duckdb_columns() WHERE column_name IN ('__txn', '__stmt', '__op')",
]


def scalar(cur, sql):
    cur.execute(sql)
    return cur.fetchall()[0][0]


@pytest.mark.parametrize("where", ["replica", "transaction"])
def test_catalog_queries_do_not_show_bookkeeping(connect, month, where):
    conn = connect(month=month)
    cur = conn.cursor()
    cur.execute("CREATE TABLE shown (id BIGINT PRIMARY KEY, v VARCHAR)")
    cur.execute("INSERT INTO shown VALUES (1, 'a')")
    if where == "transaction":
        # A transaction runs on the primary, where the shadows live.
        conn = connect(month=month, autocommit=False)
        cur = conn.cursor()
        cur.execute("INSERT INTO shown VALUES (2, 'b')")
    for sql in CATALOG_QUERIES:
        assert scalar(cur, sql) == 0, sql
    # The user's table is there, with exactly its own columns.
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'shown' ORDER BY ordinal_position"
    )
    assert [r[0] for r in cur.fetchall()] == ["id", "v"]
    cur.execute("SHOW ALL TABLES")
    assert [r[2] for r in cur.fetchall()] == ["shown"]
    cur.execute("SELECT table_name FROM duckdb_tables()")
    assert [r[0] for r in cur.fetchall()] == ["shown"]
    if where == "transaction":
        conn.commit()


def test_aggregate_state_columns_are_refused_with_a_reason(connect, month):
    cur = connect(month=month).cursor()
    cur.execute("CREATE TABLE g AS SELECT range % 3 AS g, range::DOUBLE AS d FROM range(100)")
    with pytest.raises(adbc_driver_manager.Error) as e:
        cur.execute(
            "CREATE TABLE s AS SELECT g, approx_quantile(d, 0.5) EXPORT_STATE s FROM g GROUP BY g"
        )
    msg = str(e.value)
    assert "AGGREGATE_STATE" in msg and "finalize" in msg, msg
    cur.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 's'")
    assert cur.fetchall() == [(0,)]
    # The same result finalized replicates like any table.
    cur.execute(
        "CREATE TABLE s AS SELECT g, finalize(approx_quantile(d, 0.5) EXPORT_STATE) AS median FROM g GROUP BY g"
    )
    cur.execute("SELECT count(*) FROM s")
    assert cur.fetchall() == [(3,)]
