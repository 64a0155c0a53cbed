"""Per-operation batches (the original API's is_batch + batch_params), through
the execute_batch admin action: each parameter row runs in its own
transaction, failures are reported by index and do not undo the others, and
the rows that succeeded reach the replicas."""

import pytest

from flight_raw import Client


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()


def test_failures_are_reported_by_index(client, month):
    client.update("CREATE TABLE people (id BIGINT PRIMARY KEY, name VARCHAR, age INTEGER)", month=month)
    rows = [
        [1, "ann", 30],
        [2, "bob", 31],
        [1, "dup", 32],            # duplicate key
        [3, "cy", "not a number"],  # conversion error
        [4, "di", None],
        [5, "ed", 35],
    ]
    report = client.action("execute_batch", {
        "sql": "INSERT INTO people VALUES (?, ?, ?)", "params": rows, "month": month})
    token = client.header("x-duckflock-token")
    assert report["total"] == 6
    assert report["succeeded"] == 4
    assert report["failed"] == 2
    assert report["affected_rows"] == 4
    assert [e["index"] for e in report["errors"]] == [2, 3]
    assert "Duplicate key" in report["errors"][0]["error"]
    assert "not a number" in report["errors"][1]["error"]
    # The token names the last committed row: a replica serving it has them all.
    assert token and token.startswith(f"{month}:")
    t, node = client.query("SELECT id, name, age FROM people ORDER BY id", month=month, token=token)
    assert t.to_pylist() == [
        {"id": 1, "name": "ann", "age": 30},
        {"id": 2, "name": "bob", "age": 31},
        {"id": 4, "name": "di", "age": None},
        {"id": 5, "name": "ed", "age": 35},
    ]


def test_updates_count_rows_and_a_batch_is_not_a_transaction(client, month):
    client.update("CREATE TABLE stock (sku VARCHAR PRIMARY KEY, qty INTEGER CHECK (qty >= 0))", month=month)
    client.update("INSERT INTO stock VALUES ('a', 5), ('b', 1), ('c', 0)", month=month)
    report = client.action("execute_batch", {
        "sql": "UPDATE stock SET qty = qty - ? WHERE sku = ?",
        "params": [[1, "a"], [2, "b"], [1, "zzz"], [1, "a"]], "month": month})
    # 'b' would go negative (CHECK fails); 'zzz' matches nothing (succeeds, 0 rows).
    assert (report["total"], report["succeeded"], report["failed"], report["affected_rows"]) == (4, 3, 1, 2)
    assert [e["index"] for e in report["errors"]] == [1]
    client.action("sync", {"month": month})
    t, _ = client.query("SELECT sku, qty FROM stock ORDER BY sku", month=month)
    assert t.to_pylist() == [{"sku": "a", "qty": 3}, {"sku": "b", "qty": 1}, {"sku": "c", "qty": 0}]


def test_bad_batches_are_refused_whole(client, month):
    import pyarrow as pa
    import pyarrow.flight as fl

    refused = (pa.ArrowInvalid, fl.FlightError)
    with pytest.raises(refused, match="exactly one statement"):
        client.action("execute_batch", {"sql": "SELECT 1; SELECT 2", "params": [[1]], "month": month})
    with pytest.raises(refused, match="row 1 has 1 values"):
        client.action("execute_batch", {"sql": "SELECT ?, ?", "params": [[1, 2], [3]], "month": month})
    with pytest.raises(refused, match="DDL"):
        client.action("execute_batch", {"sql": "CREATE TABLE x (i INTEGER)", "params": [[1]], "month": month})
    empty = client.action("execute_batch", {"sql": "SELECT 1", "params": [], "month": month})
    assert (empty["total"], empty["succeeded"], empty["failed"]) == (0, 0, 0)
