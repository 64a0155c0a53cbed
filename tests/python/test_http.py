"""The HTTP gateway against the real binary: the original README's curl
examples replayed (shapes and values), stored queries, lossless JSON,
bounded results, docs, metrics, health."""
import datetime
import os
import signal
import tempfile
import time
from decimal import Decimal

import duckdb
import pyarrow.flight as flight
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import start_server
from http_client import Http

CURRENT = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m")


@pytest.fixture(scope="module")
def gateway():
    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = start_server(os.path.join(tmp, "data"))
        yield Http(proc.http_url), uri, os.path.join(tmp, "data")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def iso(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def create(api, table, columns, month=None):
    body = {"table_name": table, "columns": [{"name": n, "type": t} for n, t in columns]}
    if month:
        body["month"] = month
    out = api.ok("POST", "/api/v1/tables", body)
    assert out["status"] == "success" and out["table_name"] == table
    return out


USERS = [("id", "BIGINT PRIMARY KEY"), ("name", "VARCHAR"), ("email", "VARCHAR"),
         ("created_at", "TIMESTAMP DEFAULT CURRENT_TIMESTAMP")]
PRODUCTS = [("id", "BIGINT PRIMARY KEY"), ("name", "VARCHAR"), ("price", "DECIMAL(10,2)"),
            ("stock", "INTEGER")]
ORDERS = [("order_id", "BIGINT PRIMARY KEY"), ("customer_id", "BIGINT"),
          ("total_amount", "DECIMAL(10,2)"), ("order_date", "TIMESTAMP DEFAULT CURRENT_TIMESTAMP"),
          ("status", "VARCHAR")]
EMPLOYEES = [("id", "BIGINT PRIMARY KEY"), ("name", "VARCHAR"), ("position", "VARCHAR"),
             ("salary", "DECIMAL(10,2)"), ("hire_date", "TIMESTAMP")]


def test_readme_examples_replayed(gateway):
    api, _, _ = gateway
    # -- create tables (current month, 2026-01, 2026-02, 2026-03) ----------
    out = create(api, "employees", EMPLOYEES)
    assert out["generated_id"] == "id" and out["month"] == CURRENT and out["token"]
    assert create(api, "orders", ORDERS)["generated_id"] == "order_id"
    create(api, "orders", ORDERS, month="2026-01")
    for m in [None, "2026-01", "2026-02", "2026-03"]:
        create(api, "products", PRODUCTS, month=m)
    for m in [None, "2026-01", "2026-02"]:
        create(api, "users", USERS, month=m)

    # -- insert without id: the id is generated and reported ------------------
    ins = "INSERT INTO products (name, price, stock) VALUES (?, ?, ?)"
    out = api.ok("POST", "/api/v1/modify/async", {"exec": ins, "params": ["新产品", 99.99, 50]})
    assert out["status"] == "success" and out["affected_rows"] == 1 and out["id"] == 1
    assert out["token"].startswith(CURRENT + ":")
    iso(out["timestamp"])
    out = api.ok("POST", "/api/v1/modify/async",
                 {"exec": ins, "params": ["历史产品", 88.88, 30], "month": "2026-01"})
    assert out["id"] == 1 and out["token"].startswith("2026-01:")
    out = api.ok("POST", "/api/v1/modify/async",
                 {"exec": ins, "params": ["未来产品", 199.99, 100], "month": "2026-03"})
    assert out["affected_rows"] == 1 and out["id"] == 1

    # -- batch inserts ---------------------------------------------------------
    users = [[f"用户{i}", f"user{i}@example.com"] for i in range(1, 6)]
    out = api.ok("POST", "/api/v1/modify/async", {
        "exec": "INSERT INTO users (name, email) VALUES (?, ?)", "is_batch": True, "batch_params": users})
    assert out == {**out, "status": "success", "batch": True, "total_operations": 5,
                   "successful_operations": 5, "failed_operations": 0, "errors": None}
    iso(out["timestamp"])
    out = api.ok("POST", "/api/v1/modify/async", {
        "exec": ins, "is_batch": True, "month": "2026-01",
        "batch_params": [["产品A", 99.99, 100], ["产品B", 199.99, 50], ["产品C", 299.99, 30],
                         ["产品D", 399.99, 20], ["产品E", 499.99, 10]]})
    assert out["successful_operations"] == 5 and out["status"] == "success"
    out = api.ok("POST", "/api/v1/modify/async", {
        "exec": "INSERT INTO orders (customer_id, total_amount, status) VALUES (?, ?, ?)",
        "is_batch": True,
        "batch_params": [[1, 199.99, "pending"], [2, 299.99, "shipped"], [3, 399.99, "delivered"],
                         [4, 499.99, "pending"], [5, 599.99, "shipped"]]})
    assert out["total_operations"] == 5 and out["failed_operations"] == 0
    api.ok("POST", "/api/v1/modify/async", {
        "exec": "INSERT INTO users (name, email) VALUES (?, ?)", "is_batch": True, "month": "2026-02",
        "batch_params": [["a", "a@x"], ["b", "b@x"]]})
    # A batch where one row fails: partial success, the failure by index.
    out = api.ok("POST", "/api/v1/modify/async", {
        "exec": "INSERT INTO users (id, name) VALUES (?, ?)", "is_batch": True, "month": "2026-01",
        "batch_params": [[100, "x"], [100, "dup"], [101, "y"]]})
    assert out["status"] == "partial_success" and out["successful_operations"] == 2
    assert [e["index"] for e in out["errors"]] == [1]
    assert "Duplicate key" in out["errors"][0]["error"] or "PRIMARY KEY" in out["errors"][0]["error"]

    # -- update with params ----------------------------------------------------
    out = api.ok("POST", "/api/v1/modify/async", {
        "exec": "UPDATE products SET price = ?, stock = ? WHERE id = ?", "params": [6999.99, 50, 1]})
    assert out["affected_rows"] == 1 and "id" not in out
    token = out["token"]

    # -- queries ---------------------------------------------------------------
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT * FROM users LIMIT 10"})
    assert out["status"] == "success" and out["month"] == CURRENT
    r = out["results"][0]
    assert r["success"] and r["completed"] and r["node_id"] == out["node_id"]
    assert 1 <= out["node_id"] <= 7, "reads go to a replica"
    assert r["data"]["columns"] == ["id", "name", "email", "created_at"]
    assert r["data"]["count"] == 5
    assert [row[:3] for row in r["data"]["rows"]] == [[i, f"用户{i}", f"user{i}@example.com"] for i in range(1, 6)]
    for row in r["data"]["rows"]:
        assert abs(iso(row[3]) - datetime.datetime.now()).days <= 1
    # Read-your-writes with the token of the update; the node is named.
    a = api.post("/api/v1/query/async", {"query": "SELECT price, stock FROM products WHERE id = ?", "params": [1]},
                 headers={"x-duckflock-token": token})
    assert a.status == 200 and a.json["results"][0]["data"]["rows"] == [[Decimal("6999.99"), 50]]
    assert a.headers["x-duckflock-node"].startswith(CURRENT + "/node_")

    counts = {}
    for m in [None, "2026-01", "2026-02"]:
        body = {"query": "SELECT COUNT(*) as user_count FROM users"}
        if m:
            body["month"] = m
        out = api.ok("POST", "/api/v1/query/async", body)
        assert out["results"][0]["data"]["columns"] == ["user_count"]
        counts[m or CURRENT] = out["results"][0]["data"]["rows"][0][0]
    assert counts == {CURRENT: 5, "2026-01": 2, "2026-02": 2}

    # -- cross-month -----------------------------------------------------------
    out = api.ok("POST", "/api/v1/query/async",
                 {"query": "SELECT * FROM users", "months": ["2026-01", "2026-02"]})
    assert out["cross_month"] is True and out["months_queried"] == ["2026-01", "2026-02"]
    assert out["total_months"] == 2 and out["successful_months"] == 2
    assert [m["month"] for m in out["results"]] == ["2026-01", "2026-02"]
    assert sorted(u["name"] for u in out["results"][0]["results"]) == ["x", "y"]
    assert sorted(u["name"] for u in out["results"][1]["results"]) == ["a", "b"]
    assert set(out["results"][0]["results"][0]) == {"id", "name", "email", "created_at"}
    assert all(m["completed"] for m in out["results"])

    # 2026-03 has no users table: that month fails on its own.
    out = api.ok("POST", "/api/v1/query/async", {
        "query": "SELECT COUNT(*) as user_count FROM users", "months": ["2026-01", "2026-02", "2026-03"]})
    assert out["total_months"] == 3 and out["successful_months"] == 2
    assert [m["results"] for m in out["results"][:2]] == [[{"user_count": 2}], [{"user_count": 2}]]
    assert out["results"][2]["completed"] is False and "users" in out["results"][2]["error"]

    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT * FROM products", "all_months": True})
    assert out["months_queried"] == sorted(["2026-01", "2026-02", "2026-03", CURRENT])
    per_month = {m["month"]: len(m["results"]) for m in out["results"]}
    assert per_month == {"2026-01": 6, "2026-02": 0, "2026-03": 1, CURRENT: 1}

    out = api.ok("POST", "/api/v1/query/async", {
        "query": "SELECT SUM(total_amount) as total FROM orders", "months": ["2026-01", CURRENT]})
    assert [m["results"] for m in out["results"]] == [[{"total": None}], [{"total": Decimal("1999.95")}]]

    out = api.ok("POST", "/api/v1/query/async", {
        "query": "SELECT name, stock FROM products WHERE stock < 50", "all_months": True})
    low = sorted((m["month"], r["name"]) for m in out["results"] for r in m["results"])
    assert low == sorted([("2026-01", "历史产品"), ("2026-01", "产品C"), ("2026-01", "产品D"),
                          ("2026-01", "产品E")])

    # A write is refused on several months (reads only).
    a = api.post("/api/v1/query/async", {"query": "DELETE FROM users", "months": ["2026-01"]})
    assert a.status == 200 and a.json["successful_months"] == 0
    assert api.ok("POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM users", "month": "2026-01"}
                  )["results"][0]["data"]["rows"] == [[2]]

    # -- tables and schemas ----------------------------------------------------
    out = api.ok("GET", "/api/v1/tables")
    assert out["status"] == "success" and out["count"] == 4
    assert sorted(t["name"] for t in out["tables"]) == ["employees", "orders", "products", "users"]
    out = api.ok("GET", "/api/v1/tables?month=2026-03")
    assert [t["name"] for t in out["tables"]] == ["products"]
    out = api.ok("GET", "/api/v1/tables/employees/schema")
    assert out["table_name"] == "employees"
    cols = {c["name"]: c for c in out["columns"]}
    assert [c["name"] for c in out["columns"]] == [c for c, _ in EMPLOYEES]
    assert cols["id"]["type"] == "BIGINT" and cols["id"]["primary_key"] and not cols["id"]["nullable"]
    assert "nextval" in cols["id"]["default"]
    assert cols["salary"]["type"] == "DECIMAL(10,2)" and cols["salary"]["nullable"]
    assert cols["hire_date"]["type"] == "TIMESTAMP" and cols["hire_date"]["default"] is None
    out = api.ok("GET", "/api/v1/tables/orders/schema")
    order_date = next(c for c in out["columns"] if c["name"] == "order_date")
    default = (order_date["default"] or "").lower()
    assert "current" in default or "now" in default, order_date
    for path in ["/api/v1/tables/nope/schema", "/api/v1/tables/employees/schema?month=2026-01",
                 "/api/v1/tables/users/schema?month=1999-01"]:
        a = api.get(path)
        assert a.status == 404 and a.json["status"] == "error", a

    # -- nodes, months, sync ---------------------------------------------------
    out = api.ok("GET", "/api/v1/nodes")
    assert out["month"] == CURRENT and [n["id"] for n in out["nodes"]] == list(range(8))
    assert [n["role"] for n in out["nodes"]] == ["primary"] + ["replica"] * 7
    assert all(n["path"].endswith(f"{CURRENT}/node_{n['id']}.db") for n in out["nodes"])
    out = api.ok("GET", "/api/v1/nodes?month=2026-01")
    assert out["month"] == "2026-01" and len(out["nodes"]) == 8
    assert api.get("/api/v1/nodes?month=2031-02").status == 404
    out = api.ok("GET", "/api/v1/months")
    assert out["months"] == sorted(["2026-01", "2026-02", "2026-03", CURRENT]) and out["count"] == 4
    out = api.ok("POST", "/api/v1/sync", {"month": "2026-01"})
    assert out["status"] == "success" and out["months"][0]["month"] == "2026-01"
    assert out["months"][0]["replicas"] == 7
    primary_lsn = out["months"][0]["lsn"]
    nodes = api.ok("GET", "/api/v1/nodes?month=2026-01")["nodes"]
    assert all(n["applied_lsn"] == primary_lsn and n["lag_lsn"] == 0 for n in nodes)
    assert api.ok("POST", "/api/v1/sync")["month"] == CURRENT  # no body: the current month


