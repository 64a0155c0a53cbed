"""polars reading through an ADBC connection."""
import os

import adbc_driver_flightsql.dbapi as flight_sql
import polars as pl

uri = os.environ.get("DUCKFLOCK_URI", "grpc://127.0.0.1:50051")
with flight_sql.connect(uri, autocommit=True) as conn:
    df = pl.read_database("SELECT range AS n, range % 3 AS bucket FROM range(30)", connection=conn)
    print("polars:", df.group_by("bucket").agg(pl.col("n").sum()).sort("bucket").to_dicts())
