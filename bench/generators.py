"""Load generators, and the one record type their results are normalised into.

- loadgen-c (``../shared/loadgen-c``, built with make when gcc is present): every
  scenario, every protocol, server CPU from schedstat. It counts every delivery (loss),
  but does not check order.
- The Python fallback: ``bench/loadgen.py`` for one-room fan-out (it parses every line on
  its verifying members: loss, per-sender order, latency) and ``bench/idle.py`` for idle
  connections; machat's protocol only, no many-rooms scenario.

Both print JSON of their own shape; `Record` is what the table, the JSON results and the
plot read.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import targets
from scenarios import Scenario
from targets import REPO_ROOT, Running, Target

BENCH = Path(__file__).resolve().parent
LOADGEN_C_SRC = REPO_ROOT.parent / "shared" / "loadgen-c"


@attrs.define
class Record:
    """One run of one scenario against one target, whichever generator measured it.

    ``None`` means "not measured by this generator/scenario". Sizes are in KiB (what
    /proc reports as kB).
    """

    scenario: str
    target: str
    repeat: int
    generator: str
    commands: list[str] = attrs.Factory(list)
    #: The run completed and nothing was lost, reordered or refused.
    ok: bool = False
    problems: list[str] = attrs.Factory(list)
    room_size: int | None = None
    # chat scenarios
    expected: int | None = None
    delivered: int | None = None
    lost: int | None = None
    loss_pct: float | None = None
    #: Lines received out of per-sender order (None: the generator does not check order).
    reordered: int | None = None
    deliveries_per_s: float | None = None
    offered_per_s: float | None = None
    server_cpu_us: float | None = None  # server CPU per delivery, microseconds
    server_cpu_pct: float | None = None  # of one core, during the run
    loadgen_cpu_us: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    elapsed_s: float | None = None
    # idle connections
    connections: int | None = None
    kib_per_conn: float | None = None  # first wave: (RSS all connected - RSS before) / K
    rss_start_kib: int | None = None  # before the first wave
    rss_wave1_kib: int | None = None  # first wave connected and idle
    rss_between_kib: int | None = None  # the first wave gone, before the second
    rss_wave2_kib: int | None = None  # second wave connected and idle
    #: What the second wave adds to the RSS the first left behind, in % (the issue's < 5%).
    rss_growth_pct: float | None = None
    #: The second wave's RSS over the first wave's, in % (memory not given back shows here).
    peak_growth_pct: float | None = None
    rss_kib: dict[str, int | None] = attrs.Factory(dict)
    raw: list[Any] = attrs.Factory(list)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class GeneratorError(Exception):
    pass


def build_loadgen_c(src: Path, out_dir: Path) -> tuple[Path | None, str]:
    """Build loadgen-c from ``src`` into ``out_dir``; (binary or None, what happened)."""
    if not shutil.which("gcc") or not shutil.which("make"):
        return None, "gcc or make not found"
    if not (src / "Makefile").is_file():
        return None, f"no Makefile in {src}"
    binary = out_dir / "loadgen-c"
    proc = subprocess.run(
        ["make", "-s", "-C", str(src), f"OUT={binary}"], capture_output=True, text=True
    )
    if proc.returncode != 0 or not binary.is_file():
        return None, f"make failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    return binary, f"built from {src} with {_first_line(['gcc', '--version'])}"


def _first_line(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


def _run_json(argv: list[str], timeout: float) -> tuple[int, dict[str, Any] | None, str]:
    """Run a generator; (exit status, its JSON object or None, stderr)."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            preexec_fn=targets.PLACEMENT.preexec(targets.PLACEMENT.generator),
        )
    except subprocess.TimeoutExpired:
        return -1, None, f"no answer within {timeout:.0f} s"
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        data = None
    return proc.returncode, data if isinstance(data, dict) else None, proc.stderr.strip()


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


