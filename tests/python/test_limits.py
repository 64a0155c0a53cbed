"""The server's limits against the real binary with real clients (the ADBC
Flight SQL driver, pyarrow.flight, HTTP):

- Cancellation stops DuckDB, not only the call: ADBC `adbc_cancel`, Flight
  `CancelFlightInfo`, Flight SQL `CancelQuery`, a DoGet reader's `cancel()`,
  a dropped DoGet stream and a killed client process each leave the server
  quiet (its CPU time, from /proc, stops growing), having first shown the
  query burning CPU.
- `--query-timeout`: DEADLINE_EXCEEDED, for a query's first batch and while
  it streams; DuckDB stops.
- The session option `query_timeout` (int, double or string), capped at the
  server's `--query-timeout`, shown by `GetSessionOptions`.
- `--max-concurrent-queries` / `--max-queued-queries`: a query waits for its
  turn, one more is UNAVAILABLE at once (HTTP 503), writes through the update
  paths still run, and the queue drains when the running query is cancelled.
- `--max-sessions`: transactions and sessions together, admins exempt;
  `list_sessions` / `kill_session` free a place.

The long query, `sum(hash(i))` over 2e11 rows, produces its one row after
minutes: its GetFlightInfo runs DuckDB. The "trickle" query produces a
burst of rows at once and then one row per 1e7-1e8 rows: its GetFlightInfo
returns while DuckDB keeps working, so it can be cancelled by FlightInfo,
on its DoGet stream, or time out while streaming.
"""

import gc
import os
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from conftest import adbc, start_server, stop, sync
from flight_raw import _field
from http_client import Http
from test_security import (MONTH_HDR, Flight, Problems, User, basic, executemany, packed, query_desc, rows,
                           statement, write_users)
from test_security import s as pb_string

# ADBC statements left open by a stopped server complain when collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

Code = adbc_driver_manager.AdbcStatusCode
MONTH = "2030-06"
LONG = "SELECT sum(hash(i)) AS s FROM range(200000000000) t(i)"


def trickle(every):
    """A query whose first rows come at once, then one per `every` rows: a
    16 MB burst, because DuckDB hands out a streaming result's first chunk
    only once its streaming buffer (10 MB) is full or the query ends."""
    return (f"SELECT i, repeat('x', 1000) AS pad FROM range(200000000000) t(i) "
            f"WHERE i < 16000 OR hash(i) % {every} = 0")


# ---------------------------------------------------------------- CPU time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def burned(pid, window):
    before = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - before


def assert_busy(pid, what, tries=8):
    """The query runs: > 1 CPU-second in some 1.5 s window (so that a quiet
    server afterwards means the cancel stopped it)."""
    seen = []
    for _ in range(tries):
        seen.append(round(burned(pid, 1.5), 2))
        if seen[-1] > 1.0:
            return
    pytest.fail(f"{what}: never > 1 CPU-s in a 1.5 s window: {seen}")


def assert_quiet(pid, what):
    """DuckDB stopped: < 0.6 CPU-seconds in 3 s, starting 1 s after."""
    time.sleep(1)
    b = burned(pid, 3)
    assert b < 0.6, f"{what}: the server burned {b:.2f} CPU-s in 3 s afterwards: DuckDB still runs"


# ---------------------------------------------------------------- helpers


