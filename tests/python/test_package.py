"""scripts/package.sh ships a lean binary: no debug info in dist/duckflock
(symbols kept), the line tables in dist/duckflock.debug beside it, found
through .gnu_debuglink; the lean binary runs."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sections(path):
    """Section names of an ELF file (readelf from binutils)."""
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", out, re.M))


def test_package_strips_debug_info_beside_the_binary(tmp_path):
    out = tmp_path / "dist"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh"), str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    lean, debug = out / "duckflock", out / "duckflock.debug"
    built = Path(os.environ["DUCKFLOCK_BIN"])
    assert lean.stat().st_size < built.stat().st_size * 0.5, (lean.stat().st_size, built.stat().st_size)
    s = sections(lean)
    assert ".gnu_debuglink" in s and ".debug_line" not in s and ".symtab" in s, s
    assert ".debug_line" in sections(debug)
    v = subprocess.run([str(lean), "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and v.stdout.startswith("duckflock "), v
