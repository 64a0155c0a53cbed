"""The access log (`--log-format json`): one JSON line per Flight call and
HTTP request on target `duckflock::access`, naming the user, peer, call,
month, node, rows, bytes, duration and status; statement text only at
debug level. Read from the real binary's stderr."""
import base64
import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest

MONTH = "2031-07"
PASSWORD = "access-log-password"
ROWS = 5000  # crosses DuckDB's 2,048-row vectors


def hash_password(binary, password):
    out = subprocess.run([binary, "hash-password"], input=password + "\n", text=True,
                         capture_output=True, check=True)
    return out.stdout.strip()


class Server:
    def __init__(self, root, debug):
        self.binary = os.environ.get("DUCKFLOCK_BIN", "duckflock")
        users = root / "users.toml"
        users.write_text(
            f'[[user]]\nname = "wendy"\npassword_hash = "{hash_password(self.binary, PASSWORD)}"\n'
            'role = "writer"\n')
        level = "duckflock=info,duckflock::access=debug" if debug else "duckflock=info"
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", str(root / "data"), "--flight-addr", "127.0.0.1:0",
             "--http-addr", "127.0.0.1:0", "--replicas", "1", "--users", str(users),
             "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RUST_LOG": level})
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()
        self.uri = self.http = None
        for line in self.proc.stdout:
            m = re.match(r"duckflock flight sql listening on (\S+)", line)
            if m:
                self.uri = f"grpc://{m.group(1)}"
            m = re.match(r"duckflock http listening on (\S+)", line)
            if m:
                self.http = f"http://{m.group(1)}"
                break
        assert self.uri and self.http, "server did not start"
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def adbc(self, password=PASSWORD):
        return flight_sql.connect(self.uri, db_kwargs={
            "username": "wendy", "password": password,
            "adbc.flight.sql.rpc.call_header.x-duckflock-month": MONTH}, autocommit=True)

    def post(self, path, body, password=PASSWORD):
        auth = base64.b64encode(f"wendy:{password}".encode()).decode()
        req = urllib.request.Request(self.http + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self):
        """SIGTERM, then every stderr line parsed as JSON (each must be)."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0
        self.reader.join(timeout=30)
        parsed = []
        for line in self.lines:
            line = line.strip()
            if line:
                parsed.append(json.loads(line))  # every line is JSON
        return parsed


def work(s):
    with s.adbc() as conn:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE t AS SELECT range AS i, 'v' || range AS v FROM range({ROWS})")
        cur.execute("SELECT * FROM t WHERE i >= ?", (0,))
        assert len(cur.fetchall()) == ROWS
        cur.close()
    status, body = s.post("/api/v1/query/async", {"query": "SELECT i FROM t WHERE i < 3000",
                                                 "month": MONTH})
    assert status == 200, body
    with pytest.raises(adbc_driver_manager.Error):
        with s.adbc("wrong password") as conn:
            conn.cursor().execute("SELECT 1")
    status, _ = s.post("/api/v1/query/async", {"query": "SELECT 1", "month": MONTH}, "wrong")
    assert status == 401


def access(lines):
    return [l for l in lines if l.get("target") == "duckflock::access" and l.get("message") == "access"]


def test_every_call_writes_one_json_access_line(tmp_path):
    s = Server(tmp_path, debug=False)
    work(s)
    lines = s.stop()
    got = access(lines)
    assert got, lines[-20:]
    for l in got:
        for field in ("door", "user", "peer", "call", "month", "node", "rows", "bytes", "ms", "status"):
            assert field in l, (field, l)
        assert l["level"] == "INFO"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", l["peer"]), l
    # The fetch of the prepared query: every row and its bytes, the node
    # that served it, the user who asked.
    gets = [l for l in got if l["door"] == "flight" and l["call"] == "DoGet" and l["rows"] == ROWS]
    assert gets, [l for l in got if l["door"] == "flight"]
    g = gets[0]
    assert g["user"] == "wendy" and g["status"] == "Ok" and g["month"] == MONTH, g
    assert g["bytes"] > ROWS * 8, g
    assert re.fullmatch(rf"{MONTH}/node_\d", g["node"]), g
    http = [l for l in got if l["door"] == "http" and l["call"] == "POST /api/v1/query/async"]
    ok = [l for l in http if l["status"] == "200"]
    assert len(ok) == 1 and ok[0]["user"] == "wendy" and ok[0]["rows"] == 3000, http
    assert ok[0]["month"] == MONTH and ok[0]["bytes"] > 0, ok[0]
    assert [l["user"] for l in http if l["status"] == "401"] == ["-"], http
    refused = [l for l in got if l["door"] == "flight" and l["status"] == "Unauthenticated"]
    assert refused and all(l["user"] == "-" for l in refused), refused
    # No statement text at info level.
    assert not any("SELECT * FROM t" in json.dumps(l) for l in lines), "statement text at info"


def test_statement_text_only_at_debug(tmp_path):
    s = Server(tmp_path, debug=True)
    work(s)
    lines = s.stop()
    texts = [l for l in lines if l.get("target") == "duckflock::access" and l.get("level") == "DEBUG"]
    assert any(l.get("sql") == "SELECT * FROM t WHERE i >= ?" and l.get("user") == "wendy" for l in texts), texts
    assert any("CREATE TABLE t AS" in (l.get("sql") or "") for l in texts), texts
