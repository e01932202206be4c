"""The web side's sans-IO modules import no trio, like the rest of machat.protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_http_and_websocket_import_no_trio():
    code = (
        "import machat.protocol.http, machat.protocol.websocket, sys; "
        "assert 'trio' not in sys.modules, 'trio was imported'; "
        "assert 'h11' in sys.modules and 'wsproto' in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
