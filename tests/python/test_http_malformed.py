"""Property: every endpoint given malformed JSON, wrong types, unknown or
invalid months and injection attempts answers a 4xx JSON error
`{"status": "error", "error": ...}`, changes nothing, and the server stays
healthy."""
import json
import os
import signal
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import start_server
from http_client import Http

MONTH = "2025-03"


@pytest.fixture(scope="module")
def api():
    with tempfile.TemporaryDirectory() as tmp:
        proc, _ = start_server(os.path.join(tmp, "data"), "--replicas", "1")
        http = Http(proc.http_url)
        http.ok("POST", "/api/v1/tables", {"table_name": "users", "month": MONTH, "columns": [
            {"name": "id", "type": "BIGINT PRIMARY KEY"}, {"name": "name", "type": "VARCHAR"}]})
        http.ok("POST", "/api/v1/modify/async", {"exec": "INSERT INTO users (name) VALUES (?)",
                                                 "params": ["alice"], "month": MONTH})
        yield http
        # The server is still healthy and nothing changed.
        assert http.get("/health").status == 200
        out = http.ok("POST", "/api/v1/query/async", {"query": "SELECT id, name FROM users", "month": MONTH})
        assert out["results"][0]["data"]["rows"] == [[1, "alice"]]
        tables = http.ok("GET", f"/api/v1/tables?month={MONTH}")["tables"]
        assert [t["name"] for t in tables] == ["users"]
        months = http.ok("GET", "/api/v1/months")["months"]
        assert months == [MONTH], months
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def assert_client_error(a):
    assert 400 <= a.status < 500, a
    assert isinstance(a.json, dict) and a.json.get("status") == "error", a
    assert isinstance(a.json.get("error"), str) and a.json["error"], a


# Months that are not real months, or not strings.
bad_months = st.one_of(
    st.sampled_from(["2026-13", "2026-00", "26-01", "../x", "2026-1", "2026/01", "", " 2026-01",
                     "2026-01; DROP TABLE users", "%2e%2e", "\u0000", "9999-99"]),
    st.text(max_size=12).filter(lambda s: not (len(s) == 7 and s[4] == "-" and s[:4].isdigit()
                                               and s[5:].isdigit() and 1 <= int(s[5:]) <= 12)),
)
wrong_types = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                             st.integers(), max_size=2))
not_objects = st.one_of(st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
                        st.none(), st.booleans())
injections = st.sampled_from([
    "INT); DROP TABLE users; --",
    "INT, evil INT",
    "INT) ; CREATE TABLE pwned (x INT",
    "INT DEFAULT (SELECT 1); DROP TABLE users",
    "VARCHAR); ATTACH '/tmp/x.db' AS x; --",
    "INT CHECK (1=1)); DELETE FROM users; --",
    "",
    "   ",
])
garbage = st.one_of(
    st.binary(max_size=40).filter(lambda b: not _is_json_object(b)),
    st.sampled_from([b"{", b"{\"query\": ", b"[1,", b"{\"query\": \"SELECT 1\"", b"\xff\xfe{}",
                     b"{\"query\": \"x\"}}", b"nul"]),
)


def _is_json_object(b):
    try:
        return isinstance(json.loads(b), dict)
    except Exception:
        return False


POSTS = {
    "/api/v1/query/async": {"query": "SELECT 1", "month": MONTH},
    "/api/v1/query": {"query": "SELECT 1", "month": MONTH},
    "/api/v1/modify/async": {"exec": "INSERT INTO users (name) VALUES (?)", "params": ["x"], "month": MONTH},
    "/api/v1/tables": {"table_name": "t_new", "columns": [{"name": "a", "type": "INT"}], "month": MONTH},
    "/api/v1/sync": {"month": MONTH},
    "/api/v1/verify": {"month": MONTH},
}
# Fields whose wrong type must be refused (a string where a list belongs, …).
TYPED = {
    "/api/v1/query/async": {"query": str, "months": list, "all_months": bool, "params": list},
    "/api/v1/query": {"query": str, "params": list},
    "/api/v1/modify/async": {"exec": str, "params": list, "is_batch": bool, "batch_params": list},
    "/api/v1/tables": {"table_name": str, "columns": list},
    "/api/v1/sync": {"timeout_s": float},
    "/api/v1/verify": {"month": str},
}
GETS = ["/api/v1/tables", "/api/v1/tables/users/schema", "/api/v1/nodes", "/api/v1/query/result/x"]