class Bg(threading.Thread):
    """`fn` on a thread of its own, keeping its result or exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - kept for the test
            self.error = e

    def outcome(self, timeout):
        self.join(timeout)
        assert not self.is_alive(), f"still running {timeout} s later"
        return self.error if self.error is not None else self.result


def _varint_at(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def pb_fields(buf):
    """(field number, value) of a protobuf message: ints for varints, bytes
    otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint_at(buf, i)
        wire = key & 7
        if wire == 0:
            v, i = _varint_at(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint_at(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, v


def pb_map(buf, value):
    """A map<string, M> at field 1, values decoded by `value`."""
    out = {}
    for num, entry in pb_fields(buf):
        if num == 1:
            kv = dict(pb_fields(entry))
            out[kv.get(1, b"").decode()] = value(kv.get(2, b""))
    return out


def option_value(buf):
    """A SessionOptionValue as Python."""
    for num, v in pb_fields(buf):
        return {1: lambda: v.decode(), 2: lambda: bool(v), 3: lambda: struct.unpack("<q", v)[0],
                4: lambda: struct.unpack("<d", v)[0],
                5: lambda: [x.decode() for n, x in pb_fields(v) if n == 1]}[num]()
    return None


def option_wire(v):
    """A Python value as a SessionOptionValue."""
    if isinstance(v, bool):
        return bytes([0x10, int(v)])
    if isinstance(v, int):
        return b"\x19" + struct.pack("<q", v)  # sfixed64 int64_value = 3
    if isinstance(v, float):
        return b"\x21" + struct.pack("<d", v)  # double double_value = 4
    return _field(1, v.encode())


class Session(Flight):
    """A pyarrow client (test_security.Flight) in one Flight session: it
    keeps the `arrow_flight_session_id` cookie the server sets and sends it
    back on every call."""

    def set_options(self, **options):
        """SetSessionOptions; the refused options {name: error code}."""
        body = b"".join(_field(1, _field(1, k.encode()) + _field(2, option_wire(v))) for k, v in options.items())
        res = self.raw_action("SetSessionOptions", body)
        cookie = self.header("set-cookie")
        if cookie:
            self.headers = [h for h in self.headers if h[0] != b"cookie"] + \
                [(b"cookie", cookie.split(";")[0].strip().encode())]
        return pb_map(res[0] if res else b"", lambda e: dict(pb_fields(e)).get(1, 0))

    def get_options(self):
        res = self.raw_action("GetSessionOptions")
        return pb_map(res[0] if res else b"", option_value)

    def close_session(self):
        res = self.raw_action("CloseSession")
        return dict(pb_fields(res[0])).get(1, 0) if res else None


def cancel_flight_info(client, info):
    """Flight's CancelFlightInfo action: the CancelStatus (1 = cancelled,
    3 = not cancellable)."""
    res = client.raw_action("CancelFlightInfo", _field(1, info.serialize()))
    return dict(pb_fields(res[0])).get(1, 0)


def cancel_query(client, info):
    """Flight SQL's (deprecated) CancelQuery action: the CancelResult."""
    req = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.ActionCancelQueryRequest") + \
        _field(2, _field(1, info.serialize()))
    res = client.raw_action("CancelQuery", req)
    any_ = dict(pb_fields(res[0]))
    return dict(pb_fields(any_.get(2, b""))).get(1, 0)


def plan(client, sql, month=MONTH):
    """GetFlightInfo of a statement (the result is parked until fetched)."""
    return client.client.get_flight_info(query_desc(sql), options=client._opts(month))


def healthy(S):
    """The server still answers a query."""
    assert S.proc.poll() is None, f"the server exited with {S.proc.returncode}"
    assert Flight(S.uri).sql("SELECT 42 AS v", MONTH).to_pylist() == [{"v": 42}]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Servers by their extra flags, started on first use (one replica, a
    month with a table), all stopped (SIGTERM, exit 0) at the end."""
    started = {}

    def get(*flags):
        if flags not in started:
            root = tmp_path_factory.mktemp("limits")
            proc, uri = start_server(str(root / "data"), "--replicas", "1", *map(str, flags))
            S = started[flags] = SimpleNamespace(proc=proc, pid=proc.pid, uri=uri, http=proc.http_url)
            with adbc(uri, MONTH) as c:
                rows(c, "CREATE TABLE t AS SELECT range AS i FROM range(10)")
        return started[flags]

    yield get
    for S in started.values():
        stop_or_kill(S.proc)


def stop_or_kill(proc):
    """stop(); a server that does not exit in time is killed (a statement
    left running must not outlive the tests), then the failure reported."""
    try:
        stop(proc, timeout=30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


# ---------------------------------------------------------------- cancellation


CANCELS = ["adbc_cancel", "CancelFlightInfo", "CancelQuery", "reader.cancel", "stream dropped", "client killed"]


@pytest.mark.parametrize("how", CANCELS)
def test_a_cancelled_query_stops_duckdb(servers, how):
    """However a client gives up on a running query, DuckDB stops working on
    it: the server burns CPU for it before and is quiet after.

    adbc_cancel: ADBC `cursor.execute` on a thread (the prepared
    GetFlightInfo runs DuckDB), `cursor.adbc_cancel()` from another ->
    CANCELLED. CancelFlightInfo / CancelQuery: the trickle query's parked
    result, cancelled by its FlightInfo (status CANCELLED; a second cancel is
    NOT_CANCELLABLE and its ticket is gone). reader.cancel: its DoGet stream,
    cancelled after the first batch. stream dropped: the DoGet reader dropped
    and the client closed after the first batch. client killed: a process
    blocked in GetFlightInfo of the long query is SIGKILLed (its
    connection closes)."""
    S = servers()
    what = how
    if how == "adbc_cancel":
        with adbc(S.uri, MONTH) as conn:
            cur = conn.cursor()
            bg = Bg(lambda: cur.execute(LONG))
            assert_busy(S.pid, what)
            assert bg.is_alive(), bg.error
            cur.adbc_cancel()
            err = bg.outcome(15)
            assert isinstance(err, adbc_driver_manager.Error), f"not cancelled: {err!r}"
            assert err.status_code == Code.CANCELLED, err
            assert_quiet(S.pid, what)
            cur.close()
    elif how in ("CancelFlightInfo", "CancelQuery"):
        f = Flight(S.uri, timeout=60)
        info = plan(f, trickle(10**8))
        assert_busy(S.pid, what)
        cancel = cancel_flight_info if how == "CancelFlightInfo" else cancel_query
        assert cancel(f, info) == 1, "CANCELLED expected"
        assert_quiet(S.pid, what)
        assert cancel(f, info) == 3, "NOT_CANCELLABLE expected once cancelled"
        with pytest.raises((KeyError, pa.ArrowException), match="not found"):
            f.client.do_get(info.endpoints[0].ticket, options=f._opts(MONTH)).read_all()
    elif how in ("reader.cancel", "stream dropped"):
        f = Flight(S.uri, timeout=60)
        info = plan(f, trickle(10**8))
        reader = f.client.do_get(info.endpoints[0].ticket, options=f._opts(MONTH))
        first = reader.read_chunk().data
        assert first.num_rows >= 1
        assert_busy(S.pid, what)
        if how == "reader.cancel":
            reader.cancel()
        else:
            held = [reader]
            del reader
            Bg(lambda: (held.clear(), gc.collect(), f.client.close())).outcome(15)
        assert_quiet(S.pid, what)
    elif how == "client killed":
        code = ("import sys, pyarrow.flight as fl\n"
                "fl.FlightClient(sys.argv[1]).get_flight_info(\n"
                "    fl.FlightDescriptor.for_command(bytes.fromhex(sys.argv[2])),\n"
                "    options=fl.FlightCallOptions(headers=[(b'x-duckflock-month', sys.argv[3].encode())]))\n")
        child = subprocess.Popen([sys.executable, "-c", code, S.uri, query_desc(LONG).command.hex(), MONTH],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert_busy(S.pid, what)
            assert child.poll() is None, child.stderr.read().decode(errors="replace")
        finally:
            child.kill()
            child.wait(timeout=30)
        assert_quiet(S.pid, what)
    healthy(S)


# ---------------------------------------------------------------- query timeouts


def timed_out(fn, client_timeout):
    """Runs `fn`, which must fail with the server's DEADLINE_EXCEEDED (not a
    client-side deadline); the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(fl.FlightTimedOutError, match="query timeout"):
        fn()
    took = time.monotonic() - t0
    assert took < client_timeout - 5, f"{took:.1f} s: the client's own deadline, not the server's"
    return took


def test_query_timeout_stops_long_queries(servers):
    """--query-timeout 2: the long query answers DEADLINE_EXCEEDED within
    ~10 s through ADBC (status TIMEOUT) and pyarrow GetFlightInfo
    (FlightTimedOutError); a query whose first batch came at once times out
    while its DoGet streams; DuckDB stops each time; short queries run."""
    S = servers("--query-timeout", "2")
    with adbc(S.uri, MONTH) as conn:
        cur = conn.cursor()
        t0 = time.monotonic()
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute(LONG)
        took = time.monotonic() - t0
        cur.close()
    assert e.value.status_code == Code.TIMEOUT, e.value
    assert "query timeout" in str(e.value), e.value
    assert 1.5 <= took < 10, took
    assert_quiet(S.pid, "ADBC after the timeout")

    f = Flight(S.uri, timeout=60)
    took = timed_out(lambda: plan(f, LONG), 60)
    assert 1.5 <= took < 10, took
    assert_quiet(S.pid, "GetFlightInfo after the timeout")

    t0 = time.monotonic()
    info = plan(f, trickle(10**7))
    assert time.monotonic() - t0 < 2, "the first batch should come before the timeout"
    took = timed_out(lambda: f.client.do_get(info.endpoints[0].ticket, options=f._opts(MONTH)).read_all(), 60)
    assert took < 10, took
    assert_quiet(S.pid, "DoGet after the timeout")
    healthy(S)


def test_a_session_sets_its_own_query_timeout(servers):
    """SetSessionOptions query_timeout = 1 (int, double or string): the
    session's long query is DEADLINE_EXCEEDED after ~1 s (the server's own
    is 30 s), GetSessionOptions shows 1.0, DuckDB stops. A session asking for
    more than --query-timeout gets the server's; 0 means the server's; a
    call outside the session keeps the server's; bad values are refused as
    INVALID_VALUE (2) and change nothing."""
    S = servers("--query-timeout", "30")
    for value in (1, 1.0, "1"):
        s = Session(S.uri, timeout=60)
        assert s.set_options(catalog=MONTH, query_timeout=value) == {}, value
        assert s.header("set-cookie") or any(h[0] == b"cookie" for h in s.headers), "no session cookie"
        assert s.get_options() == {"catalog": MONTH, "query_timeout": 1.0}, value
        took = timed_out(lambda: s.client.get_flight_info(query_desc(LONG), options=s._opts()), 60)
        assert took < 10, (value, took)
        assert s.close_session() == 1
    assert_quiet(S.pid, "after the session's timeouts")

    s = Session(S.uri)
    assert s.set_options(query_timeout=100) == {}
    assert s.get_options()["query_timeout"] == 30.0, "capped at --query-timeout"
    assert s.set_options(query_timeout=0) == {}
    assert s.get_options()["query_timeout"] == 30.0, "0: the server's"
    assert s.set_options(query_timeout=2.5) == {}
    for bad in ("soon", -1, True, float("nan")):
        assert s.set_options(query_timeout=bad) == {"query_timeout": 2}, bad
        assert s.get_options()["query_timeout"] == 2.5, bad
    assert Session(S.uri).get_options()["query_timeout"] == 30.0, "outside the session: the server's"
    healthy(S)


# ---------------------------------------------------------------- admission


def test_admission_queues_refuses_and_recovers(servers):
    """--max-concurrent-queries 1 --max-queued-queries 1: with one long query
    running, a second waits for its turn; a third is refused at once,
    UNAVAILABLE naming --max-concurrent-queries, through ADBC (status IO),
    pyarrow (FlightUnavailableError) and HTTP (503); writes through the
    update paths (DoPut of a statement and of a prepared statement) still
    run. Cancelling the long query lets the second run, DuckDB stops, and
    new queries work again."""
    S = servers("--max-concurrent-queries", "1", "--max-queued-queries", "1")
    with adbc(S.uri, MONTH) as c:
        statement(c, "CREATE TABLE w (i INTEGER)", update=True)
    first_conn, second_conn = adbc(S.uri, MONTH), adbc(S.uri, MONTH)
    try:
        first, second = first_conn.cursor(), second_conn.cursor()
        bg1 = Bg(lambda: first.execute(LONG))
        assert_busy(S.pid, "the first query")
        bg2 = Bg(lambda: (second.execute("SELECT 42 AS v"), second.fetchall())[1])
        bg2.join(2)  # ordering only: the second reaches the queue before the third
        assert bg2.is_alive(), f"the second query did not wait for its turn: {bg2.error or bg2.result!r}"

        P = Problems()
        t0 = time.monotonic()
        with adbc(S.uri, MONTH) as c:
            P.adbc("third query (ADBC)", lambda: rows(c, "SELECT 1"), Code.IO, "--max-concurrent-queries")
        f = Flight(S.uri, timeout=30)
        P.flight("third query (pyarrow)", lambda: f.sql("SELECT 1", MONTH), fl.FlightUnavailableError,
                 "--max-concurrent-queries")
        P.http("third query (HTTP)", Http(S.http).post("/api/v1/query/async", {"query": "SELECT 1", "month": MONTH},
                                                       timeout=30), 503, "--max-concurrent-queries")
        refusing = time.monotonic() - t0
        with adbc(S.uri, MONTH) as c:
            try:
                n = statement(c, "INSERT INTO w VALUES (1), (2)", update=True)
                if n != 2:
                    P.append(f"DoPut CommandStatementUpdate: {n} rows instead of 2")
            except Exception as e:  # noqa: BLE001 - reported
                P.append(f"DoPut CommandStatementUpdate while the slot is taken: {e}")
            try:
                n = executemany(c, "INSERT INTO w VALUES (?)", [(3,), (4,)])
                if n != 2:
                    P.append(f"DoPut CommandPreparedStatementUpdate: {n} rows instead of 2")
            except Exception as e:  # noqa: BLE001 - reported
                P.append(f"DoPut CommandPreparedStatementUpdate while the slot is taken: {e}")
        if refusing > 10:
            P.append(f"the refusals took {refusing:.1f} s: not at once")
        if not bg2.is_alive():
            P.append(f"the queued query ended while the long one ran: {bg2.error or bg2.result!r}")
        P.check()

        first.adbc_cancel()
        err = bg1.outcome(15)
        assert isinstance(err, adbc_driver_manager.Error) and err.status_code == Code.CANCELLED, repr(err)
        assert bg2.outcome(15) == [(42,)], "the queued query runs once the turn is free"
        assert_quiet(S.pid, "after the cancel")
        first.close()
        second.close()
    finally:
        first_conn.close()
        second_conn.close()
    sync(S.uri, MONTH)
    assert Flight(S.uri).sql("SELECT count(*) AS n FROM w", MONTH).to_pylist() == [{"n": 4}]
    with adbc(S.uri, MONTH) as c:
        assert rows(c, "SELECT 7 AS v") == [{"v": 7}]
    a = Http(S.http).post("/api/v1/query/async", {"query": "SELECT 7 AS v", "month": MONTH})
    assert a.status == 200, a
    healthy(S)


# ---------------------------------------------------------------- sessions


SESSION_USERS = {
    "ada": User("admin", "ada-admin-Pa55"),
    "walt": User("writer", "walt-writer-Pa55"),
    "rita": User("reader", "rita-reader-Pa55!"),
}


def test_max_sessions_refuses_then_admin_kills(tmp_path):
    """--max-sessions 2 with users: two writer transactions (ADBC,
    autocommit off) fill it; a third transaction and a reader's session are
    UNAVAILABLE naming --max-sessions; the admin still gets in (a
    transaction and a session); list_sessions (admin only) lists them all
    with their owners and month; kill_session frees places, after which the
    third transaction opens, and the killed transaction is gone for its
    client."""
    users_file = tmp_path / "users.toml"
    write_users(users_file, SESSION_USERS)
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "1", "--users", str(users_file),
                             "--max-sessions", "2")
    opened = []

    def conn(who, autocommit=False):
        c = flight_sql.connect(uri, db_kwargs={"username": who, "password": SESSION_USERS[who].password,
                                               MONTH_HDR: MONTH}, autocommit=autocommit)
        opened.append(c)
        return c

    def flight(who, cls=Flight):
        return cls(uri, [("authorization", basic(who, SESSION_USERS[who].password))])

    try:
        rows(conn("ada", autocommit=True), "CREATE TABLE t AS SELECT 1 AS i")
        w1, w2 = conn("walt"), conn("walt")
        assert rows(w1, "SELECT i FROM t") == [{"i": 1}] and rows(w2, "SELECT i FROM t") == [{"i": 1}]
        P = Problems()
        P.adbc("third transaction (writer)", lambda: conn("walt"), Code.IO, "--max-sessions")
        P.flight("a reader's session", lambda: flight("rita", Session).set_options(catalog=MONTH),
                 fl.FlightUnavailableError, "--max-sessions")
        P.flight("a writer's session", lambda: flight("walt", Session).set_options(catalog=MONTH),
                 fl.FlightUnavailableError, "--max-sessions")
        P.check()

        admin_txn = conn("ada")
        assert rows(admin_txn, "SELECT i FROM t") == [{"i": 1}]
        admin_session = flight("ada", Session)
        assert admin_session.set_options(catalog=MONTH) == {}
        ada = flight("ada")
        listed = ada.action("list_sessions")["sessions"]
        assert sorted((s["kind"], s["user"], s["month"]) for s in listed) == [
            ("session", "ada", MONTH), ("transaction", "ada", MONTH),
            ("transaction", "walt", MONTH), ("transaction", "walt", MONTH)], listed
        with pytest.raises(fl.FlightUnauthorizedError):
            flight("walt").action("list_sessions")
        with pytest.raises(fl.FlightUnauthorizedError):
            flight("walt").action("kill_session", {"session": listed[0]["session"]})

        kill = [s for s in listed if s["user"] == "ada"] + [next(s for s in listed if s["user"] == "walt")]
        for s in kill:
            assert ada.action("kill_session", {"session": s["session"]}) == {
                "session": s["session"], "killed": s["kind"]}
        with pytest.raises((KeyError, pa.ArrowException), match="no session"):
            ada.action("kill_session", {"session": kill[0]["session"]})
        left = ada.action("list_sessions")["sessions"]
        assert [(s["kind"], s["user"]) for s in left] == [("transaction", "walt")], left

        w3 = conn("walt")
        assert rows(w3, "SELECT i FROM t") == [{"i": 1}]
        failed = []
        for name, c in (("w1", w1), ("w2", w2)):
            try:
                rows(c, "SELECT i FROM t")
            except adbc_driver_manager.Error as e:
                failed.append((name, e))
        assert len(failed) == 1, f"exactly the killed transaction fails: {failed}"
        assert failed[0][1].status_code == Code.NOT_FOUND, failed[0][1]
        # Full again: the limit still holds.
        with pytest.raises(fl.FlightUnavailableError, match="--max-sessions"):
            flight("rita", Session).set_options(catalog=MONTH)
    finally:
        for c in opened:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - killed transactions may not roll back
                pass
        stop_or_kill(proc)


