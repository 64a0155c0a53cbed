"""ADBC Flight SQL (Go driver) DB-API, pyarrow, polars and pandas against the
real server, compared with in-process DuckDB (same engine version)."""
import concurrent.futures
import decimal
import math

import adbc_driver_manager
import duckdb
import pyarrow as pa
import polars as pl
import pytest

# (DuckDB type, SQL literal). Every type a user can create.
TYPES = [
    ("BOOLEAN", "true"),
    ("TINYINT", "-128"),
    ("SMALLINT", "-32768"),
    ("INTEGER", "2147483647"),
    ("BIGINT", "-9223372036854775808"),
    ("UTINYINT", "255"),
    ("USMALLINT", "65535"),
    ("UINTEGER", "4294967295"),
    ("UBIGINT", "18446744073709551615"),
    ("HUGEINT", "-99999999999999999999999999999999999999"),
    ("UHUGEINT", "99999999999999999999999999999999999999"),
    ("DECIMAL(4,1)", "-123.4"),
    ("DECIMAL(18,6)", "123456789012.345678"),
    ("DECIMAL(38,10)", "1234567890123456789012345678.0123456789"),
    ("FLOAT", "'NaN'"),
    ("FLOAT", "'-inf'"),
    ("DOUBLE", "'inf'"),
    ("DOUBLE", "-0.0"),
    ("DOUBLE", "3.141592653589793"),
    ("VARCHAR", "'héllo, 世界 🦆'"),
    ("BLOB", "'\\xDE\\xAD\\xBE\\xEF'::BLOB"),
    ("DATE", "'2024-02-29'"),
    ("TIME", "'23:59:59.999999'"),
    ("TIMESTAMP", "'2024-02-29 12:34:56.789012'"),
    ("TIMESTAMP_S", "'2024-02-29 12:34:56'"),
    ("TIMESTAMP_MS", "'2024-02-29 12:34:56.789'"),
    ("TIMESTAMP_NS", "'2024-02-29 12:34:56.789012345'"),
    ("TIMESTAMPTZ", "'2024-02-29 12:34:56.789012+00'"),
    ("INTERVAL", "INTERVAL '1 year 2 months 3 days 04:05:06.000007'"),
    ("UUID", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ("INTEGER[]", "[1, NULL, 3]"),
    ("VARCHAR[]", "['a', NULL, '']"),
    ("INTEGER[3]", "[1, 2, 3]"),
    ("STRUCT(a INTEGER, b VARCHAR)", "{'a': 1, 'b': 'x'}"),
    ("STRUCT(a INTEGER[], b STRUCT(c DOUBLE))", "{'a': [1, 2], 'b': {'c': 2.5}}"),
    ("MAP(VARCHAR, INTEGER)", "MAP {'k1': 1, 'k2': NULL}"),
    ("ENUM('red', 'green')", "'green'"),
    ("STRUCT(a INTEGER, b VARCHAR)[]", "[{'a': 1, 'b': NULL}, NULL]"),
    ("MAP(INTEGER, VARCHAR[])", "MAP {1: ['x'], 2: []}"),
    ("TIMETZ", "'12:34:56.123456+02:30'"),
    ("UNION(n INTEGER, s VARCHAR)", "'text'"),
    ("INTEGER[][]", "[[1, 2], [], NULL, [3]]"),
    ("JSON", "'{\"a\": [1, 2]}'"),
    ("INTEGER", "NULL"),
    ("VARCHAR", "NULL"),
]


def same(a, b):
    """Value equality with NaN == NaN and -0.0 distinguished from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def reference():
    """In-process DuckDB configured like the server (time zone UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def local(sql):
    return reference().sql(sql).to_arrow_table()


def test_literals(connect):
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT 1 AS a, 'x' AS b, NULL AS c, 2.5::DOUBLE AS d, [1,2] AS e")
    assert cur.fetchall() == [(1, "x", None, 2.5, [1, 2])]


@pytest.mark.parametrize("type_name,literal", TYPES, ids=[f"{t}:{v}" for t, v in TYPES])
def test_type_round_trip(connect, month, type_name, literal):
    """Results: the server answers exactly what in-process DuckDB answers.
    Parameters: those values bound back through ADBC store the same values."""
    sql = f"SELECT CAST({literal} AS {type_name}) AS v"
    want = local(sql)
    conn = connect(month=month)
    cur = conn.cursor()
    cur.execute(sql)
    got = cur.fetch_arrow_table()
    assert got.schema.field("v").type == want.schema.field("v").type, (got.schema, want.schema)
    assert same(got.to_pylist(), want.to_pylist()), (got.to_pylist(), want.to_pylist())

    # As a bound parameter: executemany with the Arrow table DuckDB produced.
    cur.execute(f"CREATE TABLE rt (v {type_name})")
    cur.executemany("INSERT INTO rt VALUES (?)", want)
    cur.execute("SELECT v FROM rt")
    back = cur.fetch_arrow_table()
    assert same(back.to_pylist(), want.to_pylist()), (back.to_pylist(), want.to_pylist())


def test_all_types_in_one_table(connect, month):
    cols = ", ".join(f"c{i} {t}" for i, (t, _) in enumerate(TYPES))
    vals = ", ".join(f"CAST({v} AS {t})" for t, v in TYPES)
    ref = reference()
    ref.execute(f"CREATE TABLE a ({cols})")
    ref.execute(f"INSERT INTO a VALUES ({vals}), ({', '.join('NULL' for _ in TYPES)})")
    want = ref.sql("SELECT * FROM a").to_arrow_table()
    cur = connect(month=month).cursor()
    cur.execute(f"CREATE TABLE a ({cols})")
    cur.execute(f"INSERT INTO a VALUES ({vals}), ({', '.join('NULL' for _ in TYPES)})")
    cur.execute("SELECT * FROM a")
    got = cur.fetch_arrow_table()
    assert got.schema.types == want.schema.types
    assert same(got.to_pylist(), want.to_pylist())


def test_ddl_dml_through_execute_and_returning(connect, month):
    cur = connect(month=month).cursor()
    cur.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR, created TIMESTAMP DEFAULT now())")
    cur.execute("INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b') RETURNING id, name")
    assert cur.fetchall() == [(1, "a"), (2, "b")]
    cur.execute("UPDATE items SET name = 'z' WHERE id = 2 RETURNING name")
    assert cur.fetchall() == [("z",)]
    cur.execute("DELETE FROM items WHERE id = 1")
    cur.execute("SELECT id, name FROM items ORDER BY id")
    assert cur.fetchall() == [(2, "z")]


def test_executemany_100000_rows(connect, month):
    """One DoPut with 100,000 parameter rows: one transaction on the primary,
    the exact affected-row count, every row present."""
    cur = connect(month=month).cursor()
    cur.execute("CREATE TABLE many (id BIGINT, label VARCHAR, x DOUBLE)")
    n = 100_000
    params = pa.table({"id": pa.array(range(n), pa.int64()), "label": [f"row{i}" for i in range(n)],
                       "x": pa.array([i / 3 for i in range(n)], pa.float64())})
    cur.executemany("INSERT INTO many VALUES (?, ?, ?)", params)
    assert cur.rowcount == n
    cur.execute("SELECT count(*), sum(id), min(label), max(x) FROM many")
    assert cur.fetchone() == (n, sum(range(n)), "row0", (n - 1) / 3)


def test_parameters(connect):
    cur = connect().cursor()
    cur.execute("SELECT ? + 1 AS a, ? || '!' AS b, ?::DATE AS c", (41, "hi", "2024-01-02"))
    import datetime

    assert cur.fetchone() == (42, "hi!", datetime.date(2024, 1, 2))
    cur.execute("SELECT ? IS NULL", (None,))
    assert cur.fetchone() == (True,)


def test_transactions_commit_and_rollback(connect, month):
    setup = connect(month=month).cursor()
    setup.execute("CREATE TABLE tx (v INTEGER)")
    conn = connect(month=month, autocommit=False)
    cur = conn.cursor()
    cur.execute("INSERT INTO tx VALUES (1)")
    conn.rollback()
    cur.execute("SELECT count(*) FROM tx")
    assert cur.fetchone() == (0,)
    cur.execute("INSERT INTO tx VALUES (1), (2)")
    # Not visible to others before commit.
    setup.execute("SELECT count(*) FROM tx")
    assert setup.fetchone() == (0,)
    conn.commit()
    setup.execute("SELECT count(*) FROM tx")
    assert setup.fetchone() == (2,)


def test_get_objects_and_info(connect, month):
    conn = connect(month=month)
    cur = conn.cursor()
    cur.execute("CREATE TABLE obj (id INTEGER PRIMARY KEY, name VARCHAR)")
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "duckflock"
    objects = conn.adbc_get_objects(catalog_filter=month).read_all().to_pylist()
    assert [o["catalog_name"] for o in objects] == [month]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["main"]
    tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
    assert list(tables) == ["obj"]
    assert [c["column_name"] for c in tables["obj"]["table_columns"]] == ["id", "name"]
    assert conn.adbc_get_table_schema("obj", catalog_filter=month).names == ["id", "name"]
    assert "TABLE" in conn.adbc_get_table_types()


@pytest.mark.parametrize(
    "sql,status,text",
    [
        ("SELEC 1", adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, "Parser Error"),
        ("SELECT * FROM no_such_table", adbc_driver_manager.AdbcStatusCode.NOT_FOUND, "no_such_table"),
        ("SELECT 'x'::INTEGER", adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, "Conversion Error"),
        ("ATTACH 'x.db'", adbc_driver_manager.AdbcStatusCode.UNAUTHORIZED, "ATTACH"),
    ],
)
def test_error_classes(connect, sql, status, text):
    cur = connect().cursor()
    with pytest.raises(adbc_driver_manager.Error) as e:
        cur.execute(sql)
    assert e.value.status_code == status, e.value
    assert text in str(e.value)
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_constraint_error(connect, month):
    cur = connect(month=month).cursor()
    cur.execute("CREATE TABLE pk (id INTEGER PRIMARY KEY)")
    cur.execute("INSERT INTO pk VALUES (1)")
    # The Go driver maps no gRPC code to ADBC's INTEGRITY status; a duplicate
    # key arrives as ALREADY_EXISTS with DuckDB's message.
    with pytest.raises(adbc_driver_manager.Error) as e:
        cur.execute("INSERT INTO pk VALUES (1)")
    assert e.value.status_code == adbc_driver_manager.AdbcStatusCode.ALREADY_EXISTS
    assert "Duplicate key" in str(e.value)
    cur.execute("SELECT count(*) FROM pk")
    assert cur.fetchone() == (1,)


def test_sixteen_concurrent_clients(connect, month):
    setup = connect(month=month).cursor()
    setup.execute("CREATE TABLE conc AS SELECT range AS i FROM range(100000)")

    def worker(k):
        cur = connect(month=month).cursor()
        total = 0
        for j in range(10):
            cur.execute("SELECT sum(i) FROM conc WHERE i % 16 = ?", (k,))
            total += int(cur.fetchone()[0])
        return total

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    assert sum(results) == 10 * sum(range(100000))


def test_polars_and_pandas(connect, month):
    conn = connect(month=month)
    cur = conn.cursor()
    cur.execute("CREATE TABLE pl AS SELECT range AS i, 'v' || range AS s FROM range(1000)")
    df = pl.read_database("SELECT i, s FROM pl ORDER BY i", connection=conn)
    assert df.shape == (1000, 2)
    assert df["s"][999] == "v999"
    cur.execute("SELECT i, s FROM pl ORDER BY i")
    pdf = cur.fetch_df()
    assert len(pdf) == 1000 and pdf["i"].sum() == sum(range(1000))


def test_large_result_streams_as_batches(connect):
    cur = connect().cursor()
    cur.execute("SELECT range AS i FROM range(3000000)")
    reader = cur.fetch_record_batch()
    n = batches = 0
    for b in reader:
        n += b.num_rows
        batches += 1
    assert n == 3_000_000 and batches > 1


def test_cross_month_read_through_prepared_statements(connect):
    """The Go driver prepares every query: cross-month reads work through it."""
    for m, n in [("2031-01", 2), ("2031-02", 3)]:
        cur = connect(month=m).cursor()
        cur.execute(f"CREATE TABLE cm AS SELECT range AS i FROM range({n})")
    conn = connect(**{"adbc.flight.sql.rpc.call_header.x-duckflock-months": "2031-01,2031-02"})
    cur = conn.cursor()
    cur.execute("SELECT * FROM cm WHERE i >= ? ORDER BY i", (1,))
    table = cur.fetch_arrow_table()
    assert table.column_names == ["month", "i"]
    assert sorted(table.to_pylist(), key=lambda r: (r["month"], r["i"])) == [
        {"month": "2031-01", "i": 1},
        {"month": "2031-02", "i": 1},
        {"month": "2031-02", "i": 2},
    ]


def test_adbc_current_catalog_selects_the_month(server, tmp_path):
    """ADBC's current catalog is the Flight SQL session option `catalog`; the
    Go driver keeps the session with its cookie middleware."""
    import adbc_driver_flightsql.dbapi as flight_sql

    with flight_sql.connect(server, autocommit=True,
                            db_kwargs={"adbc.flight.sql.rpc.with_cookie_middleware": "true"}) as conn:
        conn.adbc_current_catalog = "2032-07"
        assert conn.adbc_current_catalog == "2032-07"
        cur = conn.cursor()
        cur.execute("CREATE TABLE in_session AS SELECT 42 AS v")
    with flight_sql.connect(server, autocommit=True,
                            db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": "2032-07"}) as conn:
        cur = conn.cursor()
        cur.execute("SELECT v FROM in_session")
        assert cur.fetchall() == [(42,)]
        objects = conn.adbc_get_objects(catalog_filter="2032-07").read_all().to_pylist()
        assert [o["catalog_name"] for o in objects] == ["2032-07"]
