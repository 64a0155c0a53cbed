"""Security (issue 13) against the real binary through real clients: the ADBC
Flight SQL driver (Go), pyarrow.flight and HTTP (urllib).

- Users and hashes: `duckflock hash-password`, the `--users` TOML file,
  SIGHUP reloads.
- Flight authentication: Handshake with Basic credentials answers a bearer
  token (an HMAC-SHA256 JWT: sub, role, exp); Basic on any call, with or
  without base64 padding; the Go driver's username/password; wrong
  passwords, unknown users, expired, forged and garbage tokens are
  UNAUTHENTICATED; bad passwords are rate limited per user; random
  credentials and header values never authenticate nor crash the server.
- HTTP authentication: Basic or Bearer (the same tokens), 401 with
  WWW-Authenticate otherwise, `/health` open, `POST /api/v1/token`.
- Roles (reader, writer, admin) over every call kind of both doors; outside
  the role is PERMISSION_DENIED / 403 naming the role, and nothing changes; a
  reader never creates a month; a per-user month allow-list.
- TLS and mTLS on both doors; a non-loopback address needs users.
- The SQL sandbox for every role and every path (statements, prepared
  statements with and without parameters, HTTP), path escapes, and the holes
  of today's code: state-changing PRAGMA/CALL, temp objects left on pooled
  connections, cross-site POSTs, other months' spill files, unbounded month
  creation.

Servers are few and module-scoped: one with users (most tests), one without
users (the holes that need no new flag, so that they fail on today's code
for the reason they test), one with TLS, one with mTLS, and short-lived ones
for restarts, SIGHUP, CORS and --max-months.
"""

import base64
import datetime
import functools
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.flight as fl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import action, stop
from flight_raw import Client, _Factory, _field
from http_client import Answer, Http

# ADBC statements left open by a stopped server complain when collected.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

BIN = os.environ.get("DUCKFLOCK_BIN", "duckflock")
HDR = "adbc.flight.sql.rpc.call_header."
MONTH_HDR = HDR + "x-duckflock-month"
AUTH_HEADER = "adbc.flight.sql.authorization_header"
TLS_ROOT = "adbc.flight.sql.client_option.tls_root_certs"
MTLS_CERT = "adbc.flight.sql.client_option.mtls_cert_chain"
MTLS_KEY = "adbc.flight.sql.client_option.mtls_private_key"
QUERY_TIMEOUT = "adbc.flight.sql.rpc.timeout_seconds.query"
# gRPC UNAUTHENTICATED and PERMISSION_DENIED as the Go driver reports them.
UNAUTHENTICATED = adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
UNAUTHORIZED = adbc_driver_manager.AdbcStatusCode.UNAUTHORIZED
INVALID_ARGUMENT = adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT
# gRPC code names as the Go driver prints them, per ADBC status.
GRPC_NAMES = {UNAUTHENTICATED: "Unauthenticated", UNAUTHORIZED: "PermissionDenied"}

# Months of the server with users (each test keeps to its own).
M1 = "2031-01"  # the role matrix: t (3 rows), items (generated ids)
M2 = "2031-02"  # another month: its node files and spill files are out of M1's reach
M3 = "2031-03"  # only t3 (PRAGMA show_tables)
M_TEMP = "2031-05"  # temp objects on pooled connections
M_NEW_READER = "2031-09"  # a reader tries to create it: never exists
M_NEW_WRITER = "2031-10"  # a writer's create_month: refused, never exists
M_ADMIN = "2031-11"  # the admin's create_month
M_OUT = "2032-01"  # outside lim's allow-list, with rows
M_OUT_NEW = "2032-02"  # outside lim's allow-list, never created
T_ROWS = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]


@dataclass(frozen=True)
class User:
    role: str
    password: str
    months: tuple = ()


# Passwords of odd lengths (so that base64 of "user:password" has padding),
# one with a colon, a space and non-ASCII letters.
USERS = {
    "ada": User("admin", "ada-admin-Pa55"),
    "walt": User("writer", "wr:ter pässwörd"),
    "rita": User("reader", "rita-reader-Pa55!"),
    "lim": User("writer", "lim-writer-Pa55", ("2031-*",)),
    "wendy": User("reader", "wendy-wrong-guesses-Pa55"),  # wrong-password tests
    "tom": User("reader", "tom-locked-out-Pa55"),  # the rate limit
    "tim": User("reader", "tim-counter-reset-Pa55"),  # the rate limit counts consecutive failures
    "fuzz": User("reader", "fuzz-" + secrets.token_urlsafe(24)),  # random guesses
}


# ---------------------------------------------------------------- helpers


def canonical(p):
    """A path with symlinks resolved (DuckDB and the server compare those)."""
    return Path(os.path.realpath(p))


@functools.lru_cache(maxsize=None)
def hash_password(password):
    """`duckflock hash-password` of `password` (sent with a trailing newline)."""
    out = subprocess.run([BIN, "hash-password"], input=(password + "\n").encode(), capture_output=True,
                         timeout=120, env={**os.environ, "RUST_LOG": "duckflock=warn"})
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    lines = [line.strip() for line in out.stdout.decode().splitlines() if line.strip().startswith("$argon2id$")]
    assert len(lines) == 1, f"one $argon2id$ line expected: {out.stdout!r}"
    return lines[0]


def users_toml(users):
    out = []
    for name, u in users.items():
        out += ["[[user]]", f'name = "{name}"', f'password_hash = "{hash_password(u.password)}"',
                f'role = "{u.role}"']
        if u.months:
            out.append("months = [" + ", ".join(f'"{m}"' for m in u.months) + "]")
        out.append("")
    return "\n".join(out)


def write_users(path, users):
    """Writes the users file atomically (a reload never sees half of it)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(users_toml(users))
    os.replace(tmp, path)


def start(data_dir, *extra, flight="127.0.0.1:0", http="127.0.0.1:0"):
    """`duckflock serve`; returns (process, Flight address, HTTP address) as
    printed on its unchanged listening lines."""
    proc = subprocess.Popen(
        [BIN, "serve", "--data-dir", str(data_dir), "--flight-addr", flight, "--http-addr", http,
         *map(str, extra)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "duckflock=warn"})
    flight_addr = None
    for line in proc.stdout:
        m = re.match(r"duckflock flight sql listening on (\S+)", line)
        if m:
            flight_addr = m.group(1)
        m = re.match(r"duckflock http listening on (\S+)", line)
        if m and flight_addr:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, flight_addr, m.group(1)
    raise RuntimeError(f"the server exited ({proc.wait()}) before listening")


def loopback(addr):
    """A wildcard listen address as a client reaches it."""
    host, port = addr.rsplit(":", 1)
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]") else addr


def basic(user, password, pad=True):
    v = base64.b64encode(f"{user}:{password}".encode()).decode()
    return "Basic " + (v if pad else v.rstrip("="))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_decode(token):
    """(header, payload) of a JWT, unverified."""
    h, p, _ = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(p))


def jwt_sign(header, payload, key):
    signing = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    return signing + "." + b64url(hmac.new(key, signing.encode(), hashlib.sha256).digest())


def jwt_verifies(token, key):
    signing, sig = token.rsplit(".", 1)
    return hmac.compare_digest(b64url(hmac.new(key, signing.encode(), hashlib.sha256).digest()), sig)


def iso(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


SQL_TYPE = "type.googleapis.com/arrow.flight.protocol.sql."


def packed(name, body=b""):
    """A Flight SQL message packed in google.protobuf.Any."""
    return _field(1, (SQL_TYPE + name).encode()) + _field(2, body)


def s(num, text):
    """A protobuf string field."""
    return _field(num, text.encode())


def cmd(name, body=b""):
    return fl.FlightDescriptor.for_command(packed(name, body))


def query_desc(sql):
    return cmd("CommandStatementQuery", s(1, sql))


class Flight(Client):
    """flight_raw.Client whose every call carries `headers` (authorization,
    ...), with TLS options, a timeout, and the last call's response headers."""

    def __init__(self, uri, headers=(), timeout=30, **kw):
        self.factory = _Factory()
        self.client = fl.FlightClient(uri, middleware=[self.factory], **{k: v for k, v in kw.items() if v is not None})
        self.headers = [(k if isinstance(k, bytes) else k.encode(), v if isinstance(v, bytes) else v.encode())
                        for k, v in headers]
        self.timeout = timeout

    def _opts(self, month=None, token=None, months=None):
        h = list(self.headers)
        if month:
            h.append((b"x-duckflock-month", month.encode()))
        if token:
            h.append((b"x-duckflock-token", token.encode()))
        if months:
            h.append((b"x-duckflock-months", months.encode()))
        return fl.FlightCallOptions(headers=h, timeout=self.timeout)

    def raw_action(self, name, body=b"", month=None):
        return [r.body.to_pybytes() for r in self.client.do_action(fl.Action(name, body), options=self._opts(month))]

    def action(self, name, body=None, month=None):
        res = self.raw_action(name, json.dumps(body or {}).encode(), month)
        return json.loads(res[0]) if res and res[0] else None

    def fetch(self, desc, month=None, months=None):
        opts = self._opts(month, months=months)
        info = self.client.get_flight_info(desc, options=opts)
        return self.client.do_get(info.endpoints[0].ticket, options=opts).read_all()

    def sql(self, sql, month=None, months=None):
        return self.fetch(query_desc(sql), month, months)

    def login(self, user, password):
        """Handshake with Basic credentials: the (authorization, Bearer ...) pair."""
        return self.client.authenticate_basic_token(user, password, options=fl.FlightCallOptions(timeout=self.timeout))


class Api(Http):
    """http_client.Http with an Authorization header, a TLS context, and a
    choice of Content-Type (None leaves it out)."""

    def __init__(self, base, auth=None, context=None):
        super().__init__(base)
        self.auth = auth
        self.context = context

    def request(self, method, path, body=None, raw=None, headers=None, timeout=60,
                content_type="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {}
        if data is not None and content_type:
            h["Content-Type"] = content_type
        if self.auth:
            h["Authorization"] = self.auth
        for k, v in (headers or {}).items():
            for old in [x for x in h if x.lower() == k.lower()]:
                del h[old]
            if v is not None:
                h[k] = v
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as r:
                return Answer(r.status, r.headers, r.read().decode(errors="replace"))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read().decode(errors="replace"))


def rows(conn, sql, params=None):
    """ADBC `cursor.execute` (the Go driver prepares every statement: a
    CreatePreparedStatement, then the prepared query), as dicts."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetch_arrow_table().to_pylist()
    finally:
        cur.close()


def tuples(conn, sql):
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        cur.close()


def statement(conn, sql, update=False):
    """An ADBC statement that is not prepared: GetFlightInfo of a
    CommandStatementQuery, or DoPut of a CommandStatementUpdate (`update`)."""
    st = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
    try:
        st.set_sql_query(sql)
        if update:
            return st.execute_update()
        handle, _ = st.execute_query()
        return pa.RecordBatchReader._import_from_c(handle.address).read_all().to_pylist()
    finally:
        st.close()


def executemany(conn, sql, seq):
    """A prepared update (DoPut CommandPreparedStatementUpdate)."""
    cur = conn.cursor()
    try:
        cur.executemany(sql, seq)
        return cur.rowcount
    finally:
        cur.close()


def ingest(conn, table, data, mode):
    """Bulk ingest (DoPut CommandStatementIngest)."""
    cur = conn.cursor()
    try:
        return cur.adbc_ingest(table, data, mode=mode)
    finally:
        cur.close()


def poll_result(api, qid, timeout=30):
    deadline = time.time() + timeout
    while True:
        a = api.get(f"/api/v1/query/result/{qid}")
        if a.status != 202:
            return a
        assert time.time() < deadline, a
        time.sleep(0.05)


def data_rows(answer):
    return answer["results"][0]["data"]["rows"]


class Problems(list):
    """Every failed expectation of a loop, reported together."""

    def adbc(self, what, fn, code, *needles):
        try:
            fn()
        except adbc_driver_manager.Error as e:
            # The Go driver reports a status of BeginTransaction (autocommit
            # off) as IO "failed to update autocommit: rpc error: code = ...".
            wrapped = (e.status_code == adbc_driver_manager.AdbcStatusCode.IO
                       and f"code = {GRPC_NAMES.get(code, '?')}" in str(e))
            if e.status_code != code and not wrapped:
                self.append(f"{what}: {getattr(e.status_code, 'name', e.status_code)} instead of {code.name}: {e}")
            for n in needles:
                if n not in str(e):
                    self.append(f"{what}: {n!r} not in: {e}")
            return e
        except Exception as e:  # noqa: BLE001 - reported
            self.append(f"{what}: {type(e).__name__}: {e}")
            return e
        self.append(f"{what}: not refused")

    def denied_every_way(self, c, api, month, sqls):
        """Each of `sqls` PERMISSION_DENIED through ADBC on `c` (prepared,
        not prepared, as an update) and through HTTP query and modify."""
        for sql in sqls:
            self.adbc(f"prepared {sql}", lambda sql=sql: rows(c, sql), UNAUTHORIZED)
            self.adbc(f"statement {sql}", lambda sql=sql: statement(c, sql), UNAUTHORIZED)
            self.adbc(f"update {sql}", lambda sql=sql: statement(c, sql, update=True), UNAUTHORIZED)
            self.http(f"HTTP query {sql}", api.post("/api/v1/query/async", {"query": sql, "month": month}), 403)
            self.http(f"HTTP modify {sql}", api.post("/api/v1/modify/async", {"exec": sql, "month": month}), 403)

    def flight(self, what, fn, exc, *needles):
        try:
            fn()
        except exc as e:
            for n in needles:
                if n not in str(e):
                    self.append(f"{what}: {n!r} not in: {e}")
            return e
        except Exception as e:  # noqa: BLE001 - reported
            # pyarrow's GetSchema raises a plain OSError that names the
            # gRPC status instead of the Flight exception class.
            named = {
                fl.FlightUnauthenticatedError: "Flight returned unauthenticated error",
                fl.FlightUnauthorizedError: "Flight returned unauthorized error",
            }.get(exc)
            if named and isinstance(e, OSError) and named in str(e):
                return e
            self.append(f"{what}: {type(e).__name__} instead of {exc.__name__}: {e}")
            return e
        self.append(f"{what}: not refused")

    def http(self, what, a, status, *needles):
        if a.status != status:
            self.append(f"{what}: HTTP {a.status} instead of {status}: {a}")
            return
        if not (isinstance(a.json, dict) and a.json.get("status") == "error" and a.json.get("error")):
            self.append(f"{what}: not a JSON error: {a}")
            return
        for n in needles:
            if n not in a.json["error"]:
                self.append(f"{what}: {n!r} not in: {a.json['error']}")

    def check(self):
        assert not self, f"{len(self)} problem(s):\n" + "\n".join(self)


class Srv:
    """A running server and clients for it, as a user (`who`) or without
    credentials (who=None)."""

    def __init__(self, proc, flight_addr, http_addr, data, root, users=None, pki=None, **more):
        self.proc = proc
        self.printed = (flight_addr, http_addr)
        self.flight_addr = loopback(flight_addr)
        self.http_addr = loopback(http_addr)
        self.data = Path(data)
        self.root = Path(root)
        self.users = users or {}
        self.pki = pki
        self._bearers = {}
        self.__dict__.update(more)

    @property
    def uri(self):
        return ("grpc+tls://" if self.pki else "grpc://") + self.flight_addr

    @property
    def url(self):
        return ("https://" if self.pki else "http://") + self.http_addr

    def password(self, who):
        return self.users[who].password

    def flight(self, *headers, **kw):
        if self.pki:
            kw.setdefault("tls_root_certs", self.pki.ca_pem)
        return Flight(self.uri, headers, **kw)

    def bearer(self, who, fresh=False):
        """The (authorization, Bearer ...) pair from a Handshake as `who`."""
        if fresh or who not in self._bearers:
            self._bearers[who] = self.flight().login(who, self.password(who))
        return self._bearers[who]

    def token(self, who):
        return self.bearer(who)[1].decode().split(" ", 1)[1]

    def as_(self, who):
        """A pyarrow client whose calls carry `who`'s bearer token."""
        return self.flight(self.bearer(who)) if who else self.flight()

    def adbc(self, who=None, month=None, autocommit=True, token=None, **db):
        kw = {}
        if who:
            kw.update(username=who, password=self.password(who))
        if token:
            kw[AUTH_HEADER] = "Bearer " + token
        if month:
            kw[MONTH_HDR] = month
        if self.pki:
            kw[TLS_ROOT] = self.pki.ca_pem.decode()
        kw.update(db)
        return flight_sql.connect(self.uri, db_kwargs=kw, autocommit=autocommit)

    def http(self, who=None, auth=None):
        if who:
            auth = basic(who, self.password(who))
        ctx = ssl.create_default_context(cafile=str(self.pki.ca)) if self.pki else None
        return Api(self.url, auth, ctx)

    def months(self, who="ada"):
        return self.as_(who if self.users else None).action("list_months")["months"]

    def sync(self, month, who="ada"):
        return self.as_(who if self.users else None).action("sync", {"month": month, "timeout_s": 120})

    def primary_rows(self, month, sql, who="ada"):
        """`sql` inside a Flight SQL transaction, that is on the primary."""
        with self.adbc(who if self.users else None, month, autocommit=False) as c:
            try:
                return rows(c, sql)
            finally:
                c.rollback()


