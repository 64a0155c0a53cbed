"""A tiny HTTP client for the gateway tests (stdlib only): JSON in, JSON out,
numbers parsed exactly (decimals as Decimal, integers as int)."""
import json
import urllib.error
import urllib.request
from decimal import Decimal


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body, parse_float=Decimal) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.status} {self.body[:500]!r}>"


class Http:
    def __init__(self, base):
        self.base = base

    def request(self, method, path, body=None, raw=None, headers=None, timeout=120):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Answer(r.status, r.headers, r.read().decode(errors="replace"))
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read().decode(errors="replace"))

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def ok(self, method, path, body=None, **kw):
        a = self.request(method, path, body=body, **kw)
        assert a.status == 200, a
        return a.json
