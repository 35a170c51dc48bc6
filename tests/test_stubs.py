"""The typed stub must describe the extension as built."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stub_matches_the_extension():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_stubs.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_package_is_marked_typed():
    assert (ROOT / "python" / "aneforge" / "py.typed").exists()