def snapshot(S, month=M1):
    """What an admin sees of `month` (on its primary and on a replica), the
    months and the exports: compared before and after refused calls."""
    state = {}
    with S.adbc("ada", month, autocommit=False) as c:
        for name, sql in [
            ("t", "SELECT * FROM t ORDER BY ALL"),
            ("tables", "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"),
            ("columns", "SELECT table_name, column_name, data_type FROM duckdb_columns() ORDER BY ALL"),
            ("views", "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY ALL"),
            ("sequences", "SELECT sequence_name FROM duckdb_sequences() ORDER BY ALL"),
        ]:
            state[name] = rows(c, sql)
        c.rollback()
    a = S.as_("ada")
    state["t on a replica"] = a.sql("SELECT * FROM t ORDER BY ALL", month).to_pylist()
    state["months"] = a.action("list_months")["months"]
    state["exports"] = sorted(e["name"] for e in a.action("list_exports")["exports"])
    state["export dir"] = sorted(os.listdir(S.data / "exports")) if (S.data / "exports").exists() else []
    return state


def alive(S):
    assert S.proc.poll() is None, f"the server exited with {S.proc.returncode}"
    assert Api(S.url, context=S.http().context).get("/health").status == 200


# ---------------------------------------------------------------- certificates


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and localhost, a client
    certificate from the CA, and one from another CA (PEM, PKCS#8 keys)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(d)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(ca):
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    def builder(subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(cn, cn, key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(usage(True), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(ca_key, cn, issuer, server):
        key = ec.generate_private_key(ec.SECP256R1())
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if server \
            else [x509.DNSName(cn)]
        cert = (builder(cn, issuer, key)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(usage(False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return key, cert

    out = SimpleNamespace()
    ca_key, ca_cert = ca("duckflock test CA")
    other_key, _ = ca("another CA")
    for label, (key, cert) in {
        "ca": (ca_key, ca_cert),
        "server": leaf(ca_key, "duckflock test server", "duckflock test CA", True),
        "client": leaf(ca_key, "duckflock-test-client", "duckflock test CA", False),
        "stranger": leaf(other_key, "stranger", "another CA", False),
    }.items():
        pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        (d / f"{label}.pem").write_bytes(pem)
        (d / f"{label}.key").write_bytes(key_pem)
        setattr(out, label, d / f"{label}.pem")
        setattr(out, f"{label}_key", d / f"{label}.key")
        setattr(out, f"{label}_pem", pem)
        setattr(out, f"{label}_key_pem", key_pem)
    return out


def https_status(url, ctx, timeout=10):
    """The HTTP status of a GET, or None when the connection was refused."""
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError, http.client.HTTPException, OSError):
        return None


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def users_server(tmp_path_factory):
    """Users of every role, a token key of the test's own, tables in several
    months (set up by the admin), one export and one file to read."""
    root = canonical(tmp_path_factory.mktemp("users"))
    data = root / "data"
    users_file = root / "users.toml"
    write_users(users_file, USERS)
    # Neither hex nor base64: the key is the file's bytes.
    secret = ("duckflock-test-secret!" + secrets.token_hex(24)).encode()
    secret_file = root / "token.secret"
    secret_file.write_bytes(secret)
    os.chmod(secret_file, 0o600)
    proc, f, h = start(data, "--replicas", "2", "--users", users_file, "--token-secret-file", secret_file,
                       "--token-ttl", "3600")
    S = Srv(proc, f, h, data, root, USERS, secret=secret, secret_file=secret_file, users_file=users_file)
    try:
        with S.adbc("ada", M1) as c:
            rows(c, "CREATE TABLE t (id INTEGER, v VARCHAR)")
            rows(c, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        api = S.http("ada")
        api.ok("POST", "/api/v1/tables", {"table_name": "items", "month": M1, "columns": [
            {"name": "id", "type": "BIGINT PRIMARY KEY"}, {"name": "name", "type": "VARCHAR"}]})
        api.ok("POST", "/api/v1/modify/async", {"exec": "INSERT INTO items (name) VALUES (?)",
                                                "params": ["first"], "month": M1})
        with S.adbc("ada", M2) as c:
            rows(c, "CREATE TABLE o AS SELECT 1 AS i")
        with S.adbc("ada", M3) as c:
            rows(c, "CREATE TABLE t3 (id INTEGER, v VARCHAR)")
        with S.adbc("ada", M_OUT) as c:
            rows(c, "CREATE TABLE t (id INTEGER, v VARCHAR)")
            rows(c, "INSERT INTO t VALUES (100, 'other month'), (101, 'other month')")
        a = S.as_("ada")
        a.action("export", {"query": "SELECT * FROM t ORDER BY id", "format": "csv", "name": "seed", "month": M1})
        (data / "files").mkdir(exist_ok=True)
        (data / "files" / "ok.csv").write_text("n\n7\n")
        for m in (M1, M2, M3, M_OUT):
            S.sync(m)
        yield S
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """No users and no new flag: the holes of today's code show here as
    what they are, not as an unknown flag."""
    root = canonical(tmp_path_factory.mktemp("open"))
    proc, f, h = start(root / "data", "--replicas", "2")
    try:
        yield Srv(proc, f, h, root / "data", root)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(canonical(tmp_path_factory.mktemp("pki")))


TLS_USERS = {k: USERS[k] for k in ("ada", "rita")}


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    root = canonical(tmp_path_factory.mktemp("tls"))
    users_file = root / "users.toml"
    write_users(users_file, TLS_USERS)
    proc, f, h = start(root / "data", "--replicas", "1", "--tls-cert", pki.server, "--tls-key", pki.server_key,
                       "--users", users_file)
    try:
        yield Srv(proc, f, h, root / "data", root, TLS_USERS, pki=pki)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    root = canonical(tmp_path_factory.mktemp("mtls"))
    proc, f, h = start(root / "data", "--replicas", "1", "--tls-cert", pki.server, "--tls-key", pki.server_key,
                       "--tls-client-ca", pki.ca)
    try:
        yield Srv(proc, f, h, root / "data", root, pki=pki)
    finally:
        stop(proc)


# ---------------------------------------------------------------- users and hashes


def test_hash_password_prints_an_argon2id_phc_hash():
    """`duckflock hash-password` reads one password from stdin and prints one
    argon2id PHC string, with a fresh salt each time (the hashes' use is
    shown by every login below: they were all made by this command)."""
    a, b = (hash_password.__wrapped__("the same password") for _ in range(2))
    for h in (a, b):
        assert re.fullmatch(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", h), h
    assert a != b, "the same password hashed twice must get two salts"


def test_without_users_the_server_stays_open(connect, month, server):
    """Without --users (the shared server) everything keeps working
    unauthenticated on loopback: queries, writes, actions."""
    conn = connect(month=month)
    assert rows(conn, "CREATE TABLE open_t AS SELECT 1 AS i") is not None
    assert rows(conn, "SELECT i FROM open_t") == [{"i": 1}]
    assert statement(conn, "INSERT INTO open_t VALUES (2)", update=True) == 1
    assert month in action(server, "list_months")["months"]


# ---------------------------------------------------------------- Flight authentication


def test_handshake_answers_a_signed_bearer_token(users_server):
    """pyarrow's authenticate_basic_token (Handshake, Basic with padding)
    answers `authorization: Bearer <JWT>`: HS256 over the --token-secret-file
    key, claims sub, role and exp = now + --token-ttl. The token alone then
    authenticates queries and actions."""
    S = users_server
    key, value = S.flight().login("rita", S.password("rita"))
    assert key.lower() == b"authorization", key
    assert value.startswith(b"Bearer "), value
    token = value.decode().split(" ", 1)[1]
    header, payload = jwt_decode(token)
    assert header["alg"] == "HS256", header
    assert payload["sub"] == "rita" and payload["role"] == "reader", payload
    assert abs(payload["exp"] - (time.time() + 3600)) < 120, payload
    assert jwt_verifies(token, S.secret), "the token is not signed with the --token-secret-file key"
    c = S.flight((key, value))
    assert c.sql("SELECT id, v FROM t ORDER BY id", M1).to_pylist() == T_ROWS
    assert M1 in c.action("list_months")["months"]
    # The same user signs in again: another valid token for the same user.
    again = jwt_decode(S.flight().login("rita", S.password("rita"))[1].decode().split(" ", 1)[1])[1]
    assert again["sub"] == "rita"


def test_basic_credentials_work_on_any_call_with_or_without_padding(users_server):
    """`authorization: Basic ...` on a call other than Handshake, raw without
    base64 padding (as the Go driver sends it) or with it: the call works
    and answers an `authorization: Bearer` header that works on its own."""
    S = users_server
    for who in ("rita", "walt"):
        creds = f"{who}:{S.password(who)}".encode()
        assert len(creds) % 3, "these credentials need base64 padding"
        for pad in (False, True):
            value = basic(who, S.password(who), pad=pad)
            assert value.endswith("=") == pad, value
            c = S.flight(("authorization", value))
            info = c.client.get_flight_info(query_desc("SELECT 42 AS v"), options=c._opts(M1))
            bearer = c.header("authorization")
            assert bearer and bearer.startswith("Bearer "), (who, pad, c.factory.last)
            assert c.client.do_get(info.endpoints[0].ticket, options=c._opts(M1)).read_all().to_pylist() \
                == [{"v": 42}]
            assert M1 in c.action("list_months")["months"]
            assert c.header("authorization").startswith("Bearer ")
            assert jwt_decode(bearer.split(" ", 1)[1])[1]["sub"] == who
            alone = S.flight(("authorization", bearer))
            assert alone.sql("SELECT count(*) AS n FROM t", M1).to_pylist() == [{"n": 3}]
    # A writer's DoPut update with raw Basic credentials.
    w = S.flight(("authorization", basic("walt", S.password("walt"), pad=False)))
    w.update("CREATE TABLE IF NOT EXISTS basic_put (i INTEGER)", M1)
    w.update("INSERT INTO basic_put VALUES (1)", M1)
    assert w.sql("SELECT count(*) AS n FROM basic_put", M1).to_pylist() == [{"n": 1}]


def test_adbc_username_and_password(users_server):
    """The ADBC Go driver with username/password db kwargs (Handshake, then
    the bearer on every call) runs statements, prepared statements, metadata
    calls; with the bearer given as its authorization header it works too."""
    S = users_server
    with S.adbc("walt", M1) as conn:
        assert rows(conn, "SELECT id, v FROM t ORDER BY id") == T_ROWS
        assert rows(conn, "SELECT v FROM t WHERE id = ?", (3,)) == [{"v": "c"}]
        assert statement(conn, "SELECT count(*) AS n FROM t") == [{"n": 3}]
        assert conn.adbc_get_table_schema("t", catalog_filter=M1, db_schema_filter="main").names == ["id", "v"]
    with S.adbc(token=S.token("rita"), month=M1) as conn:
        assert rows(conn, "SELECT count(*) AS n FROM t") == [{"n": 3}]


class _SilentHandshake(fl.ClientAuthHandler):
    """A Handshake that sends nothing."""

    def authenticate(self, outgoing, incoming):
        pass

    def get_token(self):
        return b""


def no_credential_calls(S):
    """Every kind of Flight call, without credentials."""
    c = S.flight()
    return [
        ("Handshake without credentials",
         lambda: S.flight().client.authenticate(_SilentHandshake(), options=fl.FlightCallOptions(timeout=30))),
        ("ListActions", lambda: c.client.list_actions(options=c._opts())),
        ("ListFlights", lambda: list(c.client.list_flights(options=c._opts()))),
        ("GetSchema", lambda: c.client.get_schema(query_desc("SELECT 1"), options=c._opts(M1))),
        ("query", lambda: c.sql("SELECT * FROM t", M1)),
        ("GetCatalogs", lambda: c.fetch(cmd("CommandGetCatalogs"))),
        ("GetDbSchemas", lambda: c.fetch(cmd("CommandGetDbSchemas", s(1, M1)))),
        ("GetTables", lambda: c.fetch(cmd("CommandGetTables", s(1, M1)))),
        ("GetTableTypes", lambda: c.fetch(cmd("CommandGetTableTypes"))),
        ("GetSqlInfo", lambda: c.fetch(cmd("CommandGetSqlInfo"))),
        ("GetXdbcTypeInfo", lambda: c.fetch(cmd("CommandGetXdbcTypeInfo"))),
        ("GetPrimaryKeys", lambda: c.fetch(cmd("CommandGetPrimaryKeys", s(1, M1) + s(2, "main") + s(3, "items")))),
        ("DoGet of a made-up ticket", lambda: c.client.do_get(fl.Ticket(b"made-up"), options=c._opts(M1)).read_all()),
        ("DoPut update", lambda: c.update("INSERT INTO t VALUES (9, 'x')", M1)),
        ("CreatePreparedStatement", lambda: c.raw_action(
            "CreatePreparedStatement", packed("ActionCreatePreparedStatementRequest", s(1, "SELECT 1")), M1)),
        ("BeginTransaction", lambda: c.raw_action("BeginTransaction", packed("ActionBeginTransactionRequest"), M1)),
        ("GetSessionOptions", lambda: c.raw_action("GetSessionOptions")),
        ("CloseSession", lambda: c.raw_action("CloseSession")),
        ("list_months", lambda: c.action("list_months")),
        ("node_status", lambda: c.action("node_status", {"month": M1})),
        ("list_files", lambda: c.action("list_files")),
        ("sync", lambda: c.action("sync", {"month": M1})),
        ("create_month", lambda: c.action("create_month", {"month": M_NEW_READER})),
    ]


def test_every_flight_call_needs_credentials(users_server):
    """Without credentials every Flight call (Handshake, listings, queries,
    metadata, DoGet, DoPut, prepared statements, transactions, sessions,
    actions) is UNAUTHENTICATED, through pyarrow and through ADBC, and
    nothing changed."""
    S = users_server
    before = snapshot(S)
    P = Problems()
    for what, fn in no_credential_calls(S):
        P.flight(what, fn, fl.FlightUnauthenticatedError)

    def adbc_without_credentials():
        with S.adbc(month=M1) as c:
            rows(c, "SELECT * FROM t")

    P.adbc("ADBC without credentials", adbc_without_credentials, UNAUTHENTICATED)
    P.check()
    assert snapshot(S) == before
    assert M_NEW_READER not in S.months()


def test_wrong_passwords_and_unknown_users_are_unauthenticated(users_server):
    """A wrong or empty password and an unknown user are UNAUTHENTICATED
    through Handshake, Basic on a call, ADBC and HTTP; the right password
    still works afterwards (fewer than 5 consecutive failures)."""
    S = users_server
    P = Problems()

    def attempts(who, password, tag):
        P.flight(f"{tag}: Handshake", lambda: S.flight().login(who, password), fl.FlightUnauthenticatedError)
        P.flight(f"{tag}: Basic on a call", lambda: S.flight(("authorization", basic(who, password, pad=False)))
                 .action("list_months"), fl.FlightUnauthenticatedError)

        def adbc():
            with flight_sql.connect(S.uri, db_kwargs={"username": who, "password": password, MONTH_HDR: M1},
                                    autocommit=True) as c:
                rows(c, "SELECT 1")

        P.adbc(f"{tag}: ADBC", adbc, UNAUTHENTICATED)
        a = Api(S.url, basic(who, password)).get("/api/v1/months")
        P.http(f"{tag}: HTTP", a, 401)

    attempts("wendy", "not-her-password", "wrong password")
    assert S.flight().login("wendy", S.password("wendy"))[1].startswith(b"Bearer ")
    attempts("wendy", "", "empty password")
    assert S.flight().login("wendy", S.password("wendy"))[1].startswith(b"Bearer ")
    for who, pw in [("nobody", "whatever"), ("", "")]:
        attempts(who, pw, f"unknown user {who!r}")
    # Someone else's password.
    attempts("wendy", S.password("rita"), "another user's password")
    assert S.flight().login("wendy", S.password("wendy"))[1].startswith(b"Bearer ")
    P.check()


def forged_tokens(S, real):
    """Tokens that must never authenticate, by name; and one validly signed
    with the server's key (the control: our signing matches the server's)."""
    h, p, sig = real.split(".")
    header, payload = jwt_decode(real)
    now = int(time.time())
    admin = {**payload, "sub": "ada", "role": "admin", "exp": now + 3600}

    def enc(obj):
        return b64url(json.dumps(obj, separators=(",", ":")).encode())

    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    forged = {
        "signed with another key": jwt_sign(header, admin, b"not the server's key"),
        "signed with an empty key": jwt_sign(header, admin, b""),
        "payload changed to role admin": f"{h}.{enc({**payload, 'role': 'admin'})}.{sig}",
        "payload changed to another user": f"{h}.{enc({**payload, 'sub': 'ada', 'role': 'admin'})}.{sig}",
        "payload with a later exp": f"{h}.{enc({**payload, 'exp': payload['exp'] + 86400})}.{sig}",
        "alg none": f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(admin)}.",
        "alg HS512 header": f"{enc({**header, 'alg': 'HS512'})}.{p}.{sig}",
        "signature changed": f"{h}.{p}.{flipped}",
        "signature removed": f"{h}.{p}.",
        "truncated": real[:-6],
        "expired, signed with the server's key": jwt_sign(header, {**payload, "exp": now - 120}, S.secret),
        "unknown user, signed with the server's key": jwt_sign(header, {**payload, "sub": "mallory"}, S.secret),
        "no exp, signed with the server's key": jwt_sign(header, {k: v for k, v in payload.items() if k != "exp"},
                                                          S.secret),
        "garbage": "not-a-token",
        "three dots": "a.b.c",
        "empty": "",
        "the token twice": real + real,
    }
    control = jwt_sign(header, {**payload, "exp": now + 600}, S.secret)
    return forged, control


def test_forged_expired_and_garbage_tokens_are_unauthenticated(users_server):
    """Bearer tokens signed with another key, with a changed payload or
    header, alg none, truncated, expired, for an unknown user, without exp,
    or garbage are UNAUTHENTICATED on Flight (pyarrow and ADBC) and 401 on
    HTTP; a token we sign with the server's key for a real user works (so
    the refusals are about the claims, not about our encoding)."""
    S = users_server
    real = S.token("rita")
    forged, control = forged_tokens(S, real)
    assert S.flight(("authorization", "Bearer " + control)).sql("SELECT count(*) AS n FROM t", M1).to_pylist() \
        == [{"n": 3}]
    assert Api(S.url, "Bearer " + control).get("/api/v1/months").status == 200
    P = Problems()
    for i, (name, tok) in enumerate(forged.items()):
        c = S.flight(("authorization", ("Bearer " + tok).rstrip()))
        P.flight(f"{name}: action", lambda c=c: c.action("list_months"), fl.FlightUnauthenticatedError)
        P.flight(f"{name}: query", lambda c=c: c.sql("SELECT * FROM t", M1), fl.FlightUnauthenticatedError)
        P.http(f"{name}: HTTP", Api(S.url, "Bearer " + tok).get("/api/v1/months"), 401)
        if i < 4 and tok:
            def adbc(tok=tok):
                with S.adbc(token=tok, month=M1) as conn:
                    rows(conn, "SELECT * FROM t")

            P.adbc(f"{name}: ADBC", adbc, UNAUTHENTICATED)
    P.check()


def test_bad_passwords_are_rate_limited_per_user(users_server):
    """After 5 consecutive wrong passwords for one user, that user's
    sign-ins are refused for a while even with the right password:
    UNAUTHENTICATED "too many" on Flight, 429 with Retry-After on HTTP.
    Other users sign in as before; a right password before the fifth failure
    starts the count again."""
    S = users_server
    for i in range(5):
        with pytest.raises(fl.FlightUnauthenticatedError) as e:
            S.flight().login("tom", f"wrong-{i}")
        assert "too many" not in str(e.value).lower(), (i, e.value)
    with pytest.raises(fl.FlightUnauthenticatedError) as e:
        S.flight().login("tom", S.password("tom"))
    assert "too many" in str(e.value).lower(), e.value
    with pytest.raises(fl.FlightUnauthenticatedError) as e:
        S.flight(("authorization", basic("tom", S.password("tom"), pad=False))).action("list_months")
    assert "too many" in str(e.value).lower(), e.value
    with pytest.raises(adbc_driver_manager.Error) as e:
        with S.adbc("tom", M1) as c:
            rows(c, "SELECT 1")
    assert e.value.status_code == UNAUTHENTICATED, e.value
    for path, body in [("/api/v1/months", None), ("/api/v1/token", {})]:
        a = S.http("tom").request("POST" if body is not None else "GET", path, body)
        assert a.status == 429, a
        assert int(a.headers["Retry-After"]) >= 1, dict(a.headers)
        assert a.json["status"] == "error", a
    # Other users are not affected.
    assert S.flight().login("rita", S.password("rita"))[1].startswith(b"Bearer ")
    assert S.http("rita").get("/api/v1/months").status == 200
    # The count is of consecutive failures.
    for _ in range(2):
        for i in range(4):
            with pytest.raises(fl.FlightUnauthenticatedError):
                S.flight().login("tim", f"wrong-{i}")
        assert S.flight().login("tim", S.password("tim"))[1].startswith(b"Bearer ")


# ---------------------------------------------------------------- HTTP authentication


HTTP_ENDPOINTS = [
    ("GET", "/", None), ("GET", "/status", None), ("GET", "/status/data", None), ("GET", "/docs/", None),
    ("GET", "/openapi.json", None), ("GET", "/metrics", None), ("GET", f"/api/v1/tables?month={M1}", None),
    ("GET", f"/api/v1/tables/t/schema?month={M1}", None), ("GET", f"/api/v1/nodes?month={M1}", None),
    ("GET", "/api/v1/months", None), ("GET", "/api/v1/files", None), ("GET", "/api/v1/exports", None),
    ("GET", "/api/v1/exports/seed.csv", None), ("GET", "/api/v1/query/result/some-id", None),
    ("POST", "/api/v1/query/async", {"query": "SELECT * FROM t", "month": M1}),
    ("POST", "/api/v1/query", {"query": "SELECT * FROM t", "month": M1}),
    ("POST", "/api/v1/modify/async", {"exec": "INSERT INTO t VALUES (30, 'u')", "month": M1}),
    ("POST", "/api/v1/modify/async", {"exec": "INSERT INTO t VALUES (?, ?)", "is_batch": True,
                                      "batch_params": [[31, "u"]], "month": M1}),
    ("POST", "/api/v1/tables", {"table_name": "u_new", "columns": [{"name": "i", "type": "INTEGER"}], "month": M1}),
    ("POST", "/api/v1/sync", {"month": M1}),
    ("POST", "/api/v1/export", {"query": "SELECT 1 AS x", "format": "csv", "name": "unauth", "month": M1}),
    ("POST", "/api/v1/verify", {"month": M1}),
    ("POST", "/api/v1/token", {}),
]


def test_every_http_endpoint_but_health_needs_credentials(users_server):
    """Every endpoint except GET /health answers 401 with a WWW-Authenticate
    header naming Basic and a JSON error, without credentials, with an
    unknown user's Basic credentials or with a garbage bearer; /health
    answers without any; nothing changed."""
    S = users_server
    before = snapshot(S)
    P = Problems()
    for i, (method, path, body) in enumerate(HTTP_ENDPOINTS):
        for auth in [None, basic(f"nobody{i}", "pw"), "Bearer garbage", "Basic", "Digest abc"]:
            a = Api(S.url, auth).request(method, path, body)
            what = f"{method} {path} with {auth!r}"
            P.http(what, a, 401)
            if a.status == 401 and "basic" not in (a.headers.get("WWW-Authenticate") or "").lower():
                P.append(f"{what}: WWW-Authenticate is {a.headers.get('WWW-Authenticate')!r}")
    P.check()
    a = Api(S.url).get("/health")
    assert a.status == 200 and a.json["status"] == "healthy", a
    assert snapshot(S) == before


def test_http_token_endpoint_issues_tokens_for_both_doors(users_server):
    """POST /api/v1/token with Basic credentials answers a token, its expiry
    and the role; the token works as a Bearer on HTTP and on Flight (pyarrow
    and ADBC); wrong credentials get 401 there too."""
    S = users_server
    out = S.http("walt").ok("POST", "/api/v1/token", {})
    assert out["status"] == "success" and out["role"] == "writer", out
    tok = out["token"]
    _, payload = jwt_decode(tok)
    assert payload["sub"] == "walt" and payload["role"] == "writer", payload
    assert abs(payload["exp"] - (time.time() + 3600)) < 120, payload
    assert abs(iso(out["expires_at"]).timestamp() - payload["exp"]) <= 1, (out, payload)
    assert Api(S.url, "Bearer " + tok).ok("GET", "/api/v1/months")["status"] == "success"
    assert S.flight(("authorization", "Bearer " + tok)).sql("SELECT count(*) AS n FROM t", M1).to_pylist() \
        == [{"n": 3}]
    with S.adbc(token=tok, month=M1) as conn:
        assert rows(conn, "SELECT count(*) AS n FROM t") == [{"n": 3}]
    # A Flight token works on HTTP.
    assert Api(S.url, "Bearer " + S.token("rita")).get("/api/v1/months").status == 200
    assert S.http("rita").ok("POST", "/api/v1/token", {})["role"] == "reader"
    a = Api(S.url, basic("nobody-token", "x")).post("/api/v1/token", {})
    assert a.status == 401 and a.json["status"] == "error", a


# ---------------------------------------------------------------- roles


def test_a_reader_reads_through_every_read_call_of_flight(users_server):
    """A reader runs queries (statements and prepared, with parameters),
    every metadata call (ADBC get_objects / get_table_schema / table types /
    info, and GetCatalogs ... GetCrossReference raw), the read actions
    (list_months, node_status, list_files), ListActions and session calls."""
    S = users_server
    with S.adbc("rita", M1) as conn:
        assert rows(conn, "SELECT id, v FROM t ORDER BY id") == T_ROWS
        assert rows(conn, "SELECT v FROM t WHERE id = ?", (2,)) == [{"v": "b"}]
        assert statement(conn, "SELECT count(*) AS n FROM t") == [{"n": 3}]
        objects = conn.adbc_get_objects(catalog_filter=M1).read_all().to_pylist()
        tables = {t["table_name"] for c in objects for sch in (c["catalog_db_schemas"] or [])
                  for t in (sch["db_schema_tables"] or [])}
        assert {"t", "items"} <= tables, objects
        assert conn.adbc_get_table_schema("t", catalog_filter=M1, db_schema_filter="main").names == ["id", "v"]
        assert "TABLE" in conn.adbc_get_table_types()
        assert conn.adbc_get_info()
    c = S.as_("rita")
    assert M1 in c.fetch(cmd("CommandGetCatalogs")).column("catalog_name").to_pylist()
    assert "main" in c.fetch(cmd("CommandGetDbSchemas", s(1, M1))).column("db_schema_name").to_pylist()
    assert {"t", "items"} <= set(c.fetch(cmd("CommandGetTables", s(1, M1))).column("table_name").to_pylist())
    assert c.fetch(cmd("CommandGetTables", s(1, M1) + bytes([0x28, 1]))).num_rows >= 2  # include_schema
    assert c.fetch(cmd("CommandGetTableTypes")).num_rows >= 1
    assert c.fetch(cmd("CommandGetSqlInfo")).num_rows >= 1
    assert c.fetch(cmd("CommandGetXdbcTypeInfo")).num_rows >= 1
    items = s(1, M1) + s(2, "main") + s(3, "items")
    assert c.fetch(cmd("CommandGetPrimaryKeys", items)).column("column_name").to_pylist() == ["id"]
    c.fetch(cmd("CommandGetExportedKeys", items))
    c.fetch(cmd("CommandGetImportedKeys", items))
    c.fetch(cmd("CommandGetCrossReference", items + s(4, M1) + s(5, "main") + s(6, "t")))
    assert {M1, M2, M3, M_OUT} <= set(c.action("list_months")["months"])
    assert len(c.action("node_status", {"month": M1})["months"][0]["nodes"]) == 3
    assert "ok.csv" in [f["name"] for f in c.action("list_files")["files"]]
    assert c.client.list_actions(options=c._opts())
    c.raw_action("GetSessionOptions")
    c.raw_action("CloseSession")


def test_a_reader_reads_through_every_read_endpoint(users_server):
    """A reader's Basic (or Bearer) credentials open every read endpoint:
    query/async, stored queries and their results, tables, schemas, nodes,
    months, files, status page and data, metrics, API info, docs, OpenAPI."""
    S = users_server
    api = S.http("rita")
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT id, v FROM t ORDER BY id", "month": M1})
    assert data_rows(out) == [[1, "a"], [2, "b"], [3, "c"]]
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT v FROM t WHERE id = ?", "params": [1],
                                                 "month": M1})
    assert data_rows(out) == [["a"]]
    qid = api.ok("POST", "/api/v1/query", {"query": "SELECT count(*) AS n FROM t", "month": M1})["query_id"]
    a = poll_result(api, qid)
    assert a.status == 200 and data_rows(a.json) == [[3]], a
    assert {"t", "items"} <= {t["name"] for t in api.ok("GET", f"/api/v1/tables?month={M1}")["tables"]}
    assert [c["name"] for c in api.ok("GET", f"/api/v1/tables/items/schema?month={M1}")["columns"]] == ["id", "name"]
    assert len(api.ok("GET", f"/api/v1/nodes?month={M1}")["nodes"]) == 3
    assert M1 in api.ok("GET", "/api/v1/months")["months"]
    assert "ok.csv" in [f["name"] for f in api.ok("GET", "/api/v1/files")["files"]]
    for path in ["/status", "/status/data", "/metrics", "/", "/docs/", "/openapi.json"]:
        assert api.get(path).status == 200, path
    assert Api(S.url, "Bearer " + S.token("rita")).ok("GET", "/api/v1/months")["status"] == "success"


READER_WRITES = [
    "INSERT INTO t VALUES (9, 'r')",
    "INSERT INTO t SELECT 10 + range, 'x' FROM range(3)",
    "UPDATE t SET v = 'r'",
    "DELETE FROM t",
    "TRUNCATE t",
    "CREATE TABLE r_new (i INTEGER)",
    "CREATE TABLE r_ctas AS SELECT 1 AS i",
    "CREATE OR REPLACE TABLE t AS SELECT 1 AS id, 'x' AS v",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN z INTEGER",
    "CREATE VIEW r_view AS SELECT 1 AS i",
    "CREATE SEQUENCE r_seq",
]


def test_a_reader_writes_nothing_through_flight(users_server):
    """Every write of a reader is PERMISSION_DENIED naming the role needed
    and changes nothing: writes and DDL sent as queries (prepared, not
    prepared, EXPLAIN ANALYZE), as updates (DoPut), with parameters,
    executemany, bulk ingest, a transaction, and the writer/admin actions."""
    S = users_server
    before = snapshot(S)
    P = Problems()
    with S.adbc("rita", M1) as conn:
        for sql in READER_WRITES:
            P.adbc(f"prepared query {sql}", lambda sql=sql: rows(conn, sql), UNAUTHORIZED, "needs role writer")
            P.adbc(f"statement query {sql}", lambda sql=sql: statement(conn, sql), UNAUTHORIZED,
                   "needs role writer")
            P.adbc(f"statement update {sql}", lambda sql=sql: statement(conn, sql, update=True), UNAUTHORIZED,
                   "needs role writer")
        # EXPLAIN ANALYZE runs the statement: a write (the message may be the sandbox's).
        explain = "EXPLAIN ANALYZE INSERT INTO t VALUES (11, 'e')"
        P.adbc("prepared EXPLAIN ANALYZE INSERT", lambda: rows(conn, explain), UNAUTHORIZED)
        P.adbc("statement EXPLAIN ANALYZE INSERT", lambda: statement(conn, explain), UNAUTHORIZED)
        P.adbc("prepared with parameters", lambda: rows(conn, "INSERT INTO t VALUES (?, ?)", (9, "r")),
               UNAUTHORIZED, "needs role writer")
        P.adbc("prepared update", lambda: executemany(conn, "INSERT INTO t VALUES (?, ?)", [(9, "r"), (10, "s")]),
               UNAUTHORIZED, "needs role writer")
        P.adbc("ingest create", lambda: ingest(conn, "r_ingest", pa.table({"i": [1, 2]}), "create"),
               UNAUTHORIZED, "needs role writer")
        P.adbc("ingest append", lambda: ingest(
            conn, "t", pa.table({"id": pa.array([12], pa.int32()), "v": ["i"]}), "append"),
            UNAUTHORIZED, "needs role writer")

    def transaction():
        with S.adbc("rita", M1, autocommit=False) as c:
            rows(c, "SELECT 1")

    P.adbc("transaction (BeginTransaction)", transaction, UNAUTHORIZED, "needs role writer")
    c = S.as_("rita")
    P.flight("DoPut update (pyarrow)", lambda: c.update("INSERT INTO t VALUES (13, 'p')", M1),
             fl.FlightUnauthorizedError, "needs role writer")
    P.flight("BeginTransaction (pyarrow)", lambda: c.raw_action(
        "BeginTransaction", packed("ActionBeginTransactionRequest"), M1), fl.FlightUnauthorizedError,
        "needs role writer")
    for name, body, role in [
        ("sync", {"month": M1}, "writer"),
        ("export", {"query": "SELECT * FROM t", "format": "csv", "name": "rita_export", "month": M1}, "writer"),
        ("list_exports", {}, "writer"),
        ("verify_replicas", {"month": M1}, "writer"),
        ("create_table", {"table_name": "r_ct", "columns": [{"name": "i", "type": "INTEGER"}], "month": M1},
         "writer"),
        ("execute_batch", {"sql": "INSERT INTO t VALUES (?, ?)", "params": [[14, "b"]], "month": M1}, "writer"),
        ("create_month", {"month": M_NEW_READER}, "admin"),
        ("resync_replica", {"month": M1, "node": 1}, "admin"),
        ("list_sessions", {}, "admin"),
        ("kill_session", {"session": "no-such-session"}, "admin"),
    ]:
        P.flight(f"action {name}", lambda name=name, body=body: c.action(name, body), fl.FlightUnauthorizedError,
                 f"needs role {role}")
    P.check()
    assert snapshot(S) == before
    assert M_NEW_READER not in S.months()


def test_a_reader_writes_nothing_through_http(users_server):
    """Every writer endpoint answers a reader 403 naming the role, and a
    write sent through the query endpoints is refused too; nothing changed."""
    S = users_server
    before = snapshot(S)
    api = S.http("rita")
    P = Problems()
    for method, path, body in [
        ("POST", "/api/v1/modify/async", {"exec": "INSERT INTO t VALUES (20, 'h')", "month": M1}),
        ("POST", "/api/v1/modify/async", {"exec": "INSERT INTO t VALUES (?, ?)", "is_batch": True,
                                          "batch_params": [[21, "h"], [22, "h"]], "month": M1}),
        ("POST", "/api/v1/tables", {"table_name": "r_http", "columns": [{"name": "i", "type": "INTEGER"}],
                                    "month": M1}),
        ("POST", "/api/v1/sync", {"month": M1}),
        ("POST", "/api/v1/export", {"query": "SELECT 1 AS x", "format": "csv", "name": "rita_http", "month": M1}),
        ("GET", "/api/v1/exports", None),
        ("GET", "/api/v1/exports/seed.csv", None),
        ("POST", "/api/v1/verify", {"month": M1}),
        ("POST", "/api/v1/query/async", {"query": "DELETE FROM t", "month": M1}),
        ("POST", "/api/v1/query/async", {"query": "CREATE TABLE r_q (i INTEGER)", "month": M1}),
        ("POST", "/api/v1/query/async", {"query": "INSERT INTO t VALUES (?, ?)", "params": [23, "q"], "month": M1}),
    ]:
        P.http(f"{method} {path} {body}", api.request(method, path, body), 403, "needs role writer")
    a = api.post("/api/v1/query", {"query": "DELETE FROM t", "month": M1})
    if a.status == 200:
        a = poll_result(api, a.json["query_id"])
    P.http("stored query DELETE", a, 403, "needs role writer")
    P.check()
    assert snapshot(S) == before


def test_a_writer_writes_through_every_write_call_but_not_the_admin_ones(users_server):
    """A writer writes through every path of both doors (query path,
    prepared with parameters, executemany, DoPut update, ingest, a committed
    transaction, sync, export, list_exports, verify_replicas, create_table,
    execute_batch; modify single and batch, create table, sync, export,
    exports and a download, verify); the admin actions are
    PERMISSION_DENIED "needs role admin" and create no month."""
    S = users_server
    with S.adbc("walt", M1) as conn:
        rows(conn, "CREATE TABLE w_t (i INTEGER)")
        rows(conn, "INSERT INTO w_t VALUES (1)")
        rows(conn, "INSERT INTO w_t VALUES (?)", (2,))
        executemany(conn, "INSERT INTO w_t VALUES (?)", [(3,), (4,)])
        assert statement(conn, "INSERT INTO w_t VALUES (5)", update=True) == 1
        statement(conn, "INSERT INTO w_t VALUES (6)")
        assert ingest(conn, "w_ing", pa.table({"i": [1, 2, 3]}), "create") == 3
        assert ingest(conn, "w_ing", pa.table({"i": [4]}), "append") == 1
    with S.adbc("walt", M1, autocommit=False) as tx:
        rows(tx, "INSERT INTO w_t VALUES (7)")
        tx.commit()
    c = S.as_("walt")
    n, token = c.update("INSERT INTO w_t VALUES (8)", M1)
    assert n == 1 and token, (n, token)
    with S.adbc("walt", M1) as conn:
        assert rows(conn, "SELECT count(*) AS n, sum(i) AS s FROM w_t") == [{"n": 8, "s": 36}]
        assert rows(conn, "SELECT count(*) AS n FROM w_ing") == [{"n": 4}]
    assert c.action("sync", {"month": M1, "timeout_s": 120})["months"][0]["month"] == M1
    done = c.action("export", {"query": "SELECT * FROM w_t", "format": "csv", "name": "walt_export", "month": M1})
    assert done["rows"] == 8, done
    assert "walt_export.csv" in [e["name"] for e in c.action("list_exports")["exports"]]
    assert c.action("verify_replicas", {"month": M1})["months"][0]["ok"]
    c.action("create_table", {"table_name": "w_ct", "month": M1, "columns": [
        {"name": "id", "type": "BIGINT PRIMARY KEY"}, {"name": "s", "type": "VARCHAR"}]})
    rep = c.action("execute_batch", {"sql": "INSERT INTO w_ct (id, s) VALUES (?, ?)",
                                     "params": [[1, "a"], [2, "b"]], "month": M1})
    assert rep["succeeded"] == 2, rep
    P = Problems()
    for name, body in [("create_month", {"month": M_NEW_WRITER}), ("resync_replica", {"month": M1, "node": 1}),
                       ("list_sessions", {}), ("kill_session", {"session": "no-such-session"})]:
        P.flight(f"writer: {name}", lambda name=name, body=body: c.action(name, body), fl.FlightUnauthorizedError,
                 "needs role admin")
    P.check()
    assert M_NEW_WRITER not in S.months()
    assert not (S.data / M_NEW_WRITER).exists()

    api = S.http("walt")
    api.ok("POST", "/api/v1/modify/async", {"exec": "INSERT INTO w_t VALUES (9)", "month": M1})
    out = api.ok("POST", "/api/v1/modify/async", {"exec": "INSERT INTO w_t VALUES (?)", "is_batch": True,
                                                  "batch_params": [[10], [11]], "month": M1})
    assert out["successful_operations"] == 2, out
    api.ok("POST", "/api/v1/tables", {"table_name": "w_http", "columns": [{"name": "i", "type": "INTEGER"}],
                                      "month": M1})
    api.ok("POST", "/api/v1/sync", {"month": M1})
    api.ok("POST", "/api/v1/export", {"query": "SELECT 1 AS x", "format": "json", "name": "walt_http", "month": M1})
    assert "walt_http.json" in [e["name"] for e in api.ok("GET", "/api/v1/exports")["exports"]]
    d = api.get("/api/v1/exports/seed.csv")
    assert d.status == 200 and "a" in d.body, d
    assert api.ok("POST", "/api/v1/verify", {"month": M1})["status"] == "success"
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM w_t", "month": M1})
    assert data_rows(out) == [[11]]


def test_an_admin_runs_the_admin_actions(users_server):
    """An admin creates a month, rebuilds a replica, lists sessions (a
    reader's session among them) and kills one."""
    S = users_server
    a = S.as_("ada")
    a.action("create_month", {"month": M_ADMIN})
    assert M_ADMIN in S.months()
    assert (S.data / M_ADMIN).is_dir()
    out = a.action("resync_replica", {"month": M1, "node": 1})
    assert out["rebuilding"] is True, out
    a.action("sync", {"month": M1, "timeout_s": 120})
    # A reader's session (SetSessionOptions, catalog = M1): listed, killed.
    r = S.as_("rita")
    opts = _field(1, s(1, "catalog") + _field(2, s(1, M1)))
    r.raw_action("SetSessionOptions", opts)
    cookie = r.header("set-cookie") or ""
    m = re.search(r"arrow_flight_session_id=([^;]+)", cookie)
    assert m, f"no session cookie: {r.factory.last}"
    session = m.group(1)
    listed = a.action("list_sessions")
    assert session in json.dumps(listed), listed
    P = Problems()
    P.flight("writer kills the session", lambda: S.as_("walt").action("kill_session", {"session": session}),
             fl.FlightUnauthorizedError, "needs role admin")
    P.check()
    a.action("kill_session", {"session": session})
    assert session not in json.dumps(a.action("list_sessions"))


def test_a_reader_never_creates_a_month(users_server):
    """A reader's SELECT on a month that does not exist answers (no error)
    and creates nothing; every way a write would create the month (query,
    update, ingest, transaction, create_month, HTTP modify and tables) is
    PERMISSION_DENIED; list_months and the data dir stay without it."""
    S = users_server
    m = M_NEW_READER
    P = Problems()
    with S.adbc("rita", m) as c:
        assert rows(c, "SELECT 1 AS one") == [{"one": 1}]
        assert statement(c, "SELECT 2 AS two") == [{"two": 2}]
        P.adbc("CREATE TABLE (query)", lambda: rows(c, "CREATE TABLE r (i INTEGER)"), UNAUTHORIZED,
               "needs role writer")
        P.adbc("CREATE TABLE (update)", lambda: statement(c, "CREATE TABLE r (i INTEGER)", update=True),
               UNAUTHORIZED, "needs role writer")
        P.adbc("ingest", lambda: ingest(c, "r", pa.table({"i": [1]}), "create"), UNAUTHORIZED)

    def transaction():
        with S.adbc("rita", m, autocommit=False) as tc:
            rows(tc, "CREATE TABLE r (i INTEGER)")

    P.adbc("transaction", transaction, UNAUTHORIZED)
    r = S.as_("rita")
    assert r.sql("SELECT 3 AS three", m).to_pylist() == [{"three": 3}]
    r.fetch(cmd("CommandGetDbSchemas", s(1, m)))
    r.fetch(cmd("CommandGetTables", s(1, m)))
    P.flight("create_month", lambda: r.action("create_month", {"month": m}), fl.FlightUnauthorizedError,
             "needs role admin")
    api = S.http("rita")
    assert api.ok("POST", "/api/v1/query/async", {"query": "SELECT 1 AS one", "month": m})["status"] == "success"
    P.http("HTTP modify", api.post("/api/v1/modify/async", {"exec": "CREATE TABLE r (i INTEGER)", "month": m}), 403)
    P.http("HTTP tables", api.post("/api/v1/tables", {"table_name": "r", "month": m,
                                                     "columns": [{"name": "i", "type": "INTEGER"}]}), 403)
    P.check()
    assert m not in S.months()
    assert not (S.data / m).exists()


def test_a_month_allow_list_limits_a_user_to_its_months(users_server):
    """lim (writer, months = ["2031-*"]) reads and writes 2031 months, gets
    PERMISSION_DENIED on 2032-01 for reads and writes on both doors, never
    creates 2032-02, and a several-months read is refused or holds only
    allowed months."""
    S = users_server
    with S.adbc("lim", M1) as c:
        assert rows(c, "SELECT count(*) AS n FROM t") == [{"n": 3}]
    P = Problems()
    with S.adbc("lim", M_OUT) as c:
        P.adbc("read 2032-01", lambda: rows(c, "SELECT * FROM t"), UNAUTHORIZED)
        P.adbc("statement read 2032-01", lambda: statement(c, "SELECT * FROM t"), UNAUTHORIZED)
        P.adbc("write 2032-01", lambda: rows(c, "INSERT INTO t VALUES (102, 'lim')"), UNAUTHORIZED)
        P.adbc("update 2032-01", lambda: statement(c, "DELETE FROM t", update=True), UNAUTHORIZED)
    with S.adbc("lim", M_OUT_NEW) as c:
        P.adbc("create 2032-02", lambda: rows(c, "CREATE TABLE lim_t (i INTEGER)"), UNAUTHORIZED)
    lim = S.as_("lim")
    P.flight("pyarrow read 2032-01", lambda: lim.sql("SELECT * FROM t", M_OUT), fl.FlightUnauthorizedError)
    api = S.http("lim")
    P.http("HTTP read 2032-01", api.post("/api/v1/query/async", {"query": "SELECT * FROM t", "month": M_OUT}), 403)
    P.http("HTTP write 2032-01", api.post("/api/v1/modify/async",
                                          {"exec": "INSERT INTO t VALUES (103, 'lim')", "month": M_OUT}), 403)
    P.check()
    # Several months at once: refused, or only allowed months answer.
    for spec in ["all", f"{M1},{M_OUT}"]:
        try:
            table, _ = lim.query("SELECT 1 AS one", months=spec)
        except fl.FlightUnauthorizedError:
            continue
        months = set(table.column("month").to_pylist())
        assert M1 in months and all(m.startswith("2031-") for m in months), (spec, table.to_pylist())
    for body in [{"query": "SELECT 1 AS one", "all_months": True},
                 {"query": "SELECT 1 AS one", "months": [M1, M_OUT]}]:
        a = api.post("/api/v1/query/async", body)
        if a.status == 403:
            continue
        assert a.status == 200, a
        for r in a.json["results"]:
            if not r["month"].startswith("2031-"):
                assert not r.get("results") and not r.get("completed"), r
    assert M_OUT_NEW not in S.months()
    assert S.primary_rows(M_OUT, "SELECT count(*) AS n FROM t") == [{"n": 2}]


# ---------------------------------------------------------------- the SQL sandbox


def forbidden_statements(outside):
    """Statements refused for every role (outside: a directory outside every
    allowed one, where nothing may appear)."""
    return [
        "ATTACH ':memory:' AS x",
        f"ATTACH '{outside}/attached.db' AS y",
        "DETACH x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "RESET threads",
        "SET memory_limit='1GB'",
        "PRAGMA threads=1",
        "PRAGMA force_checkpoint",
        "PRAGMA disable_checkpoint_on_shutdown",
        "PRAGMA enable_profiling",
        "CALL enable_logging()",
        "CHECKPOINT",
        "FORCE CHECKPOINT",
        f"EXPORT DATABASE '{outside}/exported'",
        "COPY FROM DATABASE a TO b",
        "CREATE SECRET s (TYPE http, BEARER_TOKEN 'b')",
        "CREATE TEMP SECRET s2 (TYPE http, BEARER_TOKEN 'b')",
        "SELECT * FROM duckdb_secrets()",
        "SELECT * FROM __duckflock.meta",
        "SELECT count(*) FROM __duckflock.changes",
        "CREATE TABLE __duckflock.x(i int)",
        "DROP TABLE __duckflock.ddl",
        "INSERT INTO __duckflock.meta VALUES ('k', 'v')",
        "INSERT OR REPLACE INTO __duckflock.meta VALUES ('role', 'replica')",
        "UPDATE __duckflock.meta SET value = 'x' WHERE key = 'epoch'",
        "DELETE FROM __duckflock.changes",
        "TRUNCATE __duckflock.changes",
        "UPDATE __duckflock.capture SET live = false",
        "DELETE FROM __duckflock.ddl",
        "CREATE TRIGGER tr AFTER INSERT ON __duckflock.changes FOR EACH STATEMENT DELETE FROM __duckflock.ddl",
    ]


def refused_by_duckdb(outside):
    """Statements DuckDB itself refuses before duckflock can classify them
    (each is an error and changes nothing): `PRAGMA enable_logging` does not
    exist in DuckDB 2.0, IMPORT DATABASE is expanded while it is prepared (and
    the file system is locked to the allowed directories), and the s3 secret
    type needs the httpfs extension, which cannot be loaded."""
    return [
        "PRAGMA enable_logging",
        f"IMPORT DATABASE '{outside}'",
        "IMPORT DATABASE 'x'",
        "CREATE SECRET s3s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    ]


def forbidden_with_parameters(outside):
    return [
        ("SET threads = ?", (1,)),
        ("ATTACH ? AS z", (f"{outside}/attached_param.db",)),
        ("SELECT * FROM duckdb_secrets() WHERE name = ?", ("s",)),
        ("SELECT * FROM __duckflock.meta WHERE key = ?", ("epoch",)),
    ]


SETTINGS = ("SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('threads', 'enable_external_access', 'enable_logging', 'enable_profiling') ORDER BY name")
DATABASES = "SELECT count(*) AS n FROM duckdb_databases() WHERE NOT internal"


def engine_state(S, who, month):
    """Settings and attached databases, on a replica (three reads) and on
    the primary (a transaction)."""
    with S.adbc(who, month) as c:
        seen = [(rows(c, SETTINGS), rows(c, DATABASES)) for _ in range(3)]
    seen.append((S.primary_rows(month, SETTINGS, who), S.primary_rows(month, DATABASES, who)))
    return seen


def test_the_sandbox_refuses_every_statement_class_for_every_role(users_server):
    """ATTACH/DETACH, INSTALL/LOAD, SET/RESET/PRAGMA of settings, the
    state-changing PRAGMAs and CHECKPOINT, EXPORT/IMPORT DATABASE, COPY FROM
    DATABASE, CREATE SECRET, duckdb_secrets() and the __duckflock schema are
    PERMISSION_DENIED for the admin (prepared, not prepared, as an update,
    with parameters), the writer (ADBC and HTTP query and modify) and the
    reader; no setting, database, file or bookkeeping changed."""
    S = users_server
    outside = S.root / "outside-sandbox"
    outside.mkdir(exist_ok=True)
    before = engine_state(S, "ada", M1), snapshot(S)
    P = Problems()
    with S.adbc("ada", M1) as ada, S.adbc("walt", M1) as walt, S.adbc("rita", M1) as rita:
        for sql in forbidden_statements(outside):
            P.adbc(f"admin prepared {sql}", lambda sql=sql: rows(ada, sql), UNAUTHORIZED)
            P.adbc(f"admin statement {sql}", lambda sql=sql: statement(ada, sql), UNAUTHORIZED)
            P.adbc(f"admin update {sql}", lambda sql=sql: statement(ada, sql, update=True), UNAUTHORIZED)
            P.adbc(f"writer prepared {sql}", lambda sql=sql: rows(walt, sql), UNAUTHORIZED)
            P.adbc(f"reader prepared {sql}", lambda sql=sql: rows(rita, sql), UNAUTHORIZED)
        for sql, params in forbidden_with_parameters(outside):
            P.adbc(f"admin with parameters {sql}", lambda sql=sql, params=params: rows(ada, sql, params),
                   UNAUTHORIZED)
            P.adbc(f"writer with parameters {sql}", lambda sql=sql, params=params: rows(walt, sql, params),
                   UNAUTHORIZED)
        for sql in refused_by_duckdb(outside):
            for who, c in (("admin", ada), ("writer", walt), ("reader", rita)):
                try:
                    rows(c, sql)
                    P.append(f"{who} {sql}: not refused")
                except adbc_driver_manager.Error:
                    pass
    api = S.http("walt")
    for sql in forbidden_statements(outside):
        P.http(f"HTTP query {sql}", api.post("/api/v1/query/async", {"query": sql, "month": M1}), 403)
        P.http(f"HTTP modify {sql}", api.post("/api/v1/modify/async", {"exec": sql, "month": M1}), 403)
    for sql in refused_by_duckdb(outside):
        a = api.post("/api/v1/modify/async", {"exec": sql, "month": M1})
        if a.status < 400:
            P.append(f"HTTP modify {sql}: not refused: {a}")
    for sql, params in forbidden_with_parameters(outside):
        P.http(f"HTTP query with parameters {sql}",
               api.post("/api/v1/query/async", {"query": sql, "params": list(params), "month": M1}), 403)
    P.check()
    assert (engine_state(S, "ada", M1), snapshot(S)) == before
    assert os.listdir(outside) == []
    # The bookkeeping is intact: the month still replicates and verifies.
    with S.adbc("ada", M1) as c:
        rows(c, "CREATE TABLE sandbox_probe AS SELECT range AS i FROM range(100)")
    S.sync(M1)
    verified = S.as_("ada").action("verify_replicas", {"month": M1})["months"][0]
    assert verified["ok"], json.dumps(verified)


def test_shadow_tables_refuse_updates_and_deletes(users_server):
    """The capture's shadow tables (written by triggers inside clients'
    statements) refuse a client's UPDATE and DELETE; the month still
    replicates and verifies afterwards."""
    S = users_server
    with S.adbc("ada", M1) as c:
        rows(c, "CREATE TABLE shadow_probe AS SELECT range AS i FROM range(3000)")
    shadows = [r["table_name"] for r in S.primary_rows(
        M1, "SELECT table_name FROM system.main.duckdb_tables() "
            "WHERE schema_name = '__duckflock' AND starts_with(table_name, 'cap_')")]
    assert shadows
    with S.adbc("ada", M1) as c:
        P = Problems()
        for t in shadows:
            for sql in (f"DELETE FROM __duckflock.{t}", f"UPDATE __duckflock.{t} SET __op = 0"):
                P.adbc(sql, lambda sql=sql: statement(c, sql, update=True), UNAUTHORIZED, "bookkeeping")
        P.check()
        rows(c, "UPDATE shadow_probe SET i = i + 1 WHERE i % 2 = 0")
    S.sync(M1)
    verified = S.as_("ada").action("verify_replicas", {"month": M1})["months"][0]
    assert verified["ok"], json.dumps(verified)


def test_no_client_statement_or_ingest_adds_rows_to_a_shadow_table(open_server):
    """Hole: nothing guarded INSERT into a shadow table (a guard trigger
    cannot: the capture triggers' own inserts cascade into it), and the
    plan of an INSERT names no target, so a writer could forge change rows
    that replicas apply as changes the primary never made. A statement no
    capture trigger guards (into a shadow, or a session's temp table) now
    runs watched: if it added rows to a shadow it is refused and its
    transaction rolled back; ingest into the bookkeeping schema is refused.
    Through ADBC (prepared, statement, update), a data-changing WITH in front
    of a temp-table insert in a session, EXPLAIN ANALYZE, a per-operation
    batch, HTTP and ingest: PERMISSION_DENIED / 403, the shadows unchanged,
    and temp-table inserts still work; the replicas verify identical."""
    S = open_server
    m = "2032-03"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE feed (i BIGINT)")
        rows(c, "INSERT INTO feed SELECT range FROM range(5000)")
    [shadow] = [r["table_name"] for r in S.primary_rows(
        m, "SELECT t.table_name FROM system.main.duckdb_tables() t "
           "JOIN system.main.duckdb_columns() c USING (database_name, schema_name, table_name) "
           "WHERE t.schema_name = '__duckflock' AND starts_with(t.table_name, 'cap_') "
           "AND c.column_name = 'i'")]
    # 5,000 forged rows (across DuckDB's 2,048-row vectors) tagged as the
    # triggers tag theirs: they would ship with the statement's change set.
    tags = "getvariable('__df_txn'), nextval('__duckflock.stmt'), 1"
    forged = f"INSERT INTO __duckflock.{shadow} SELECT {tags}, range FROM range(5000)"
    with_dml = (f"WITH x AS (INSERT INTO __duckflock.{shadow.upper()} SELECT {tags}, 7 RETURNING i) "
                "INSERT INTO tt SELECT i FROM x")
    P = Problems()
    api = S.http()
    with S.adbc(month=m) as c:
        for sql in (forged, f"EXPLAIN ANALYZE {forged}", f"EXPLAIN (ANALYZE, FORMAT json) {forged}"):
            P.adbc(f"prepared {sql}", lambda sql=sql: rows(c, sql), UNAUTHORIZED, "bookkeeping")
            P.adbc(f"statement {sql}", lambda sql=sql: statement(c, sql), UNAUTHORIZED)
            P.adbc(f"update {sql}", lambda sql=sql: statement(c, sql, update=True), UNAUTHORIZED)
            P.http(f"HTTP modify {sql}", api.post("/api/v1/modify/async", {"exec": sql, "month": m}), 403)
        P.adbc("with parameters", lambda: rows(
            c, f"INSERT INTO __duckflock.{shadow} SELECT {tags}, ?", (7,)), UNAUTHORIZED)
        P.adbc("comment inside EXPLAIN", lambda: rows(
            c, f"EXPLAIN /* SELECT 1 AS x -- */ ANALYZE {forged}"), UNAUTHORIZED)
        cur = c.cursor()
        P.adbc("ingest into the bookkeeping schema", lambda: cur.adbc_ingest(
            shadow, pa.table({"__txn": [1], "__stmt": [1], "__op": pa.array([1], pa.int8()),
                                   "i": [7]}), mode="append", db_schema_name="__duckflock"),
            UNAUTHORIZED, "bookkeeping")
        cur.close()
    report = S.flight().action("execute_batch", {
        "sql": f"INSERT INTO __duckflock.{shadow} SELECT {tags}, ?", "params": [[1], [2]], "month": m})
    assert report["failed"] == 2 and report["succeeded"] == 0, report
    # In a transaction (its own connection): its temp table takes rows
    # (watched, nothing forged); a data-changing WITH in front of an insert
    # into it feeds the shadow: refused, and the transaction rolled back.
    with S.adbc(month=m, autocommit=False) as c:
        rows(c, "CREATE TEMP TABLE tt (i BIGINT)")
        rows(c, "INSERT INTO tt SELECT range FROM range(3000)")
        rows(c, "INSERT INTO feed SELECT i FROM tt WHERE i < 10")
        assert rows(c, "SELECT count(*) AS n FROM tt") == [{"n": 3000}]
        c.commit()
    with S.adbc(month=m, autocommit=False) as c:
        rows(c, "CREATE TEMP TABLE tt (i BIGINT)")
        rows(c, "INSERT INTO feed VALUES (-1)")
        P.adbc("a data-changing WITH in a transaction", lambda: rows(c, with_dml), UNAUTHORIZED,
               "bookkeeping")
        # Rolled back, it stays failed: a write sent next must not commit on
        # its own (uncaptured, so never on a replica).
        P.adbc("a write after the refusal", lambda: rows(c, "INSERT INTO feed VALUES (-2)"),
               adbc_driver_manager.AdbcStatusCode.UNKNOWN,  # gRPC ABORTED
               "Current transaction is aborted")
        try:
            c.commit()
        except adbc_driver_manager.Error:
            pass
    P.check()
    # Had a forged row shipped, the replicas would hold it in feed.
    S.sync(m)
    f = S.flight()
    want = S.primary_rows(m, "SELECT count(*) AS n, sum(i) AS s FROM feed")
    assert want == [{"n": 5010, "s": sum(range(5000)) + sum(range(10))}], want
    for _ in range(6):
        t, node = f.query("SELECT count(*) AS n, sum(i) AS s FROM feed", month=m)
        assert t.to_pylist() == want, node
    v = f.action("verify_replicas", {"month": m})["months"][0]
    assert v["ok"], v


def test_read_only_pragmas_answer_like_duckdb(users_server):
    """PRAGMA table_info, show_tables, database_size and duckdb_settings()
    stay allowed for every role and answer what in-process DuckDB answers
    (the bookkeeping schema not shown); external access is off."""
    S = users_server
    ref = duckdb.connect()
    ref.execute("CREATE TABLE t3 (id INTEGER, v VARCHAR)")
    info = ref.execute("PRAGMA table_info('t3')").fetchall()
    size_cols = [d[0] for d in ref.execute("PRAGMA database_size").description]
    settings_cols = [d[0] for d in ref.execute("SELECT * FROM duckdb_settings()").description]
    for who in ("ada", "walt", "rita"):
        with S.adbc(who, M3) as c:
            assert tuples(c, "PRAGMA table_info('t3')")[1] == info, who
            assert tuples(c, "PRAGMA show_tables")[1] == [("t3",)], who
            cols, got = tuples(c, "PRAGMA database_size")
            assert cols == size_cols and got, (who, cols)
            cols, got = tuples(c, "SELECT * FROM duckdb_settings()")
            assert cols == settings_cols and len(got) > 50, who
            assert rows(c, "SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'") \
                == [{"value": "false"}]
    out = S.http("rita").ok("POST", "/api/v1/query/async", {"query": "PRAGMA table_info('t3')", "month": M3})
    assert data_rows(out) == [list(r) for r in info]


def test_path_escapes_are_refused_and_create_nothing(users_server):
    """Reads of /proc, '..', a symlink out of the files dir, another
    month's node file (absolute and relative), the users file, the token key,
    another month's spill file and a directory outside are PERMISSION_DENIED
    for the admin (prepared, not prepared, with parameters) and the writer
    over HTTP; writes that read them create nothing; attempts to write
    outside (ATTACH, COPY, EXPORT, SET temp_directory) leave no file."""
    S = users_server
    files = S.data / "files"
    outside = S.root / "outside-paths"
    outside.mkdir(exist_ok=True)
    (outside / "secret.csv").write_text("s\nsecret\n")
    (S.data / "x.csv").write_text("x\n1\n")
    link = files / "link.csv"
    if not link.exists():
        os.symlink(outside / "secret.csv", link)
    other_node = S.data / M2 / "node_0.db"
    assert other_node.exists()
    spill = S.data / ".tmp" / M2 / "node_0"
    spill.mkdir(parents=True, exist_ok=True)
    (spill / "planted.tmp").write_bytes(b"another month's spilled block")
    reads = [
        "SELECT content FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('../x.csv')",
        f"SELECT * FROM read_csv('{S.data}/x.csv')",
        "SELECT * FROM read_csv('link.csv')",
        f"SELECT * FROM read_csv('{outside}/secret.csv')",
        f"SELECT size FROM read_blob('{other_node}')",
        f"SELECT size FROM read_blob('../{M2}/node_0.db')",
        f"SELECT content FROM read_text('{S.users_file}')",
        f"SELECT content FROM read_text('{S.secret_file}')",
        f"SELECT size FROM read_blob('{spill}/planted.tmp')",
    ]
    with_params = [
        ("SELECT content FROM read_text(?)", ("/proc/self/environ",)),
        ("SELECT size FROM read_blob(?)", (str(other_node),)),
        ("SELECT content FROM read_text(?)", (str(S.users_file),)),
        ("SELECT size FROM read_blob(?)", (str(spill / "planted.tmp"),)),
    ]
    creating = [
        "CREATE TABLE stolen AS SELECT content FROM read_text('/proc/self/environ')",
        f"INSERT INTO t SELECT 99, content FROM read_text('{S.users_file}')",
        f"ATTACH '{outside}/attached.db' AS a",
        f"COPY (SELECT 1 AS i) TO '{outside}/copied.csv'",
        f"EXPORT DATABASE '{outside}/exported'",
        f"SET temp_directory = '{outside}/spill'",
    ]
    before = snapshot(S)
    files_before = sorted(os.listdir(files))
    P = Problems()
    with S.adbc("ada", M1) as c:
        assert rows(c, "SELECT n FROM read_csv('ok.csv')") == [{"n": 7}], "the files dir is readable"
        for sql in reads + creating:
            P.adbc(f"prepared {sql}", lambda sql=sql: rows(c, sql), UNAUTHORIZED)
            P.adbc(f"statement {sql}", lambda sql=sql: statement(c, sql), UNAUTHORIZED)
        for sql in creating:
            P.adbc(f"update {sql}", lambda sql=sql: statement(c, sql, update=True), UNAUTHORIZED)
        for sql, params in with_params:
            P.adbc(f"with parameters {sql} {params}", lambda sql=sql, params=params: rows(c, sql, params),
                   UNAUTHORIZED)
        P.adbc("prepared write with parameters", lambda: rows(
            c, "INSERT INTO t SELECT ?, content FROM read_text(?)", (98, "/proc/self/environ")), UNAUTHORIZED)
    api = S.http("walt")
    for sql in reads:
        P.http(f"HTTP query {sql}", api.post("/api/v1/query/async", {"query": sql, "month": M1}), 403)
    for sql in creating:
        P.http(f"HTTP modify {sql}", api.post("/api/v1/modify/async", {"exec": sql, "month": M1}), 403)
    P.check()
    assert snapshot(S) == before
    assert sorted(os.listdir(outside)) == ["secret.csv"]
    assert sorted(os.listdir(files)) == files_before


# ---------------------------------------------------------------- holes of today's code


HOLE_PRAGMAS = [
    "PRAGMA force_checkpoint",
    "PRAGMA disable_checkpoint_on_shutdown",
    "PRAGMA enable_profiling",
    "CALL enable_logging()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "CALL checkpoint()",
    "COPY FROM DATABASE a TO b",
]


def test_state_changing_pragmas_and_checkpoint_are_refused(open_server):
    """Hole 1: PRAGMA and CALL were classified as reads, so
    force_checkpoint, disable_checkpoint_on_shutdown, enable_logging and
    CHECKPOINT passed. Without users, through ADBC (prepared and not) and
    HTTP, each is PERMISSION_DENIED / 403 and no setting changed; read-only
    pragmas still answer."""
    S = open_server
    m = "2031-01"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE p (i INTEGER)")
    S.sync(m)
    before = engine_state(S, None, m)
    P = Problems()
    api = S.http()
    with S.adbc(month=m) as c:
        P.denied_every_way(c, api, m, HOLE_PRAGMAS)
        assert tuples(c, "PRAGMA table_info('p')")[1] == [(0, "i", "INTEGER", False, None, False)]
        assert tuples(c, "PRAGMA show_tables")[1] == [("p",)]
    P.check()
    assert engine_state(S, None, m) == before


def temp_table_doors(request):
    if request.param == "without users":
        return request.getfixturevalue("open_server"), None
    return request.getfixturevalue("users_server"), "walt"


@pytest.fixture(params=["without users", "as a writer"])
def temp_door(request):
    return temp_table_doors(request)


def test_temp_objects_made_outside_a_session_do_not_outlive_their_request(temp_door):
    """Hole 2: a CREATE TEMP TABLE users sent outside a session (a plain
    statement, an update, HTTP modify) stayed on a pooled primary connection
    and shadowed main.users: later inserts were acknowledged but neither
    persisted nor replicated. Whether the temp objects are refused or not,
    inserts from a dozen new connections (every path) all land in
    main.users: the primary counts them all, reads count them all, the
    replicas verify identical, and the catalog still hides the bookkeeping."""
    S, who = temp_door
    m = M_TEMP
    api = S.http(who)
    with S.adbc(who, m) as c:
        rows(c, "CREATE TABLE users (id INTEGER, name VARCHAR)")
    shadows = ["CREATE TEMP TABLE users(id INT, name VARCHAR)",
               "CREATE TEMPORARY TABLE users AS SELECT 42 AS id, 'shadow' AS name",
               "CREATE TEMP VIEW users AS SELECT 42 AS id, 'shadow' AS name"]
    paths = [lambda conn, sql: statement(conn, sql, update=True),  # DoPut CommandStatementUpdate
             lambda conn, sql: statement(conn, sql),  # CommandStatementQuery
             lambda conn, sql: rows(conn, sql)]  # prepared
    for sql in shadows:
        for path in paths:
            with S.adbc(who, m) as conn:
                try:
                    path(conn, sql)
                except adbc_driver_manager.Error as e:  # refused: fine
                    assert e.status_code != UNAUTHENTICATED, e
        a = api.post("/api/v1/modify/async", {"exec": sql, "month": m})
        assert a.status != 401 and a.status < 500, a
    inserted = 0
    for i in range(12):
        if i % 4 == 0:
            with S.adbc(who, m) as c:
                rows(c, "INSERT INTO users VALUES (?, ?)", (i, f"u{i}"))
        elif i % 4 == 1:
            with S.adbc(who, m) as c:
                assert statement(c, f"INSERT INTO users VALUES ({i}, 'u{i}')", update=True) == 1
        elif i % 4 == 2:
            with S.adbc(who, m) as c:
                rows(c, f"INSERT INTO users VALUES ({i}, 'u{i}')")
        else:
            out = api.ok("POST", "/api/v1/modify/async", {"exec": "INSERT INTO users VALUES (?, ?)",
                                                          "params": [i, f"u{i}"], "month": m})
            assert out["affected_rows"] == 1, out
        inserted += 1
    S.sync(m, who)
    want = [{"n": inserted, "s": sum(range(inserted))}]
    assert S.primary_rows(m, "SELECT count(*) AS n, sum(id) AS s FROM main.users", who) == want
    for _ in range(6):
        with S.adbc(who, m) as c:
            assert rows(c, "SELECT count(*) AS n, sum(id) AS s FROM users") == want
            assert rows(c, "SELECT count(*) AS n FROM duckdb_tables() WHERE schema_name = '__duckflock'") \
                == [{"n": 0}], "the catalog shows the bookkeeping again"
    out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM users", "month": m})
    assert data_rows(out) == [[inserted]]
    v = S.as_(who).action("verify_replicas", {"month": m})["months"][0]
    assert v["ok"], v


def test_explain_analyze_of_a_write_keeps_the_replicas_identical(open_server):
    """EXPLAIN ANALYZE runs its statement: an EXPLAIN ANALYZE INSERT is a
    write. Refused or run on the primary, the row is then on every node or
    on none, and the replicas verify identical."""
    S = open_server
    m = "2031-06"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE ea (i INTEGER)")
        try:
            rows(c, "EXPLAIN ANALYZE INSERT INTO ea VALUES (1)")
        except adbc_driver_manager.Error:
            pass
    S.sync(m)
    primary = S.primary_rows(m, "SELECT count(*) AS n FROM ea")[0]["n"]
    assert primary in (0, 1)
    c = S.flight()
    for _ in range(10):
        t, node = c.query("SELECT count(*) AS n FROM ea", month=m)
        assert t.to_pylist() == [{"n": primary}], node
    v = c.action("verify_replicas", {"month": m})["months"][0]
    assert v["ok"], v


BOOKKEEPING_BEHIND_NAMES = [
    # DML and CTAS, which DuckDB serializes no parse tree of
    "INSERT INTO hid SELECT key FROM __duckflock.meta",
    "UPDATE hid SET s = (SELECT max(value) FROM __duckflock.meta)",
    "DELETE FROM hid WHERE s IN (SELECT key FROM __duckflock.meta)",
    "WITH m AS (SELECT * FROM __duckflock.changes) DELETE FROM hid WHERE s IN (SELECT ops FROM m)",
    "CREATE TABLE leaked AS SELECT * FROM __duckflock.meta",
    "INSERT INTO hid SELECT 'x' FROM checkpoint()",
    "INSERT INTO hid SELECT name FROM duckdb_secrets()",
    # a view and a table macro made by a writer
    "SELECT * FROM over_meta",
    "INSERT INTO hid SELECT key FROM over_meta",
    "SELECT * FROM any_table('__duckflock.meta')",
    # the second statement of a script
    "INSERT INTO hid VALUES ('first'); INSERT INTO hid SELECT key FROM __duckflock.meta",
    # EXPLAIN ANALYZE runs its statement
    "EXPLAIN ANALYZE INSERT INTO hid SELECT key FROM __duckflock.meta",
    "EXPLAIN SELECT * FROM over_meta",
]


def test_reads_of_the_bookkeeping_behind_names_are_refused(open_server):
    """Hole: only SELECTs were checked, on their parse tree, so DML, CTAS,
    scripts, EXPLAIN ANALYZE, and views or table macros over the bookkeeping
    read __duckflock tables (and called checkpoint()) freely. DuckDB's plan
    of each statement, with its parameters bound, now decides: through ADBC
    (prepared, not prepared, as an update, with parameters) and HTTP each is
    PERMISSION_DENIED / 403 and nothing was written; the same statements over
    user tables still run, and the replicas verify."""
    S = open_server
    m = "2031-07"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE hid (s VARCHAR)")
        rows(c, "CREATE TABLE plain_meta (key VARCHAR, value VARCHAR)")
        # Making them is not reading through them.
        rows(c, "CREATE VIEW over_meta AS SELECT * FROM __duckflock.meta")
        rows(c, "CREATE MACRO any_table(x) AS TABLE SELECT * FROM query_table(x)")
    P = Problems()
    api = S.http()
    with S.adbc(month=m) as c:
        P.denied_every_way(c, api, m, BOOKKEEPING_BEHIND_NAMES)
        # A parameter can name what query_table() reads: each run is checked.
        for sql in ("INSERT INTO hid SELECT key FROM query_table(?)", "SELECT * FROM any_table(?)"):
            P.adbc(f"with parameters {sql}", lambda sql=sql: rows(c, sql, ("__duckflock.meta",)),
                   UNAUTHORIZED)
        assert rows(c, "SELECT * FROM any_table(?)", ("plain_meta",)) == []
    # A per-operation batch runs each parameter row on its own: each refused.
    report = S.flight().action("execute_batch", {
        "sql": "EXPLAIN ANALYZE INSERT INTO hid SELECT key FROM __duckflock.meta WHERE ? = 1",
        "params": [[1], [1]], "month": m})
    assert report["failed"] == 2 and report["succeeded"] == 0, report
    assert all("bookkeeping" in e["error"] for e in report["errors"]), report
    P.check()
    S.sync(m)
    for node in ("primary", "replicas"):
        got = (S.primary_rows(m, "SELECT count(*) AS n FROM hid")[0]["n"] if node == "primary"
               else S.flight().query("SELECT count(*) AS n FROM hid", month=m)[0].to_pylist()[0]["n"])
        assert got == 0, node
    assert "leaked" not in {r["table_name"] for r in S.primary_rows(
        m, "SELECT table_name FROM duckdb_tables()")}
    # The same shapes over user tables run, a script's ';' in a string too.
    with S.adbc(month=m) as c:
        rows(c, "INSERT INTO plain_meta VALUES ('k;1', 'v')")
        rows(c, "INSERT INTO hid SELECT key FROM plain_meta; INSERT INTO hid SELECT value FROM plain_meta")
        rows(c, "EXPLAIN ANALYZE INSERT INTO hid SELECT key FROM plain_meta")
        rows(c, "INSERT INTO hid SELECT key FROM query_table(?)", ("plain_meta",))
        assert sorted(r["s"] for r in rows(c, "SELECT s FROM hid")) == ["k;1", "k;1", "k;1", "v"]
        rows(c, "TRUNCATE hid")
    S.sync(m)
    v = S.flight().action("verify_replicas", {"month": m})["months"][0]
    assert v["ok"], v


CLIENT_TRIGGERS = [
    "CREATE TRIGGER aud_d AFTER DELETE ON src REFERENCING OLD TABLE AS o "
    "FOR EACH STATEMENT INSERT INTO audit SELECT i FROM o",
    "CREATE TRIGGER aud_i AFTER INSERT ON src REFERENCING NEW TABLE AS n "
    "FOR EACH STATEMENT INSERT INTO audit SELECT i FROM n",
    # named like the server's own, and on a temp table
    "CREATE TRIGGER __df_x AFTER DELETE ON src FOR EACH STATEMENT INSERT INTO audit VALUES (0)",
    "CREATE TRIGGER __df_guard_x AFTER DELETE ON src FOR EACH STATEMENT INSERT INTO audit VALUES (0)",
]


def test_client_triggers_are_refused(open_server):
    """Hole: a client's CREATE TRIGGER ran. It was not shipped, but a
    replica rebuilt from a copy of the primary kept it and ran it again on
    every change it applied (a DELETE trigger filling `audit`: 1000 rows on
    the rebuilt replica, 667 on the primary); and a trigger body is another
    way to write where a statement may not. DuckDB decides what a DDL made
    (the catalog's triggers, inside its transaction): refused
    through ADBC and HTTP (a temporary trigger, which DuckDB confines to
    temporary tables, stays allowed),
    nothing is left behind, and rows deleted from the table reach every
    replica once."""
    S = open_server
    m = "2031-09"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE src (i BIGINT)")
        rows(c, "CREATE TABLE audit (i BIGINT)")
        rows(c, "INSERT INTO src SELECT range FROM range(130000)")
    P = Problems()
    api = S.http()
    with S.adbc(month=m) as c:
        for sql in CLIENT_TRIGGERS:
            P.adbc(f"statement {sql}", lambda sql=sql: statement(c, sql, update=True), UNAUTHORIZED,
                   "CREATE TRIGGER is not allowed")
            P.http(f"HTTP modify {sql}",
                   api.post("/api/v1/modify/async", {"exec": sql, "month": m}), 403)
    # Refused inside a transaction, the transaction stays failed: the write
    # sent next does not commit on its own, outside the capture.
    with S.adbc(month=m, autocommit=False) as c:
        rows(c, "INSERT INTO audit VALUES (-1)")
        P.adbc("a trigger in a transaction", lambda: rows(c, CLIENT_TRIGGERS[0]), UNAUTHORIZED,
               "CREATE TRIGGER is not allowed")
        P.adbc("a write after the refused trigger", lambda: rows(c, "INSERT INTO audit VALUES (-2)"),
               adbc_driver_manager.AdbcStatusCode.UNKNOWN, "Current transaction is aborted")
        try:
            c.commit()
        except adbc_driver_manager.Error:
            pass
    # A temporary trigger may stay: DuckDB confines it to the session's own
    # temporary tables.
    with S.adbc(month=m, autocommit=False) as c:
        rows(c, "CREATE TEMP TABLE tt (i BIGINT)")
        rows(c, "CREATE TEMP TABLE tt_log (i BIGINT)")
        rows(c, "CREATE TRIGGER t_tt AFTER INSERT ON tt REFERENCING NEW TABLE AS n "
                "FOR EACH STATEMENT INSERT INTO tt_log SELECT i FROM n")
        rows(c, "INSERT INTO tt SELECT range FROM range(3)")
        assert rows(c, "SELECT count(*) AS n FROM tt_log") == [{"n": 3}]
        P.adbc("a temp trigger writing a persistent table", lambda: statement(
            c, "CREATE TRIGGER t_src AFTER INSERT ON tt FOR EACH STATEMENT INSERT INTO audit VALUES (1)",
            update=True), INVALID_ARGUMENT, "different catalog")
        try:
            c.rollback()
        except adbc_driver_manager.Error:
            pass
    P.check()
    # No trigger but the server's own; the table's deletes replicate once.
    left = S.primary_rows(m, "SELECT trigger_name FROM duckdb_triggers() "
                             "WHERE NOT starts_with(trigger_name, '__df_')")
    assert left == [], left
    with S.adbc(month=m) as c:
        rows(c, "DELETE FROM src WHERE i % 3 = 0")
    S.sync(m)
    want = S.primary_rows(m, "SELECT count(*) AS n, (SELECT count(*) FROM audit) AS a FROM src")
    assert want == [{"n": 86666, "a": 0}], want
    f = S.flight()
    for _ in range(6):
        t, node = f.query("SELECT count(*) AS n, (SELECT count(*) FROM audit) AS a FROM src", month=m)
        assert t.to_pylist() == want, node
    v = f.action("verify_replicas", {"month": m})["months"][0]
    assert v["ok"], v


def test_a_copy_inside_a_with_writes_no_file(open_server):
    """Hole: DuckDB 2.0 accepts a COPY inside a WITH, so the statement is a
    SELECT (or an INSERT) and passed the refusal of COPY; the files dir is
    writable for DuckDB (allowed_directories cannot tell reads from writes),
    so a client could overwrite the files others query in place. DuckDB's
    plan shows the COPY: refused through ADBC and HTTP, no file appears."""
    S = open_server
    m = "2031-10"
    target = S.data / "files" / "copied_by_a_with.csv"
    with S.adbc(month=m) as c:
        rows(c, "CREATE TABLE cw (s VARCHAR)")
        rows(c, "INSERT INTO cw VALUES ('x')")
    sqls = [
        f"WITH x AS (COPY cw TO '{target}') SELECT * FROM x",
        f"CREATE TABLE cw2 AS WITH x AS (COPY cw TO '{target}') SELECT * FROM x",
    ]
    P = Problems()
    with S.adbc(month=m) as c:
        P.denied_every_way(c, S.http(), m, sqls)
        # In front of an INSERT DuckDB refuses it itself (a table with
        # triggers).
        P.adbc("in front of an INSERT", lambda: statement(
            c, f"WITH x AS (COPY cw TO '{target}') INSERT INTO cw SELECT 'y'", update=True),
            INVALID_ARGUMENT, "must be at the top level")
    P.check()
    assert not target.exists()
    assert S.primary_rows(m, "SELECT count(*) AS n FROM cw") == [{"n": 1}]


def test_other_months_spill_files_are_unreadable(open_server):
    """Hole: DuckDB allows each database its temp directory, and
    <data-dir>/.tmp was shared by every month. Another month's spill
    directory <data-dir>/.tmp/<month>/node_K is unreadable (glob, read_blob,
    read_text), through ADBC and HTTP."""
    S = open_server
    m, other = "2031-07", "2031-08"
    for month in (m, other):
        with S.adbc(month=month) as c:
            rows(c, "CREATE TABLE s AS SELECT range AS i FROM range(10)")
    planted = []
    for node in ("node_0", "node_1"):
        d = S.data / ".tmp" / other / node
        d.mkdir(parents=True, exist_ok=True)
        (d / "planted.tmp").write_bytes(b"another month's spilled block")
        planted.append(d / "planted.tmp")
    P = Problems()
    api = S.http()
    strict = [f"SELECT content FROM read_text('{planted[0]}')", f"SELECT size FROM read_blob('{planted[1]}')",
              f"SELECT size FROM read_blob('../.tmp/{other}/node_0/planted.tmp')"]
    with S.adbc(month=m) as c:
        for sql in strict:
            P.adbc(f"prepared {sql}", lambda sql=sql: rows(c, sql), UNAUTHORIZED)
            P.adbc(f"statement {sql}", lambda sql=sql: statement(c, sql), UNAUTHORIZED)
            P.http(f"HTTP {sql}", api.post("/api/v1/query/async", {"query": sql, "month": m}), 403)
        P.adbc("with parameters", lambda: rows(c, "SELECT size FROM read_blob(?)", (str(planted[0]),)), UNAUTHORIZED)
        # Globs: refused (PERMISSION_DENIED), or at least blind to other months.
        for sql in [f"SELECT * FROM glob('{S.data}/.tmp/**')", f"SELECT * FROM glob('{S.data}/.tmp/{other}/**')",
                    f"SELECT size FROM read_blob('{S.data}/.tmp/{other}/node_0/*')",
                    f"SELECT size FROM read_blob('{S.data}/.tmp/**')"]:
            try:
                got = rows(c, sql)
            except adbc_driver_manager.Error as e:
                if e.status_code != UNAUTHORIZED:
                    P.append(f"{sql}: {e.status_code.name}: {e}")
                continue
            if other in json.dumps(got, default=str) or any(r.get("size") == len(b"another month's spilled block")
                                                            for r in got):
                P.append(f"{sql}: shows another month's spill files: {got}")
    P.check()


def test_posts_need_json_and_no_foreign_origin(open_server):
    """Hole 3 (CSRF): the gateway parsed any body as JSON whatever its
    content type, so a web page could POST text/plain to a loopback server.
    POSTs with a non-JSON Content-Type are 415, POSTs with a foreign Origin
    are 403, both leaving nothing changed; scripts (no Origin, JSON) keep
    working."""
    S = open_server
    m = "2031-04"
    api = S.http()
    api.ok("POST", "/api/v1/tables", {"table_name": "c", "columns": [{"name": "i", "type": "INTEGER"}], "month": m})

    def count():
        return data_rows(api.ok("POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM c", "month": m}))

    body = {"exec": "INSERT INTO c VALUES (1)", "month": m}
    P = Problems()
    for ct in ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x"]:
        P.http(f"modify as {ct}", api.post("/api/v1/modify/async", body, content_type=ct), 415)
        P.http(f"query as {ct}", api.post("/api/v1/query/async", {"query": "SELECT 1", "month": m},
                                          content_type=ct), 415)
        P.http(f"tables as {ct}", api.post("/api/v1/tables", {"table_name": "c2", "month": m,
                                                              "columns": [{"name": "i", "type": "INTEGER"}]},
                                           content_type=ct), 415)
    for origin in ["http://evil.example", "null", f"http://{S.http_addr}.evil.example"]:
        P.http(f"modify from {origin}", api.post("/api/v1/modify/async", body, headers={"Origin": origin}), 403)
    P.check()
    assert count() == [[0]]
    assert "c2" not in [t["name"] for t in api.ok("GET", f"/api/v1/tables?month={m}")["tables"]]
    api.ok("POST", "/api/v1/modify/async", body)
    api.ok("POST", "/api/v1/modify/async", body, content_type="application/json; charset=utf-8")
    assert count() == [[2]]


def test_cors_admits_only_the_configured_origin(tmp_path):
    """--http-allow-origin http://ok.example: a CORS preflight from it is
    answered with access-control-allow-origin (POST, content-type allowed)
    and its POST works; a foreign origin gets no CORS grant and its POST is
    403 with nothing changed; POSTs without Origin keep working."""
    tmp_path = canonical(tmp_path)
    proc, f, h = start(tmp_path / "data", "--replicas", "1", "--http-allow-origin", "http://ok.example")
    try:
        api = Api("http://" + loopback(h))
        m = "2031-04"
        api.ok("POST", "/api/v1/tables", {"table_name": "c", "columns": [{"name": "i", "type": "INTEGER"}],
                                          "month": m})
        body = {"exec": "INSERT INTO c VALUES (1)", "month": m}
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        a = api.request("OPTIONS", "/api/v1/modify/async", headers={"Origin": "http://ok.example", **pre})
        assert 200 <= a.status < 300, a
        assert a.headers.get("access-control-allow-origin") == "http://ok.example", dict(a.headers)
        assert "POST" in (a.headers.get("access-control-allow-methods") or "").upper(), dict(a.headers)
        assert "content-type" in (a.headers.get("access-control-allow-headers") or "").lower(), dict(a.headers)
        a = api.request("OPTIONS", "/api/v1/modify/async", headers={"Origin": "http://evil.example", **pre})
        assert a.headers.get("access-control-allow-origin") not in ("http://evil.example", "*"), dict(a.headers)
        for origin in ["http://evil.example", "https://ok.example", "http://ok.example.evil.example"]:
            a = api.post("/api/v1/modify/async", body, headers={"Origin": origin})
            assert a.status == 403, (origin, a)
        a = api.post("/api/v1/modify/async", body, headers={"Origin": "http://ok.example"})
        assert a.status == 200, a
        assert a.headers.get("access-control-allow-origin") == "http://ok.example", dict(a.headers)
        api.ok("POST", "/api/v1/modify/async", body)
        out = api.ok("POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM c", "month": m})
        assert data_rows(out) == [[2]]
    finally:
        stop(proc)


def test_max_months_bounds_month_creation(tmp_path):
    """Hole 4: any write created a month (8 files, 7 threads) for any year.
    With --max-months 3 a fourth month is refused by every path (write,
    update, ingest, transaction, create_month, HTTP modify and tables) with
    a clear error (RESOURCE_EXHAUSTED or FAILED_PRECONDITION, HTTP 4xx),
    list_months still shows 3, reads of other months still answer and the
    existing months still take writes."""
    tmp_path = canonical(tmp_path)
    proc, f, h = start(tmp_path / "data", "--replicas", "1", "--max-months", "3")
    S = Srv(proc, f, h, tmp_path / "data", tmp_path)
    try:
        with S.adbc(month="2031-01") as c:
            rows(c, "CREATE TABLE a (i INTEGER)")
        S.flight().action("create_month", {"month": "2031-02"})
        S.http().ok("POST", "/api/v1/modify/async", {"exec": "CREATE TABLE b (i INTEGER)", "month": "2031-03"})
        three = ["2031-01", "2031-02", "2031-03"]
        assert S.months() == three
        P = Problems()

        def adbc_refusal(what, fn):
            try:
                fn()
            except adbc_driver_manager.Error as e:
                msg = str(e)
                if not ("ResourceExhausted" in msg or "FailedPrecondition" in msg or e.vendor_code in (8, 9)):
                    P.append(f"{what}: not RESOURCE_EXHAUSTED/FAILED_PRECONDITION: {e}")
                if "max-months" not in msg:
                    P.append(f"{what}: the error does not name --max-months: {e}")
                return
            P.append(f"{what}: not refused")

        with S.adbc(month="2031-04") as c:
            adbc_refusal("query-path write", lambda: rows(c, "CREATE TABLE d (i INTEGER)"))
            adbc_refusal("DoPut update", lambda: statement(c, "CREATE TABLE d (i INTEGER)", update=True))
            adbc_refusal("ingest", lambda: ingest(c, "d", pa.table({"i": [1]}), "create"))

        def transaction():
            with S.adbc(month="2031-05", autocommit=False) as tc:
                rows(tc, "CREATE TABLE d (i INTEGER)")
                tc.commit()

        adbc_refusal("transaction", transaction)
        c = S.flight()
        try:
            c.action("create_month", {"month": "2031-06"})
            P.append("create_month: not refused")
        except pa.ArrowInvalid as e:  # how pyarrow reports both codes
            if "resource exhausted" not in str(e) and "precondition failed" not in str(e):
                P.append(f"create_month: {e}")
            if "max-months" not in str(e):
                P.append(f"create_month: the error does not name --max-months: {e}")
        except Exception as e:  # noqa: BLE001 - reported
            P.append(f"create_month: {type(e).__name__}: {e}")
        try:
            c.update("CREATE TABLE d (i INTEGER)", "2031-07")
            P.append("pyarrow update: not refused")
        except pa.ArrowException as e:
            if "max-months" not in str(e):
                P.append(f"pyarrow update: the error does not name --max-months: {e}")
        api = S.http()
        for what, path, body in [
            ("HTTP modify", "/api/v1/modify/async", {"exec": "CREATE TABLE d (i INTEGER)", "month": "2031-08"}),
            ("HTTP tables", "/api/v1/tables", {"table_name": "d", "columns": [{"name": "i", "type": "INTEGER"}],
                                               "month": "2031-09"}),
        ]:
            a = api.post(path, body)
            if not (400 <= a.status < 500 and a.json and a.json.get("status") == "error"):
                P.append(f"{what}: {a}")
            elif "max-months" not in a.json["error"]:
                P.append(f"{what}: the error does not name --max-months: {a.json['error']}")
        P.check()
        assert S.months() == three
        for n in range(4, 10):
            assert not (tmp_path / "data" / f"2031-{n:02d}").exists(), n
        with S.adbc(month="2031-10") as c:
            assert rows(c, "SELECT 1 AS one") == [{"one": 1}]
        with S.adbc(month="2031-01") as c:
            rows(c, "INSERT INTO a VALUES (1)")
            assert rows(c, "SELECT count(*) AS n FROM a") == [{"n": 1}]
        assert S.months() == three
    finally:
        stop(proc)


def test_metadata_calls_do_not_open_every_month(tmp_path):
    """Hole 4, the other half: metadata calls without a catalog (ADBC
    get_objects, GetCatalogs, GetDbSchemas, GetTables with schemas) used to
    open every month, 1 + --replicas files and an applier thread per replica
    each, and keep them open until --month-idle-timeout. Now a month that is
    not open is read from its primary file, read-only, for the call alone:
    after the calls /health counts no open month, the answers equal those
    given while the months were open, and the months still take writes
    (the read-only copy is closed before a month can open for writing)."""
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    months = [f"2032-{n:02d}" for n in range(1, 7)]
    proc, f, h = start(data, "--replicas", "1")
    S = Srv(proc, f, h, data, tmp_path)

    def answers():
        with S.adbc() as c:
            objects = c.adbc_get_objects().read_all().to_pylist()
        tables = sorted((o["catalog_name"], sch["db_schema_name"], t["table_name"])
                        for o in objects for sch in (o["catalog_db_schemas"] or [])
                        for t in (sch["db_schema_tables"] or []))
        fc = S.flight()
        return {
            "adbc tables": tables,
            "catalogs": sorted(fc.fetch(cmd("CommandGetCatalogs")).column("catalog_name").to_pylist()),
            "schemas": sorted(zip(*[fc.fetch(cmd("CommandGetDbSchemas")).column(k).to_pylist()
                                    for k in ("catalog_name", "db_schema_name")])),
            "tables": sorted(map(str, fc.fetch(cmd("CommandGetTables", bytes([0x28, 1]))).to_pylist())),
        }

    def open_months():
        return Api(S.url).get("/health").json["open_months"]

    try:
        for i, m in enumerate(months):
            with S.adbc(month=m) as c:
                rows(c, f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v VARCHAR)")
                rows(c, f"INSERT INTO t{i} VALUES (1, 'a')")
        before = answers()
        assert [t for t in before["adbc tables"] if t[1] == "main"] == [
            (m, "main", f"t{i}") for i, m in enumerate(months)], before
        assert open_months() == len(months)
    finally:
        stop(proc)
    proc, f, h = start(data, "--replicas", "1")
    S = Srv(proc, f, h, data, tmp_path)
    try:
        assert open_months() == 0
        after = answers()
        assert after == before
        assert open_months() == 0, "a metadata call left months open"
        with S.adbc(month=months[2]) as c:
            rows(c, "INSERT INTO t2 VALUES (2, 'b')")
        S.sync(months[2])
        assert open_months() == 1
        assert S.flight().sql("SELECT count(*) AS n FROM t2", months[2]).to_pylist() == [{"n": 2}]
        assert answers() == before
        assert open_months() == 1
    finally:
        stop(proc)


# ---------------------------------------------------------------- fuzz


REAL_NAMES = {n.casefold() for n in USERS if n != "fuzz"}


def names_a_real_user(user, password):
    """Whether the server could read these credentials as a real user's
    (whose wrong passwords would lock it out): the part before the first
    colon, normalized the ways a server might."""
    name = f"{user}:{password}".split(":", 1)[0]
    return unicodedata.normalize("NFKC", name).strip().casefold() in REAL_NAMES


fuzz_settings = settings(deadline=None, suppress_health_check=list(HealthCheck))
printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
ascii_junk = st.text(alphabet=printable, max_size=200)


def jwt_shaped(parts):
    return "Bearer " + ".".join(b64url(p) for p in parts)


def random_jwt(claims, key):
    return "Bearer " + jwt_sign({"alg": "HS256", "typ": "JWT"}, claims, key)


claims = st.fixed_dictionaries(
    {"sub": st.sampled_from(["ada", "rita", "walt", "mallory", ""]),
     "role": st.sampled_from(["admin", "writer", "reader", "root"]),
     "exp": st.integers(0, 2**40)},
    optional={"iat": st.integers(0, 2**40), "nbf": st.integers(0, 2**40)})
header_values = st.one_of(
    ascii_junk,
    ascii_junk.map(lambda v: "Basic " + v),
    st.binary(max_size=200).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: "Basic " + base64.b64encode(b).decode().rstrip("=")),
    ascii_junk.map(lambda v: "Bearer " + v),
    st.tuples(st.binary(max_size=80), st.binary(max_size=160), st.binary(max_size=48)).map(jwt_shaped),
    st.builds(random_jwt, claims, st.binary(max_size=32)),
    st.integers(4000, 8000).map(lambda n: "Bearer " + "A" * n),
    st.integers(3000, 5500).map(lambda n: "Basic " + base64.b64encode(b"nobody:" + b"x" * n).decode()),
    st.sampled_from(["", " ", "Basic", "Basic ", "Bearer", "Bearer ", "Basic Og==", "Basic Og", "Basic ===",
                     "Bearer ...", "Bearer a.b", "bearer x", "BASIC Og==", "Basic :", "Negotiate x"]),
)


def assert_refused(call, value):
    """The Flight call carrying `value` must fail: UNAUTHENTICATED, or any
    error where HTTP/2 itself may object (values over 4 KB, or with
    surrounding spaces, which RFC 9113 does not allow in a field value)."""
    try:
        call()
    except fl.FlightUnauthenticatedError:
        return
    except pa.ArrowException as e:
        assert len(value) > 4096 or value != value.strip(), f"{value[:200]!r}: {type(e).__name__}: {e}"
        return
    raise AssertionError(f"authenticated with {value[:200]!r}")


def http_status_with(S, value, path="/api/v1/months"):
    """The status of a GET with `value` (latin-1 text) as Authorization;
    None when the client or the server dropped the request."""
    try:
        return Api(S.url, value).get(path).status
    except ValueError:  # http.client refuses CR/LF in a header
        return "client refused"
    except (ConnectionError, http.client.HTTPException, urllib.error.URLError):
        return None


@settings(fuzz_settings, max_examples=150)
@given(value=header_values)
def test_fuzz_authorization_headers_never_authenticate(users_server, value):
    """Random Authorization values (junk, Basic + junk, Bearer + junk,
    JWT-shaped junk, JWTs signed with random keys, values of 4-8 KB) never
    authenticate: UNAUTHENTICATED on Flight, 401 (429 once a guessed user is
    locked out) on HTTP; the server stays up."""
    S = users_server
    assert_refused(lambda: S.flight(("authorization", value)).action("list_months"), value)
    assert http_status_with(S, value) in (401, 429), value
    assert S.proc.poll() is None


@settings(fuzz_settings, max_examples=100)
@given(value=st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"Bearer " + b),
                       st.binary(max_size=200).map(lambda b: b"Basic " + b),
                       st.binary(min_size=1, max_size=60).map(lambda b: b"Basic " + base64.b64encode(b))))
def test_fuzz_raw_header_bytes_never_authenticate_over_http(users_server, value):
    """Authorization headers of arbitrary bytes (non-ASCII, control
    characters; HTTP lets a client send them, gRPC does not) never
    authenticate and never crash the server: 401/429, or 400 when the bytes
    are not a valid header value."""
    S = users_server
    assume(b"\r" not in value and b"\n" not in value)
    status = http_status_with(S, value.decode("latin-1"))
    invalid = any(b < 0x20 and b != 0x09 or b == 0x7F for b in value)
    allowed = (400, 401, 429, None) if invalid else (401, 429)
    assert status in allowed, (value, status)
    assert S.proc.poll() is None


@settings(fuzz_settings, max_examples=120)
@given(user=st.one_of(st.just("fuzz"), st.text(max_size=40), st.text(alphabet=printable, max_size=40)),
       password=st.one_of(st.text(max_size=80), st.integers(1000, 6000).map(lambda n: "p" * n)))
def test_fuzz_credentials_never_authenticate(users_server, user, password):
    """Random user names and passwords (any Unicode, long ones, the fuzz
    user with guesses) never authenticate through Handshake, Basic on a
    call, or HTTP Basic, and never crash the server."""
    S = users_server
    assume(not names_a_real_user(user, password))
    value = basic(user, password, pad=False)
    assert_refused(lambda: S.flight().login(user, password), value)
    assert_refused(lambda: S.flight(("authorization", value)).action("list_months"), value)
    assert Api(S.url, basic(user, password)).get("/api/v1/months").status in (401, 429)
    assert S.proc.poll() is None


def test_after_fuzzing_the_server_still_serves(users_server):
    """After the fuzz tests: valid logins still work on both doors and
    /health answers."""
    S = users_server
    alive(S)
    pair = S.bearer("rita", fresh=True)
    assert S.flight(pair).sql("SELECT count(*) AS n FROM t", M1).to_pylist() == [{"n": 3}]
    assert S.http("rita").ok("GET", "/api/v1/months")["status"] == "success"


# ---------------------------------------------------------------- tokens across restarts, SIGHUP


def test_token_key_is_generated_once_and_tokens_survive_a_restart(tmp_path):
    """Without --token-secret-file the key is generated once into
    <data-dir>/.token-secret (mode 0600) and SQL cannot read it; tokens
    (default TTL 24 h) survive a restart on the same data dir; with
    --token-ttl 2 a token carries exp = now + 2 and is refused 3 s later
    on both doors."""
    tmp_path = canonical(tmp_path)
    data = tmp_path / "data"
    users_file = tmp_path / "users.toml"
    users = {"ada": USERS["ada"]}
    write_users(users_file, users)
    proc, f, h = start(data, "--replicas", "1", "--users", users_file)
    S = Srv(proc, f, h, data, tmp_path, users)
    try:
        key_file = data / ".token-secret"
        assert key_file.is_file()
        assert os.stat(key_file).st_mode & 0o777 == 0o600, oct(os.stat(key_file).st_mode)
        key = key_file.read_bytes()
        assert len(key) >= 32, "a key of at least 256 bits"
        pair = S.bearer("ada")
        token = pair[1].decode().split(" ", 1)[1]
        assert abs(jwt_decode(token)[1]["exp"] - (time.time() + 86400)) < 300, jwt_decode(token)
        with S.adbc("ada", "2031-01") as c:
            rows(c, "CREATE TABLE r AS SELECT 1 AS i")
            P = Problems()
            for sql in [f"SELECT content FROM read_text('{key_file}')", f"SELECT size FROM read_blob('{key_file}')",
                        "SELECT content FROM read_text('../.token-secret')"]:
                P.adbc(sql, lambda sql=sql: rows(c, sql), UNAUTHORIZED)
            P.check()
    finally:
        stop(proc)
    proc, f, h = start(data, "--replicas", "1", "--users", users_file, "--token-ttl", "2")
    S = Srv(proc, f, h, data, tmp_path, users)
    try:
        assert key_file.read_bytes() == key, "the key was generated again"
        assert os.stat(key_file).st_mode & 0o777 == 0o600
        assert S.flight(pair).sql("SELECT i FROM r", "2031-01").to_pylist() == [{"i": 1}]
        assert Api(S.url, "Bearer " + token).get("/api/v1/months").status == 200
        out = S.http("ada").ok("POST", "/api/v1/token", {})
        short = out["token"]
        exp = jwt_decode(short)[1]["exp"]
        assert -1 <= exp - time.time() <= 3, (exp, time.time())
        assert abs(iso(out["expires_at"]).timestamp() - exp) <= 1, out
        assert S.flight(("authorization", "Bearer " + short)).action("list_months")
        time.sleep(3.5)
        with pytest.raises(fl.FlightUnauthenticatedError):
            S.flight(("authorization", "Bearer " + short)).action("list_months")
        assert Api(S.url, "Bearer " + short).get("/api/v1/months").status == 401
        with pytest.raises(adbc_driver_manager.Error) as e:
            with S.adbc(token=short, month="2031-01") as c:
                rows(c, "SELECT 1")
        assert e.value.status_code == UNAUTHENTICATED, e.value
        # The 24-hour token from before the restart still works.
        assert S.flight(pair).action("list_months")
    finally:
        stop(proc)


def test_sighup_reloads_the_users_file(tmp_path):
    """The users file is re-read on SIGHUP: a new user signs in on both
    doors, a removed user's password and existing bearer token stop
    working, the other users' tokens keep working, and the server keeps
    running."""
    tmp_path = canonical(tmp_path)
    users_file = tmp_path / "users.toml"
    first = {"ada": USERS["ada"], "gone": User("reader", "gone-reader-Pa55")}
    second = {"ada": USERS["ada"], "newbie": User("writer", "newbie-writer-Pa55")}
    write_users(users_file, first)
    proc, f, h = start(tmp_path / "data", "--replicas", "1", "--users", users_file)
    S = Srv(proc, f, h, tmp_path / "data", tmp_path, {**first, **second})
    try:
        ada = S.bearer("ada")
        gone = S.bearer("gone")
        assert S.flight(gone).action("list_months") is not None
        gone_token = gone[1].decode().split(" ", 1)[1]
        with pytest.raises(fl.FlightUnauthenticatedError):
            S.flight().login("newbie", S.password("newbie"))
        write_users(users_file, second)
        proc.send_signal(signal.SIGHUP)
        # Three sign-in attempts at most (five failures would lock newbie out).
        for attempt, wait in enumerate((1, 1, 2)):
            time.sleep(wait)
            assert proc.poll() is None, "SIGHUP stopped the server"
            try:
                S.flight().login("newbie", S.password("newbie"))
                break
            except fl.FlightUnauthenticatedError:
                assert attempt < 2, "the new user cannot sign in 4 s after SIGHUP"
        with S.adbc("newbie", "2031-01") as c:
            rows(c, "CREATE TABLE n AS SELECT 1 AS i")
        assert S.http("newbie").ok("GET", "/api/v1/months")["months"] == ["2031-01"]
        with pytest.raises(fl.FlightUnauthenticatedError):
            S.flight(gone).action("list_months")
        assert Api(S.url, "Bearer " + gone_token).get("/api/v1/months").status == 401
        with pytest.raises(fl.FlightUnauthenticatedError):
            S.flight().login("gone", S.password("gone"))
        assert S.flight(ada).action("list_months")["months"] == ["2031-01"]
        alive(S)
    finally:
        stop(proc)


# ---------------------------------------------------------------- TLS


def test_tls_round_trip_on_both_doors(tls_server, pki):
    """--tls-cert/--tls-key: the listening lines are unchanged; the ADBC
    driver (grpc+tls://, tls_root_certs) and pyarrow (tls_root_certs) sign
    in, write and read; HTTPS answers /health and an authenticated query,
    names the Flight SQL door as grpc+tls://, and still refuses a request
    without credentials."""
    S = tls_server
    assert re.fullmatch(r"127\.0\.0\.1:\d+", S.printed[0]) and re.fullmatch(r"127\.0\.0\.1:\d+", S.printed[1])
    assert S.uri.startswith("grpc+tls://")
    with S.adbc("ada", "2031-01") as conn:
        rows(conn, "CREATE TABLE tls_t AS SELECT range AS i FROM range(1000)")
        assert rows(conn, "SELECT count(*) AS n, sum(i) AS s FROM tls_t") == [{"n": 1000, "s": 499500}]
        assert rows(conn, "SELECT i FROM tls_t WHERE i = ?", (7,)) == [{"i": 7}]
    c = Flight(S.uri, tls_root_certs=pki.ca_pem)
    c.headers = [c.login("rita", S.password("rita"))]
    assert c.sql("SELECT count(*) AS n FROM tls_t", "2031-01").to_pylist() == [{"n": 1000}]
    assert "2031-01" in c.action("list_months")["months"]
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    a = Api(S.url, context=ctx).get("/health")
    assert a.status == 200 and a.json["status"] == "healthy", a
    out = Api(S.url, basic("rita", S.password("rita")), ctx).ok(
        "POST", "/api/v1/query/async", {"query": "SELECT count(*) FROM tls_t", "month": "2031-01"})
    assert data_rows(out) == [[1000]]
    assert Api(S.url, context=ctx).get("/api/v1/months").status == 401
    # The gateway points clients at the Flight SQL door with its TLS scheme.
    assert Api(S.url, basic("rita", S.password("rita")), ctx).get("/").json["flight_sql"] == S.uri


def test_tls_refuses_plaintext_and_untrusted_clients(tls_server, pki):
    """Plain grpc:// and http:// to the TLS ports fail; clients that do not
    trust the CA fail the handshake (the certificate really is ours)."""
    S = tls_server
    opts = fl.FlightCallOptions(timeout=10)
    with pytest.raises(pa.ArrowException):
        list(fl.FlightClient("grpc://" + S.flight_addr).do_action(fl.Action("list_months", b"{}"), options=opts))
    with pytest.raises(pa.ArrowException):
        fl.FlightClient(S.uri).list_actions(options=opts)
    assert https_status(f"http://{S.http_addr}/health", None) != 200
    with pytest.raises(urllib.error.URLError) as e:
        urllib.request.urlopen(S.url + "/health", context=ssl.create_default_context(), timeout=10)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError), e.value
    with pytest.raises(adbc_driver_manager.Error):
        with flight_sql.connect("grpc://" + S.flight_addr, db_kwargs={
                "username": "ada", "password": S.password("ada"), QUERY_TIMEOUT: "10"}, autocommit=True) as conn:
            rows(conn, "SELECT 1")