settings_ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@settings_
@given(path=st.sampled_from(sorted(POSTS)), body=garbage)
def test_bodies_that_are_not_json_objects(api, path, body):
    if path in ("/api/v1/sync", "/api/v1/verify") and not body.strip():
        return  # these take an empty body
    assert_client_error(api.post(path, raw=body))


@settings_
@given(path=st.sampled_from(sorted(POSTS)), body=not_objects)
def test_json_that_is_not_an_object(api, path, body):
    if path in ("/api/v1/sync", "/api/v1/verify") and body is None:
        return  # no body at all: these take an empty body
    assert_client_error(api.post(path, body))


@settings_
@given(data=st.data(), path=st.sampled_from(sorted(POSTS)))
def test_fields_of_the_wrong_type(api, data, path):
    field, kind = data.draw(st.sampled_from(sorted(TYPED[path].items())))
    value = data.draw(wrong_types.filter(
        lambda v: not isinstance(v, kind) and not (kind is float and isinstance(v, int)
                                                   and not isinstance(v, bool))))
    assert_client_error(api.post(path, {**POSTS[path], field: value}))


@settings_
@given(path=st.sampled_from(sorted(POSTS)), month=bad_months)
def test_invalid_months_in_bodies(api, path, month):
    assert_client_error(api.post(path, {**POSTS[path], "month": month}))


@settings_
@given(path=st.sampled_from(GETS), month=bad_months)
def test_invalid_months_in_query_strings(api, path, month):
    from urllib.parse import quote
    assert_client_error(api.get(f"{path}?month={quote(month)}"))


@settings_
@given(months=st.lists(bad_months, min_size=1, max_size=3))
def test_invalid_month_lists(api, months):
    assert_client_error(api.post("/api/v1/query/async", {"query": "SELECT 1", "months": months}))


@settings_
@given(col_type=injections, name=st.sampled_from(["a", "b"]))
def test_column_types_that_smuggle_statements(api, col_type, name):
    a = api.post("/api/v1/tables", {"table_name": "evil", "month": MONTH,
                                    "columns": [{"name": name, "type": col_type}]})
    assert a.status == 400, a
    assert_client_error(a)


@settings_
@given(table=st.sampled_from(['users"; DROP TABLE users; --', "users; DROP TABLE users",
                              "x' OR '1'='1", "../../etc/passwd", "users\u0000"]))
def test_injection_in_names_is_quoted(api, table):
    # A schema lookup of a strange name is simply "not found".
    from urllib.parse import quote
    a = api.get(f"/api/v1/tables/{quote(table, safe='')}/schema?month={MONTH}")
    assert a.status == 404, a
    assert_client_error(a)


@pytest.mark.parametrize("body", [
    {"exec": "INSERT INTO users (name) VALUES (?)", "is_batch": True},
    {"exec": "INSERT INTO users (name) VALUES (?)", "is_batch": True, "batch_params": []},
    {"exec": "INSERT INTO users (name) VALUES (?)", "batch_params": [["x"]]},
    {"exec": "INSERT INTO users (id, name) VALUES (?, ?)", "is_batch": True,
     "batch_params": [[1, "dup"], [1, "dup"]]},
    {"params": ["x"]},
    {"exec": "INSERT INTO nope VALUES (1)"},
    {"exec": "SELEC 1"},
    {"exec": "INSERT INTO users (name) VALUES (?)", "params": ["a", "b", "c"]},
    {"exec": "ATTACH '/tmp/other.db' AS o"},
    {"exec": "INSERT INTO users (name) VALUES (?); DROP TABLE users"},
])
def test_bad_writes(api, body):
    assert_client_error(api.post("/api/v1/modify/async", {**body, "month": MONTH}))


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/nope"), ("DELETE", "/api/v1/tables"), ("PUT", "/api/v1/query/async"),
    ("GET", "/api/v1/query/async"), ("POST", "/api/v1/months"),
])
def test_unknown_routes_and_methods(api, method, path):
    assert_client_error(api.request(method, path))


def test_unknown_but_valid_months(api):
    # Reads of a month without files: not found / empty, nothing created.
    assert api.get("/api/v1/nodes?month=2031-01").status == 404
    assert api.ok("GET", "/api/v1/tables?month=2031-01")["count"] == 0
    assert_client_error(api.post("/api/v1/query/async", {"query": "SELECT * FROM users", "month": "2031-01"}))
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT 1", "months": ["2031-01"]})
    assert out["successful_months"] == 0 and "does not exist" in out["results"][0]["error"]
    assert api.post("/api/v1/sync", {"month": "2031-01"}).status == 404