# ---------------------------------------------------------------- ADBC writes under load


def test_adbc_cursor_writes_are_not_refused_while_queries_fill_the_server(servers):
    """With the query slot and the queue taken (--max-concurrent-queries 1
    --max-queued-queries 1), an ADBC `cursor.execute("INSERT ...")` still
    writes: admission is for reads, so that readers cannot starve writers.
    The DB-API `execute` of the Go driver runs every statement, writes
    included, as CreatePreparedStatement + GetFlightInfo of the prepared
    query (not DoPut), so this is the write path most ADBC clients use."""
    S = servers("--max-concurrent-queries", "1", "--max-queued-queries", "1")
    with adbc(S.uri, MONTH) as c:
        statement(c, "CREATE TABLE IF NOT EXISTS cw (i INTEGER)", update=True)
    first_conn, second_conn = adbc(S.uri, MONTH), adbc(S.uri, MONTH)
    try:
        first, second = first_conn.cursor(), second_conn.cursor()
        bg1 = Bg(lambda: first.execute(LONG))
        assert_busy(S.pid, "the long query")
        bg2 = Bg(lambda: (second.execute("SELECT 42 AS v"), second.fetchall())[1])
        bg2.join(2)  # ordering only: the second fills the queue
        assert bg2.is_alive(), f"the second query did not wait for its turn: {bg2.error or bg2.result!r}"
        try:
            with adbc(S.uri, MONTH) as c:
                cur = c.cursor()
                try:
                    cur.execute("INSERT INTO cw VALUES (1), (2)")
                except adbc_driver_manager.Error as e:
                    pytest.fail(f"cursor.execute(INSERT) refused while the query slot is taken: "
                                f"{e.status_code.name}: {e}")
                finally:
                    cur.close()
        finally:
            first.adbc_cancel()
            bg1.outcome(15)
            assert bg2.outcome(15) == [(42,)]
            first.close()
            second.close()
    finally:
        first_conn.close()
        second_conn.close()
    assert_quiet(S.pid, "after the cancel")
    sync(S.uri, MONTH)
    assert Flight(S.uri).sql("SELECT count(*) AS n FROM cw", MONTH).to_pylist() == [{"n": 2}]


