"""Flight SQL over pyarrow.flight with access to response headers (the ADBC
driver hides them): statements, updates, actions, and the x-duckflock-token /
x-duckflock-node headers."""

import json

import pyarrow.flight as fl


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, data):
    return bytes([(num << 3) | 2]) + _varint(len(data)) + data


def _any(name, query):
    msg = _field(1, query.encode())
    return _field(1, f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()) + _field(2, msg)


class _Headers(fl.ClientMiddleware):
    def __init__(self, sink):
        self.sink = sink

    def received_headers(self, headers):
        self.sink.update({k: v for k, v in headers.items()})


class _Factory(fl.ClientMiddlewareFactory):
    def __init__(self):
        self.last = {}

    def start_call(self, info):
        self.last = {}
        return _Headers(self.last)


class Client:
    def __init__(self, uri):
        self.factory = _Factory()
        self.client = fl.FlightClient(uri, middleware=[self.factory])

    def _opts(self, month=None, token=None, months=None):
        h = []
        if month:
            h.append((b"x-duckflock-month", month.encode()))
        if token:
            h.append((b"x-duckflock-token", token.encode()))
        if months:
            h.append((b"x-duckflock-months", months.encode()))
        return fl.FlightCallOptions(headers=h)

    def header(self, name):
        v = self.factory.last.get(name)
        if isinstance(v, list):
            v = v[0] if v else None
        return v.decode() if isinstance(v, bytes) else v

    def update(self, sql, month=None):
        """Runs an update; returns (row count, token)."""
        desc = fl.FlightDescriptor.for_command(_any("CommandStatementUpdate", sql))
        import pyarrow as pa

        writer, reader = self.client.do_put(desc, pa.schema([]), options=self._opts(month))
        writer.done_writing()
        buf = reader.read()
        token = self.header("x-duckflock-token")
        writer.close()
        n = 0
        if buf is not None:
            raw = buf.to_pybytes()
            # DoPutUpdateResult { int64 record_count = 1; }
            if raw[:1] == b"\x08":
                shift, i = 0, 1
                while True:
                    b = raw[i]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not b & 0x80:
                        break
        return n, token

    def query(self, sql, month=None, token=None, months=None):
        """Runs a query; returns (table, node that served it)."""
        desc = fl.FlightDescriptor.for_command(_any("CommandStatementQuery", sql))
        opts = self._opts(month, token, months)
        info = self.client.get_flight_info(desc, options=opts)
        node = self.header("x-duckflock-node")
        table = self.client.do_get(info.endpoints[0].ticket, options=opts).read_all()
        return table, node

    def action(self, name, body=None):
        res = list(self.client.do_action(fl.Action(name, json.dumps(body or {}).encode())))
        return json.loads(res[0].body.to_pybytes()) if res else None

    def close(self):
        self.client.close()