def test_mtls_needs_a_client_certificate_from_the_ca(mtls_server, pki):
    """--tls-client-ca: a client without a certificate, or with one from
    another CA, is refused on Flight (pyarrow, ADBC) and HTTPS; with a
    certificate from the CA (pyarrow cert_chain/private_key, ADBC
    mtls_cert_chain/mtls_private_key, an ssl context) it works."""
    S = mtls_server
    with pytest.raises(pa.ArrowException):
        Flight(S.uri, tls_root_certs=pki.ca_pem, timeout=10).action("list_months")
    with pytest.raises(pa.ArrowException):
        Flight(S.uri, tls_root_certs=pki.ca_pem, cert_chain=pki.stranger_pem, private_key=pki.stranger_key_pem,
               timeout=10).action("list_months")
    ok = Flight(S.uri, tls_root_certs=pki.ca_pem, cert_chain=pki.client_pem, private_key=pki.client_key_pem)
    assert "months" in ok.action("list_months")
    assert ok.sql("SELECT 42 AS v", "2031-01").to_pylist() == [{"v": 42}]
    base = {TLS_ROOT: pki.ca_pem.decode(), MONTH_HDR: "2031-01", QUERY_TIMEOUT: "10"}
    with flight_sql.connect(S.uri, db_kwargs={**base, MTLS_CERT: pki.client_pem.decode(),
                                              MTLS_KEY: pki.client_key_pem.decode()}, autocommit=True) as conn:
        rows(conn, "CREATE TABLE m AS SELECT 1 AS i")
        assert rows(conn, "SELECT i FROM m") == [{"i": 1}]
    with pytest.raises(adbc_driver_manager.Error):
        with flight_sql.connect(S.uri, db_kwargs=base, autocommit=True) as conn:
            rows(conn, "SELECT 1")
    no_cert = ssl.create_default_context(cafile=str(pki.ca))
    assert https_status(S.url + "/health", no_cert) != 200
    stranger = ssl.create_default_context(cafile=str(pki.ca))
    stranger.load_cert_chain(pki.stranger, pki.stranger_key)
    assert https_status(S.url + "/health", stranger) != 200
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(pki.client, pki.client_key)
    assert https_status(S.url + "/health", client) == 200


