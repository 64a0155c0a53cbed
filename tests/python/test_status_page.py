"""The status page in a real browser: Debian's Chromium, headless and
offline (no sandbox, no GPU, no background networking, no component
updates, a fresh profile). The page must show every month and its nodes
from its own JS and assets; the screenshot is kept as a test artifact."""
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import start_server
from http_client import Http

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url, profile, *extra):
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", f"--user-data-dir={profile}", "--window-size=1280,1000",
         "--virtual-time-budget=8000", "--run-all-compositor-stages-before-draw", *extra, url],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by scripts/test.sh")
def test_status_page_shows_months_and_nodes():
    with tempfile.TemporaryDirectory() as tmp:
        proc, _ = start_server(os.path.join(tmp, "data"), "--replicas", "3")
        api = Http(proc.http_url)
        try:
            for m in ["2026-01", "2026-02"]:
                api.ok("POST", "/api/v1/modify/async", {"exec": "CREATE TABLE t AS SELECT 1 AS x", "month": m})
            for _ in range(5):
                api.ok("POST", "/api/v1/query/async", {"query": "SELECT * FROM t", "month": "2026-01"})
            page = api.get("/status")
            assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
            # No external assets: nothing is fetched from anywhere but the server.
            assert not re.findall(r'(?:src|href)="(?:https?:)?//', page.body)

            dom = chromium(proc.http_url + "/status", os.path.join(tmp, "profile1"), "--dump-dom")
            assert dom.returncode == 0, dom.stderr[-2000:]
            html = dom.stdout
            assert 'data-loaded="true"' in html, html[-3000:]
            for m in ["2026-01", "2026-02"]:
                assert f'data-month="{m}"' in html
            section = html.split('data-month="2026-01"')[1].split("</section>")[0]
            nodes = re.findall(r"<td class=\"l\">(node_\d)</td>", section)
            assert nodes == ["node_0", "node_1", "node_2", "node_3"], section
            assert "primary" in section and section.count("replica") == 3
            assert ">healthy<" in html and "unhealthy" not in html.split("<h1>")[1].split("</div>")[0]

            os.makedirs(ARTIFACTS, exist_ok=True)
            shot = os.path.abspath(os.path.join(ARTIFACTS, "status-page.png"))
            r = chromium(proc.http_url + "/status", os.path.join(tmp, "profile2"), f"--screenshot={shot}")
            assert r.returncode == 0 and os.path.getsize(shot) > 10_000, r.stderr[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
