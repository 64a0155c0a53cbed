"""Runs every client example against a freshly started server (used by the
test command). Fails if an example fails or prints nothing it should."""
import os
import re
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
binary = os.environ["DUCKFLOCK_BIN"]

with tempfile.TemporaryDirectory() as tmp:
    proc = subprocess.Popen([binary, "serve", "--data-dir", os.path.join(tmp, "data"), "--flight-addr", "127.0.0.1:0",
                             "--http-addr", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    addr = None
    for line in proc.stdout:
        m = re.match(r"duckflock flight sql listening on (\S+)", line)
        if m:
            addr = m.group(1)
            break
    assert addr, "server did not start"
    env = {**os.environ, "DUCKFLOCK_URI": f"grpc://{addr}"}
    examples = [
        ([sys.executable, "python/adbc_dbapi.py"], "adbc_dbapi: [('goose', Decimal('12.25'))]"),
        ([sys.executable, "python/pyarrow_table.py"], "pyarrow_table: streamed 1000000 rows"),
        ([sys.executable, "python/polars_example.py"], "polars: [{'bucket': 0, 'n': 135}"),
        ([sys.executable, "python/pandas_example.py"], "pandas: [{'animal': 'duck', 'legs': 2}"),
        ([os.path.join(os.path.dirname(binary), "examples", "flight_client"), f"http://{addr}"], "from rust"),
    ]
    failed = 0
    for cmd, expect in examples:
        out = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=120)
        ok = out.returncode == 0 and expect in out.stdout
        failed += not ok
        print(("ok   " if ok else "FAIL ") + " ".join(os.path.basename(c) for c in cmd[:2]))
        if not ok:
            print(out.stdout, out.stderr, sep="\n")
    # The examples' writes are committed: a fresh connection sees them.
    import adbc_driver_flightsql.dbapi as flight_sql

    with flight_sql.connect(f"grpc://{addr}", autocommit=True,
                            db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": "2026-01"}) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM products")
        persisted = cur.fetchone()[0] == 2
    failed += not persisted
    print(("ok   " if persisted else "FAIL ") + "example writes persisted")
    examples.append(None)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, "server did not shut down cleanly"
    print(f"examples: {len(examples) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
