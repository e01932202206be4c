"""Smoke test of bench/loadgen.py: a real server subprocess, a fraction of a second of load.

Loopback only, port chosen by the load generator; the whole run is bounded by the
subprocess timeout. It checks the load generator works end to end and that the server
loses and reorders nothing under a tiny load, not any performance figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOADGEN = REPO / "bench" / "loadgen.py"


def _run_loadgen(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(LOADGEN), *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def test_loadgen_max_mode_no_loss_no_reordering() -> None:
    out = _run_loadgen("-C", "3", "-S", "1", "--duration", "0.5", "--warmup", "0.2")
    r = out["result"]
    assert out["config"]["C"] == 3 and out["config"]["S"] == 1
    assert r["messages_sent"] > 0
    assert r["received_deliveries"] == r["expected_deliveries"] > 0
    assert (r["lost"], r["extra"], r["reordered"], r["gaps"], r["malformed"]) == (0, 0, 0, 0, 0)
    assert r["verified_members"] == 4  # with C this small every member checks every line
    assert r["disconnected"] == 0 and r["errors"] == []
    assert r["latency_samples"] > 0 and r["latency_p50_ms"] is not None
    assert r["server_cpu_s"] is not None and r["server_rss_end_kib"] > 0
