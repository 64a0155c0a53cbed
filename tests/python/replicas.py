"""Compares every replica file of a month with its primary, using DuckDB itself
(duckdb==2.0.0, the server's engine version). Run on a stopped server."""

import os

import duckdb

INTERNAL = "__duckflock"


def _tables(con, db):
    return con.execute(
        f"""SELECT schema_name, table_name FROM duckdb_tables()
            WHERE database_name = '{db}' AND schema_name <> '{INTERNAL}' ORDER BY 1, 2"""
    ).fetchall()


def _catalog(con, db):
    cols = con.execute(
        f"""SELECT schema_name, table_name, column_name, data_type, column_default, is_nullable
            FROM duckdb_columns() WHERE database_name = '{db}' AND schema_name <> '{INTERNAL}'
            ORDER BY ALL"""
    ).fetchall()
    views = con.execute(
        f"""SELECT schema_name, view_name, sql FROM duckdb_views()
            WHERE database_name = '{db}' AND NOT internal ORDER BY ALL"""
    ).fetchall()
    seqs = con.execute(
        f"""SELECT schema_name, sequence_name, last_value, increment_by FROM duckdb_sequences()
            WHERE database_name = '{db}' AND schema_name <> '{INTERNAL}' ORDER BY ALL"""
    ).fetchall()
    idx = con.execute(
        f"""SELECT schema_name, index_name, table_name, sql FROM duckdb_indexes()
            WHERE database_name = '{db}' ORDER BY ALL"""
    ).fetchall()
    cons = con.execute(
        f"""SELECT schema_name, table_name, constraint_type, constraint_text FROM duckdb_constraints()
            WHERE database_name = '{db}' AND schema_name <> '{INTERNAL}' ORDER BY ALL"""
    ).fetchall()
    return {"columns": cols, "views": views, "sequences": seqs, "indexes": idx, "constraints": cons}


def q(name):
    return '"' + name.replace('"', '""') + '"'


def compare_month(month_dir, replicas):
    """Returns a list of differences (empty when every replica equals the primary)."""
    diffs = []
    con = duckdb.connect()
    con.execute(f"ATTACH '{os.path.join(month_dir, 'node_0.db')}' AS p (READ_ONLY)")
    ptables = _tables(con, "p")
    pcat = _catalog(con, "p")
    for i in range(1, replicas + 1):
        path = os.path.join(month_dir, f"node_{i}.db")
        if not os.path.exists(path):
            diffs.append(f"node_{i}: missing")
            continue
        con.execute(f"ATTACH '{path}' AS r (READ_ONLY)")
        rtables = _tables(con, "r")
        if rtables != ptables:
            diffs.append(f"node_{i}: tables {rtables} != {ptables}")
        rcat = _catalog(con, "r")
        for k in pcat:
            if rcat[k] != pcat[k]:
                diffs.append(f"node_{i}: {k} differ: {rcat[k]} != {pcat[k]}")
        for schema, table in ptables:
            if (schema, table) not in rtables:
                continue
            t = f"{q(schema)}.{q(table)}"
            a = con.execute(f"SELECT count(*) FROM (FROM p.{t} EXCEPT ALL FROM r.{t})").fetchone()[0]
            b = con.execute(f"SELECT count(*) FROM (FROM r.{t} EXCEPT ALL FROM p.{t})").fetchone()[0]
            n = con.execute(f"SELECT count(*) FROM p.{t}").fetchone()[0]
            if a or b:
                diffs.append(f"node_{i}: {t}: {a} rows only on primary, {b} only on replica (of {n})")
        con.execute("DETACH r")
    con.close()
    return diffs