def test_stored_query_is_kept_and_fetched_by_id(gateway):
    api, _, _ = gateway
    api.ok("POST", "/api/v1/modify/async", {"exec": "CREATE TABLE kept AS SELECT range AS x FROM range(1000)",
                                            "month": "2025-06"})
    out = api.ok("POST", "/api/v1/query", {"query": "SELECT sum(x) AS s, count(*) AS n FROM kept",
                                           "month": "2025-06"})
    assert out["status"] == "success" and out["month"] == "2025-06"
    qid = out["query_id"]
    deadline = time.time() + 30
    while True:
        a = api.get(f"/api/v1/query/result/{qid}")
        if a.status != 202:
            break
        assert time.time() < deadline
        time.sleep(0.05)
    assert a.status == 200 and a.json["results"][0]["data"]["rows"] == [[499500, 1000]]
    assert a.json["month"] == "2025-06"
    # Fetched again: still there; with its month; not with another month.
    assert api.get(f"/api/v1/query/result/{qid}?month=2025-06").json == a.json
    assert api.get(f"/api/v1/query/result/{qid}?month=2025-07").status == 404
    assert api.get("/api/v1/query/result/no-such-id").status == 404
    # A failing stored query keeps its error.
    qid = api.ok("POST", "/api/v1/query", {"query": "SELECT * FROM missing", "month": "2025-06"})["query_id"]
    for _ in range(600):
        a = api.get(f"/api/v1/query/result/{qid}")
        if a.status != 202:
            break
        time.sleep(0.05)
    assert a.status == 404 and a.json["status"] == "error" and "missing" in a.json["error"]


