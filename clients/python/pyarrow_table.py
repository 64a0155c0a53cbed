"""Results as a pyarrow Table, streamed as record batches."""
import os

import adbc_driver_flightsql.dbapi as flight_sql

uri = os.environ.get("DUCKFLOCK_URI", "grpc://127.0.0.1:50051")
with flight_sql.connect(uri, autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SELECT range AS i, range * 2 AS j FROM range(100000)")
    table = cur.fetch_arrow_table()
    print("pyarrow_table:", table.num_rows, "rows,", table.schema)
    # Or stream batch by batch without holding the whole result:
    cur.execute("SELECT range AS i FROM range(1000000)")
    total = sum(batch.num_rows for batch in cur.fetch_record_batch())
    print("pyarrow_table: streamed", total, "rows")
