"""Starts the real duckflock binary for the Python client tests."""
import os
import re
import signal
import subprocess
import tempfile
import threading

import adbc_driver_flightsql.dbapi as flight_sql
import pytest


def start_server(data_dir, *extra):
    binary = os.environ.get("DUCKFLOCK_BIN", "duckflock")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--flight-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "duckflock=warn"},
    )
    uri = None
    for line in proc.stdout:
        m = re.match(r"duckflock flight sql listening on (\S+)", line)
        if m:
            uri = f"grpc://{m.group(1)}"
        m = re.match(r"duckflock http listening on (\S+)", line)
        if m and uri:
            # The HTTP gateway's base URL rides along on the process object.
            proc.http_url = f"http://{m.group(1)}"
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, uri
    raise RuntimeError("server exited before listening")


@pytest.fixture(scope="session")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = start_server(os.path.join(tmp, "data"))
        yield uri
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.fixture
def connect(server):
    """Opens ADBC Flight SQL connections; `month` sets the x-duckflock-month header."""
    opened = []

    def _connect(month=None, autocommit=True, **kwargs):
        db_kwargs = dict(kwargs)
        if month:
            db_kwargs["adbc.flight.sql.rpc.call_header.x-duckflock-month"] = month
        conn = flight_sql.connect(server, db_kwargs=db_kwargs, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for c in opened:
        try:
            c.close()
        except Exception:
            pass


_month_counter = [0]


@pytest.fixture
def month():
    """A month of its own for each test (isolation without cleanup)."""
    _month_counter[0] += 1
    n = _month_counter[0]
    return f"{2000 + n // 12:04d}-{n % 12 + 1:02d}"


def adbc(uri, month, autocommit=True):
    """An ADBC Flight SQL connection whose calls name `month`."""
    return flight_sql.connect(
        uri,
        db_kwargs={"adbc.flight.sql.rpc.call_header.x-duckflock-month": month},
        autocommit=autocommit,
    )


def stop(proc, timeout=60):
    """SIGTERM; the server must drain, checkpoint and exit 0."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout) == 0


def action(uri, name, body=None):
    """A JSON admin action's answer (raw pyarrow.flight client)."""
    from flight_raw import Client

    c = Client(uri)
    try:
        return c.action(name, body or {})
    finally:
        c.close()


def sync(uri, month, timeout_s=120):
    return action(uri, "sync", {"month": month, "timeout_s": timeout_s})