def test_json_values_are_lossless(gateway):
    """Every type as DuckDB itself computes it (duckdb==2.0.0 in process)."""
    api, _, _ = gateway
    sql = """SELECT
        123456789012345678901234.5678901234::DECIMAL(38,10) AS dec38,
        -0.01::DECIMAL(4,2) AS dec_small,
        170141183460469231731687303715884105727::HUGEINT AS huge,
        9223372036854775807::BIGINT AS big,
        18446744073709551615::UBIGINT AS ubig,
        0.1::DOUBLE AS dbl, 1e300::DOUBLE AS dbl_big, 'NaN'::DOUBLE AS nan,
        'inf'::DOUBLE AS inf, '-inf'::DOUBLE AS ninf, 0.1::FLOAT AS flt,
        TIMESTAMP '2026-01-02 03:04:05.123456' AS ts,
        TIMESTAMPTZ '2026-01-02 03:04:05+00' AS tstz,
        DATE '2026-02-28' AS d, TIME '23:59:59.5' AS t,
        [1, NULL, 3] AS list, {'a': 1, 'b': 'x'} AS struct,
        MAP {'k1': 1, 'k2': 2} AS map, NULL::INTEGER AS nothing,
        'he said "hi"\n' AS text, '\\x00\\xff'::BLOB AS blob, true AS flag,
        '4d2c8a4e-5e0a-4b8e-9b7c-1f0e2d3c4b5a'::UUID AS uuid,
        [[1.5::DECIMAL(3,1)], []] AS nested"""
    out = api.ok("POST", "/api/v1/query/async", {"query": sql, "month": "2025-07"})
    data = out["results"][0]["data"]
    got = dict(zip(data["columns"], data["rows"][0]))
    con = duckdb.connect()
    cur = con.execute(f"SELECT * EXCLUDE (tstz) FROM ({sql})")  # (TIMESTAMPTZ needs pytz)
    want = dict(zip([d[0] for d in cur.description], cur.fetchone()))
    assert got["dec38"] == want["dec38"] == Decimal("123456789012345678901234.5678901234")
    assert got["dec_small"] == want["dec_small"]
    assert got["huge"] == want["huge"] == 2**127 - 1
    assert got["big"] == want["big"] == 2**63 - 1
    assert got["ubig"] == want["ubig"] == 2**64 - 1
    assert float(got["dbl"]) == want["dbl"] and float(got["dbl_big"]) == want["dbl_big"]
    assert (got["nan"], got["inf"], got["ninf"]) == ("NaN", "Infinity", "-Infinity")
    import struct
    assert struct.pack("f", float(got["flt"])) == struct.pack("f", want["flt"])
    assert datetime.datetime.fromisoformat(got["ts"]) == want["ts"]
    assert iso(got["tstz"]) == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert datetime.date.fromisoformat(got["d"]) == want["d"]
    assert datetime.time.fromisoformat(got["t"]) == want["t"]
    assert got["list"] == want["list"] == [1, None, 3]
    assert got["struct"] == want["struct"]
    assert got["map"] == want["map"]
    assert got["nothing"] is None
    assert got["text"] == want["text"]
    assert bytes.fromhex(got["blob"]) == want["blob"]
    assert got["flag"] is True
    assert got["uuid"] == str(want["uuid"])
    assert got["nested"] == want["nested"]


