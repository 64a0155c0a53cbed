"""pandas DataFrame from a query (materialises; prefer Arrow batches for big results)."""
import os

import adbc_driver_flightsql.dbapi as flight_sql

uri = os.environ.get("DUCKFLOCK_URI", "grpc://127.0.0.1:50051")
with flight_sql.connect(uri, autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SELECT 'duck' AS animal, 2 AS legs UNION ALL SELECT 'cow', 4")
    print("pandas:", cur.fetch_df().to_dict("records"))