class LoadgenC:
    """The compiled generator: every scenario, every protocol."""

    name = "loadgen-c"

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    #: The protocols it speaks (``--protocol``); a WebSocket target needs another generator.
    protocols = frozenset({"machat", "irc", "redis"})

    def supports(self, scenario: Scenario, target: Target) -> bool:
        return target.protocol in self.protocols and scenario.kind in target.kinds

    def command(self, scenario: Scenario, target: Target, running: Running) -> list[str]:
        argv = [str(self.binary), "--protocol", target.protocol, *running.loadgen_c_args()]
        cc = [c for c in (scenario.connect_concurrency, target.connect_concurrency) if c]
        if cc:
            argv += ["--connect-concurrency", str(min(cc))]
        return argv + scenario.loadgen_c_args()

    def run(self, scenario: Scenario, target: Target, running: Running, rec: Record) -> None:
        argv = self.command(scenario, target, running)
        for wave in range(1, scenario.waves + 1):
            rec.commands.append(shlex.join(argv))
            status, data, err = _run_json(argv, timeout=120)
            if data is None:
                raise GeneratorError(f"loadgen-c exited {status} without a result: {err[-500:]}")
            rec.raw.append(data)
            if status != 0:
                rec.problems.append(f"loadgen-c exit status {status}")
            if data.get("timed_out"):
                rec.problems.append("hard timeout")
            if scenario.kind == "connections":
                _connections(rec, data, wave)
            else:
                _chat(rec, scenario, data)


def _chat(rec: Record, scenario: Scenario, d: dict[str, Any]) -> None:
    run, setup = d.get("run") or {}, d.get("setup") or {}
    if run.get("stopped") != "complete":
        rec.problems.append(f"stopped: {run.get('stopped')}")
    rec.expected = run.get("expected_deliveries")
    rec.delivered = run.get("received_deliveries")
    rec.lost = run.get("lost_or_outstanding")
    rec.loss_pct = run.get("loss_pct")
    rec.deliveries_per_s = run.get("deliveries_per_s")
    rec.server_cpu_us = run.get("server_cpu_us_per_delivery")
    rec.server_cpu_pct = (run.get("cpu") or {}).get("server_pct")
    rec.loadgen_cpu_us = run.get("loadgen_cpu_us_per_delivery")
    rec.elapsed_s = run.get("elapsed_s")
    lat = run.get("latency_us") or {}
    rec.p50_ms, rec.p99_ms, rec.max_ms = (
        _ms(lat.get("p50")),
        _ms(lat.get("p99")),
        _ms(lat.get("max")),
    )
    if scenario.paced and rec.expected:
        rec.offered_per_s = rec.expected / (scenario.M / scenario.rate)
    for key, what in (
        ("unexpected_disconnects", "disconnected by the server"),
        ("bad_lines", "malformed lines"),
    ):
        if run.get(key):
            rec.problems.append(f"{run[key]} {what}")
    if setup.get("connect_errors"):
        rec.problems.append(f"{setup['connect_errors']} connect errors")
    if (setup.get("warmup") or {}).get("not_confirmed"):
        rec.problems.append(f"{setup['warmup']['not_confirmed']} members never joined")
    redis = run.get("redis") or {}
    if redis.get("replies_not_all_subscribers") or redis.get("error_replies"):
        rec.problems.append(f"redis: {redis}")
    if rec.lost:
        rec.problems.append(f"LOSS: {rec.lost} deliveries ({rec.loss_pct}%)")


def _connections(rec: Record, d: dict[str, Any], wave: int) -> None:
    conn, server = d.get("connect") or {}, d.get("server") or {}
    joined = conn.get("connected_joined")
    rss = {phase: (server.get(phase) or {}).get("vmrss_kb") for phase in server}
    for phase, value in rss.items():
        rec.rss_kib[f"wave{wave}_{phase}"] = value
    if conn.get("errors"):
        rec.problems.append(f"wave {wave}: {conn['errors']} connect errors")
    if (d.get("verify") or {}).get("not_confirmed"):
        rec.problems.append(f"wave {wave}: {d['verify']['not_confirmed']} rooms not confirmed")
    if (d.get("hold") or {}).get("disconnected_during_hold"):
        rec.problems.append(f"wave {wave}: disconnected during hold")
    _wave(rec, wave, joined, rss.get("before"), rss.get("after_hold"))


def _wave(rec: Record, wave: int, joined: int | None, before: int | None, full: int | None):
    """Fill the idle figures from one wave's RSS before it and with it connected."""
    if wave == 1:
        rec.connections = joined
        rec.rss_start_kib, rec.rss_wave1_kib = before, full
        if joined and full and before:
            rec.kib_per_conn = (full - before) / joined
    elif wave == 2:
        rec.rss_between_kib, rec.rss_wave2_kib = before, full
        if before and full:
            rec.rss_growth_pct = 100 * (full - before) / before
        if rec.rss_wave1_kib and full:
            rec.peak_growth_pct = 100 * (full - rec.rss_wave1_kib) / rec.rss_wave1_kib