def test_large_results_are_refused_not_buffered():
    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = start_server(os.path.join(tmp, "data"), "--replicas", "0",
                                 "--http-result-limit", "1MB")
        api = Http(proc.http_url)
        try:
            a = api.post("/api/v1/query/async", {"query": "SELECT range AS x, 'padding' AS y FROM range(100000000)"})
            assert a.status == 400 and a.json["status"] == "error"
            assert "Flight SQL" in a.json["error"] and a.json["flight_sql"] == uri
            assert a.json["limit_bytes"] == 1_000_000
            # Under the bound the same query answers.
            out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT range AS x FROM range(1000)"})
            assert out["results"][0]["data"]["count"] == 1000
            assert api.get("/health").status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0


def test_docs_and_openapi_are_served_from_the_binary(gateway):
    api, _, _ = gateway
    doc = api.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in ["/api/v1/query/async", "/api/v1/query", "/api/v1/query/result/{query_id}",
                 "/api/v1/modify/async", "/api/v1/tables", "/api/v1/tables/{table_name}/schema",
                 "/api/v1/nodes", "/api/v1/months", "/api/v1/sync", "/api/v1/verify", "/health", "/metrics", "/"]:
        assert path in doc["paths"], path
    assert "QueryRequest" in doc["components"]["schemas"]
    page = api.get("/docs/")
    assert page.status == 200 and "swagger" in page.body.lower()
    # Every script and stylesheet is served by the binary itself.
    import re
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.body)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for a in assets:
        assert api.get("/docs/" + a.lstrip("./")).status == 200, a
    root = api.ok("GET", "/")
    assert root["status_page"] == "/status" and root["docs"] == "/docs"
    assert "POST /api/v1/query/async" in root["endpoints"].values()