# ---------------------------------------------------------------- waiting for a transaction's connection


BIG = "SELECT i, repeat('x', 1000) AS pad FROM range(1000000) t(i)"  # 1 GB: soon waits for its reader


def begin_transaction(client, month=MONTH):
    """Flight SQL BeginTransaction (pyarrow): the transaction id."""
    res = client.raw_action("BeginTransaction", packed("ActionBeginTransactionRequest"), month)
    return dict(pb_fields(dict(pb_fields(res[0]))[2]))[1]


def in_transaction(sql, txn):
    return fl.FlightDescriptor.for_command(packed("CommandStatementQuery", pb_string(1, sql) + _field(2, txn)))


@pytest.mark.parametrize("ends", ["query timeout", "client gone"])
def test_a_statement_waiting_for_its_transaction_keeps_its_limits(tmp_path, ends):
    """A transaction has one DuckDB connection: while statement A holds it
    (a big result parked unread, its producer waiting for the client),
    statement B of the same transaction (the long query) waits for it. B
    must keep its limits while it waits:

    query timeout: with --query-timeout 2, B (whose time is up while it
    waits) answers DEADLINE_EXCEEDED at the latest once A is cancelled, and
    DuckDB does not run it. client gone: B's client gives up (its own 3 s
    deadline) while B waits; once A is cancelled the server stays quiet (B
    does not run for nobody)."""
    flags = ["--query-timeout", "2"] if ends == "query timeout" else []
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "1", *flags)
    try:
        with adbc(uri, MONTH) as c:
            rows(c, "CREATE TABLE t AS SELECT 1 AS i")
        f = Flight(uri, timeout=60)
        txn = begin_transaction(f)
        a = f.client.get_flight_info(in_transaction(BIG, txn), options=f._opts(MONTH))
        g = Flight(uri, timeout=20 if ends == "query timeout" else 3)
        t0 = time.monotonic()
        b = Bg(lambda: g.client.get_flight_info(in_transaction(LONG, txn), options=g._opts(MONTH)))
        if ends == "client gone":
            err = b.outcome(15)
            # The client's own deadline: gRPC's DEADLINE_EXCEEDED, or, when
            # tonic's server side (which honours the grpc-timeout header)
            # sees it pass first, its CANCELLED "Timeout expired".
            own_deadline = isinstance(err, fl.FlightTimedOutError) or (
                isinstance(err, fl.FlightCancelledError) and "Timeout expired" in str(err))
            assert own_deadline and "query timeout" not in str(err), repr(err)
        else:
            b.join(4)
            assert b.is_alive(), f"B did not wait for the transaction's connection: {b.error or b.result!r}"
        assert cancel_flight_info(f, a) == 1
        if ends == "query timeout":
            err = b.outcome(30)
            took = time.monotonic() - t0
            assert isinstance(err, fl.FlightTimedOutError) and "query timeout" in str(err), \
                f"{took:.1f} s after it started, B's statement (--query-timeout 2) ended with {err!r}"
            assert took < 15, f"B's DEADLINE_EXCEEDED came {took:.1f} s after it started (--query-timeout 2)"
        assert_quiet(proc.pid, f"{ends}: after A was cancelled")
    finally:
        stop_or_kill(proc)
