"""DB-API with the ADBC Flight SQL driver: create, insert with parameters, query."""
import os

import adbc_driver_flightsql.dbapi as flight_sql

uri = os.environ.get("DUCKFLOCK_URI", "grpc://127.0.0.1:50051")
# Choose the month (catalog) with a call header; without it the current month is used.
# autocommit=True: the DB-API default (False) runs everything in one transaction until commit().
with flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": "2026-01"}, autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name VARCHAR, price DECIMAL(10,2))")
    # Upserts (INSERT OR REPLACE) cannot be replicated by DuckDB's triggers yet:
    # delete then insert, in one executemany/transaction each.
    cur.execute("DELETE FROM products WHERE id IN (1, 2)")
    cur.executemany("INSERT INTO products VALUES (?, ?, ?)", [(1, "duck", 9.5), (2, "goose", 12.25)])
    cur.execute("SELECT name, price FROM products WHERE price > ? ORDER BY id", (10,))
    print("adbc_dbapi:", cur.fetchall())