class PythonGenerator:
    """bench/loadgen.py (one room) and bench/idle.py: machat's protocol, one port."""

    name = "python"

    def supports(self, scenario: Scenario, target: Target) -> bool:
        single = target.protocol == "machat"
        return single and scenario.kind in ("fanout", "connections", "order")

    def run(self, scenario: Scenario, target: Target, running: Running, rec: Record) -> None:
        if len(running.ports) != 1:
            raise GeneratorError("the Python generators reach one server process only")
        where = ["--connect", f"{running.host}:{running.ports[0]}"]
        where += ["--server-pid", str(running.pids[0])]
        if scenario.kind == "connections":
            for wave in range(1, scenario.waves + 1):
                argv = [sys.executable, str(BENCH / "idle.py"), *where, "-N", str(scenario.K)]
                argv += [
                    "-R",
                    str(max(1, scenario.K // 10)),
                    "--idle-seconds",
                    f"{scenario.hold:g}",
                ]
                argv += ["--settle", "1", "--name-prefix", f"idle{wave}x", "--json"]
                _idle(rec, self._call(rec, argv), wave)
            return
        argv = [sys.executable, str(BENCH / "loadgen.py"), *where, "-C", str(scenario.C)]
        argv += ["-S", str(scenario.S)]
        if scenario.kind == "order":
            argv += ["--verify", "-1", "--duration", f"{scenario.duration:g}"]
            argv += ["--warmup", "0.2"]
        elif scenario.paced:
            argv += ["--mode", "paced", "--rate", f"{scenario.rate:g}"]
            argv += ["--duration", f"{scenario.M / scenario.rate:g}", "--warmup", "0.5"]
        else:
            # loadgen.py is closed-loop for a time, not a message count; a short window
            # (the compiled generator's -M 3000 lasts 50-300 ms at 1 M/s).
            duration = 0.5 if scenario.M <= 500 else 2.0
            argv += ["--duration", f"{duration:g}", "--warmup", "0.3"]
        _fanout_py(rec, self._call(rec, [*argv, "--json"]))
        if scenario.paced and scenario.kind == "fanout":
            members = scenario.C + scenario.S  # every member receives every message
            rec.offered_per_s = scenario.S * scenario.rate * members

    def _call(self, rec: Record, argv: list[str]) -> dict[str, Any]:
        script = Path(argv[1]).relative_to(REPO_ROOT)
        rec.commands.append(shlex.join(["python", str(script), *argv[2:]]))
        status, data, err = _run_json(argv, timeout=180)
        if status != 0 or data is None:
            raise GeneratorError(f"{Path(argv[1]).name} exited {status}: {err[-500:]}")
        rec.raw.append(data)
        return data["result"]


def _fanout_py(rec: Record, r: dict[str, Any]) -> None:
    rec.expected = r["expected_deliveries"]
    rec.delivered = r["received_deliveries"]
    rec.lost = r["lost"]
    rec.loss_pct = 100 * r["lost"] / r["expected_deliveries"] if r["expected_deliveries"] else None
    rec.reordered = r["reordered"]
    rec.deliveries_per_s = r["deliveries_per_s"]
    rec.server_cpu_us = r["server_cpu_us_per_delivery"]
    rec.server_cpu_pct = r["server_cpu_pct"]
    rec.loadgen_cpu_us = r["loadgen_cpu_us_per_delivery"]
    rec.p50_ms, rec.p99_ms, rec.max_ms = (
        r["latency_p50_ms"],
        r["latency_p99_ms"],
        r["latency_max_ms"],
    )
    rec.elapsed_s = r["window_s"]
    if rec.lost:
        rec.problems.append(f"LOSS: {rec.lost} deliveries")
    if r["reordered"]:
        rec.problems.append(f"ORDER: {r['reordered']} lines out of per-sender order")
    for key in ("extra", "gaps", "malformed", "disconnected"):
        if r[key]:
            rec.problems.append(f"{r[key]} {key}")
    rec.problems += [f"error: {e}" for e in r["errors"][:3]]


def _idle(rec: Record, r: dict[str, Any], wave: int) -> None:
    for key in ("rss_baseline_kib", "rss_connected_kib", "rss_after_disconnect_kib"):
        rec.rss_kib[f"wave{wave}_{key}"] = r.get(key)
    if r.get("refused") or r.get("connect_errors") or r.get("closed_by_server"):
        rec.problems.append(
            f"wave {wave}: refused {r.get('refused')}, errors {r.get('connect_errors')},"
            f" closed {r.get('closed_by_server')}"
        )
    _wave(rec, wave, r.get("connected"), r.get("rss_baseline_kib"), r.get("rss_connected_kib"))
