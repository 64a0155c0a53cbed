"""The README's Python quick start runs as written against a real server."""

import os
import re
import signal

from conftest import start_server

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def quick_start():
    text = open(README).read()
    section = text[text.index("## Python quick start"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_python_quick_start_runs(tmp_path, capsys):
    proc, uri = start_server(str(tmp_path / "data"), "--replicas", "2")
    try:
        code = quick_start().replace("grpc://127.0.0.1:50051", uri)
        for _ in range(2):  # rerunnable: it leaves the same two rows
            exec(compile(code, "README.md", "exec"), {})
        out = capsys.readouterr().out
        assert "goose" in out and "12.25" in out, out
        assert out.count("duck") == 2, out  # only polars prints every row, once per run
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
