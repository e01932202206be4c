"""The protocol package is sans-IO: importing all of it must not import trio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MODULES = ["framing", "handshake", "formatting", "events", "errors", "commands"]


def test_protocol_imports_no_trio():
    imports = ", ".join(f"machat.protocol.{m}" for m in MODULES)
    code = f"import {imports}, sys; assert 'trio' not in sys.modules, 'trio was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_check_would_notice_trio():
    # The same check fails once trio is imported, so the test above can fail.
    code = "import trio, sys; assert 'trio' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode != 0