# ---------------------------------------------------------------- listen addresses


@pytest.mark.parametrize("door", ["--flight-addr", "--http-addr"])
def test_a_non_loopback_address_without_users_is_refused(tmp_path, door):
    """Without users, binding 0.0.0.0 (either door) exits non-zero with a
    message naming --insecure, before listening."""
    addrs = {"--flight-addr": "127.0.0.1:0", "--http-addr": "127.0.0.1:0", door: "0.0.0.0:0"}
    out = subprocess.run([BIN, "serve", "--data-dir", str(tmp_path / "data"), *[x for kv in addrs.items() for x in kv]],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RUST_LOG": "duckflock=warn"})
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "--insecure" in text, text
    assert "listening" not in text, text


def test_a_non_loopback_address_with_users_starts_and_authenticates(tmp_path):
    """With users, 0.0.0.0 is allowed on both doors (no --insecure), and
    calls there need credentials."""
    tmp_path = canonical(tmp_path)
    users_file = tmp_path / "users.toml"
    users = {"rita": USERS["rita"]}
    write_users(users_file, users)
    proc, f, h = start(tmp_path / "data", "--replicas", "1", "--users", users_file, flight="0.0.0.0:0",
                       http="0.0.0.0:0")
    S = Srv(proc, f, h, tmp_path / "data", tmp_path, users)
    try:
        assert f.startswith("0.0.0.0:") and h.startswith("0.0.0.0:"), (f, h)
        with pytest.raises(fl.FlightUnauthenticatedError):
            S.flight().action("list_months")
        assert S.as_("rita").action("list_months") == {"months": []}
        assert S.http().get("/api/v1/months").status == 401
        assert S.http("rita").ok("GET", "/api/v1/months")["months"] == []
    finally:
        stop(proc)