def test_metrics_cover_both_protocols(gateway):
    api, uri, _ = gateway
    api.ok("POST", "/api/v1/modify/async", {"exec": "CREATE TABLE m AS SELECT range AS x FROM range(5000)",
                                            "month": "2025-08"})
    for _ in range(3):
        api.ok("POST", "/api/v1/query/async", {"query": "SELECT * FROM m", "month": "2025-08"})
    import pyarrow as pa
    import adbc_driver_flightsql.dbapi as fsql
    with fsql.connect(uri, db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": "2025-08"},
                      autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM m")
            assert cur.fetch_arrow_table().num_rows == 5000
            cur.adbc_ingest("ingested", pa.table({"v": list(range(1234))}), mode="create")
    text = api.get("/metrics")
    assert text.status == 200 and text.headers["Content-Type"].startswith("application/openmetrics-text")
    fams = {f.name: f for f in text_string_to_metric_families(text.body)}
    def samples(name, **labels):
        return [s for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    http_q = samples("duckflock_requests", protocol="http", endpoint="/api/v1/query/async", status="200")
    assert sum(s.value for s in http_q if s.name.endswith("_total")) >= 3
    assert sum(s.value for s in samples("duckflock_requests", protocol="flight", endpoint="DoGet", status="Ok")
               if s.name.endswith("_total")) >= 1
    lat = samples("duckflock_request_duration_seconds", protocol="http", endpoint="/api/v1/query/async")
    assert any(s.name.endswith("_count") and s.value >= 3 for s in lat)
    assert any(s.name.endswith("_bucket") for s in lat)
    rows = {s.labels["protocol"]: s.value for s in fams["duckflock_rows_streamed"].samples if s.name.endswith("_total")}
    assert rows["http"] >= 15000 and rows["flight"] >= 5000
    sent = {s.labels["protocol"]: s.value for s in fams["duckflock_bytes_streamed"].samples
            if s.name.endswith("_total")}
    assert sent["http"] > 15000 and sent["flight"] > 5000 * 8, sent
    assert [s.value for s in fams["duckflock_ingest_rows"].samples if s.name.endswith("_total")][0] >= 1234
    lsn = {s.labels["node"]: s.value for s in samples("duckflock_applied_lsn", month="2025-08")}
    assert set(lsn) == {f"node_{i}" for i in range(8)} and lsn["node_0"] >= 2
    assert {s.labels["node"] for s in samples("duckflock_lag_seconds", month="2025-08")} == set(lsn)
    assert any(s.value > 0 for s in samples("duckflock_duckdb_memory_bytes", month="2025-08"))
    assert "duckflock_open_sessions" in fams and "duckflock_open_transactions" in fams


def test_health_reports_a_replica_that_stopped_syncing():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        proc, uri = start_server(data, "--replicas", "2")
        api = Http(proc.http_url)
        try:
            assert api.ok("GET", "/health")["status"] == "healthy"
            api.ok("POST", "/api/v1/modify/async", {"exec": "CREATE TABLE t (x INT)", "month": "2025-09"})
            api.ok("POST", "/api/v1/sync", {"month": "2025-09"})
            # node_2's file becomes a directory: its rebuild cannot write it.
            path = os.path.join(data, "2025-09", "node_2.db")
            os.remove(path)
            os.mkdir(path)
            open(os.path.join(path, "keep"), "w").close()
            client = flight.FlightClient(uri)
            list(client.do_action(flight.Action("resync_replica", b'{"month": "2025-09", "node": 2}')))
            deadline = time.time() + 30
            while (a := api.get("/health")).status == 200:
                assert time.time() < deadline, "health never noticed the failed replica"
                time.sleep(0.2)
            assert a.status == 503 and a.json["status"] == "unhealthy"
            assert any("2025-09/node_2" in p for p in a.json["problems"]), a.json
            # Repaired: the applier's retry rebuilds it and health recovers.
            os.remove(os.path.join(path, "keep"))
            os.rmdir(path)
            deadline = time.time() + 90
            while (a := api.get("/health")).status != 200:
                assert time.time() < deadline, a
                time.sleep(0.5)
            assert a.json["status"] == "healthy"
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
