"""Load generator for machat: C receivers and S senders in one room.

    python bench/loadgen.py -C 100 -S 2 --duration 10
    python bench/loadgen.py -C 500 -S 2 --mode paced --rate 200 --json

Starts the server as a subprocess on a free loopback port (or targets ``--connect``),
joins C receivers and S senders to one room, lets the senders send fixed-size messages
carrying ``<sender id> <sequence> <perf_counter_ns>``, and checks what every member
receives: loss, per-sender reordering, latency. See bench/README.md for the figures.

Every member, senders included, receives every message. The senders and the receivers
chosen for verification parse every line; the other receivers only count lines (a C-speed
``bytes.count``) so that the load generator stays cheaper than the server it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio
from benchlib import (
    JoinRefused,
    ServerProcess,
    cpu_seconds,
    join,
    machine_busy_seconds,
    machine_info,
    parse_address,
    raise_nofile_limit,
    rss_kib,
)

DEFAULT_SERVER_FLAGS = "--rate 0 --max-per-ip 0 --max-clients 0"
ROOM = "bench"
BUCKET_NS = 10_000  # latency histogram resolution: 10 us
N_BUCKETS = 1_000_000  # up to 10 s; the last bucket holds everything slower
STAR, BANG = 42, 33  # b"*"[0], b"!"[0]: the first byte of notices and errors


# ---------------------------------------------------------------------------------------
# Shared state of one run (one process, one trio loop: no locking)


class Tally:
    """Counters every member adds to, and the latency histogram."""

    def __init__(self) -> None:
        self.delivered = 0  # message lines received, all members, whole run
        self.reads = 0  # receive_some calls that returned data
        self.read_bytes = 0
        self.expected_total = math.inf  # set when the senders stop
        self.drained = trio.Event()
        self.hist = [0] * N_BUCKETS
        self.lat_lo = math.inf  # only messages sent in [lat_lo, lat_hi) count for latency
        self.lat_hi = math.inf
        self.stopping = False

    def check_drained(self) -> None:
        if self.delivered >= self.expected_total:
            self.drained.set()

    def percentile_ms(self, q: float) -> float | None:
        total = sum(self.hist)
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for i, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                return (i + 1) * BUCKET_NS / 1e6  # upper edge of the bucket
        raise AssertionError("unreachable")


def make_message(sid: int, seq: int, ts: int, size: int) -> bytes:
    """``<sid> <seq> <ts> xxxx...\\n``, exactly ``size`` bytes including the newline."""
    head = b"%d %d %d " % (sid, seq, ts)
    return head + b"x" * (size - 1 - len(head)) + b"\n"


class Member:
    """One connection: its reader, and for a sender, its send loop."""

    def __init__(
        self,
        tally: Tally,
        name: str,
        *,
        sid: int | None,
        verify: bool,
        n_senders: int,
    ) -> None:
        self.tally = tally
        self.raw: socket.socket | None = None  # a counting receiver's socket, for poll()
        self.name = name
        self.sid = sid  # sender id, None for a receiver
        self.verify = verify or sid is not None
        self.stream: trio.SocketStream | None = None
        self.tail = b""
        self.got = 0  # message lines received
        self.notices = 0
        self.errors: list[str] = []
        self.malformed = 0
        self.closed = False  # the server closed the connection
        # verification, per sender id
        self.next_seq = [0] * n_senders
        self.got_from = [0] * n_senders
        self.reordered = 0  # a sequence number lower than the next expected
        self.gaps = 0  # sequence numbers skipped (lost, or arriving later out of order)
        # sending
        self.sent = 0
        self.acked = -1  # highest own sequence number seen echoed back
        self.wake = trio.Event()
        self.send_done = trio.Event()
        self.send_error: str | None = None

    # -- reading ---------------------------------------------------------------------

    async def run(self, address: tuple[str, int], *, task_status=trio.TASK_STATUS_IGNORED):
        """Connect and join; report started; then read until closed or cancelled.

        A counting receiver does not read here: it hands a duplicate of its socket to
        `poll_counting`, which sweeps all of them, and waits to be cancelled.
        """
        stream = await trio.open_tcp_stream(*address)
        try:
            rest = await join(stream, self.name, ROOM)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self.stream = stream
        tally = self.tally
        try:
            if rest:
                self.feed(rest)
            if not self.verify:
                # Shares the open file (and its O_NONBLOCK) with trio's socket, which
                # stays registered with trio and is closed by trio.
                self.raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
                task_status.started()
                await trio.sleep_forever()
            task_status.started()
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError as exc:
                    self.errors.append(f"receive failed: {exc!r}")
                    data = b""
                if not data:
                    self.closed = True
                    return
                tally.reads += 1
                tally.read_bytes += len(data)
                self.feed(data)
        finally:
            if self.raw is not None:
                self.raw.close()
                self.raw = None
            await trio.aclose_forcefully(stream)

    def poll(self) -> None:
        """Read what the kernel holds for a counting receiver, without blocking."""
        raw, tally = self.raw, self.tally
        if raw is None:
            return
        while True:
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self.errors.append(f"receive failed: {exc!r}")
                data = b""
            if not data:
                self.closed = True
                raw.close()
                self.raw = None
                return
            tally.reads += 1
            tally.read_bytes += len(data)
            self.feed(data)
            if len(data) < 65536:
                return

    def feed(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        if self.verify:
            self._feed_verify(data)
        elif b"*" in data or b"!" in data:  # a notice or an error: look at each line
            self._feed_lines(data)
        else:  # the fast path: only messages (their bytes hold neither * nor !)
            n = data.count(b"\n")
            self.tail = data[data.rfind(b"\n") + 1 :]
            self.got += n
            self.tally.delivered += n
            if self.tally.delivered >= self.tally.expected_total:
                self.tally.drained.set()

    def _other_line(self, line: bytes) -> None:
        if line[0] == BANG:
            if len(self.errors) < 5:
                self.errors.append(line.decode("utf-8", "replace"))
        else:
            self.notices += 1

    def _feed_lines(self, data: bytes) -> None:
        lines = data.split(b"\n")
        self.tail = lines.pop()
        n = 0
        for line in lines:
            if line and (line[0] == STAR or line[0] == BANG):
                self._other_line(line)
            else:
                n += 1
        self.got += n
        self.tally.delivered += n
        self.tally.check_drained()

    def _feed_verify(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        tally = self.tally
        lo, hi, hist = tally.lat_lo, tally.lat_hi, tally.hist
        next_seq, got_from = self.next_seq, self.got_from
        own = self.sid
        acked = self.acked
        lines = data.split(b"\n")
        self.tail = lines.pop()
        n = 0
        for line in lines:
            if not line:
                continue
            c = line[0]
            if c == STAR or c == BANG:
                self._other_line(line)
                continue
            try:
                sid_b, seq_b, ts_b, _ = line.partition(b":")[2].split(b" ", 3)
                sid, seq, ts = int(sid_b), int(seq_b), int(ts_b)
                expected = next_seq[sid]
            except (ValueError, IndexError):
                self.malformed += 1
                continue
            n += 1
            got_from[sid] += 1
            if seq == expected:
                next_seq[sid] = seq + 1
            elif seq > expected:
                self.gaps += seq - expected
                next_seq[sid] = seq + 1
            else:
                self.reordered += 1
            if sid == own and seq > acked:
                acked = seq
            if lo <= ts < hi:
                i = (now - ts) // BUCKET_NS
                hist[i if i < N_BUCKETS else N_BUCKETS - 1] += 1
        self.got += n
        tally.delivered += n
        tally.check_drained()
        if acked != self.acked:
            self.acked = acked
            self.wake.set()

    # -- sending ---------------------------------------------------------------------

    async def send_max(self, window: int, size: int, batch: int) -> None:
        """As fast as the window allows: message n waits for the echo of n - window."""
        assert self.stream is not None and self.sid is not None
        try:
            while not self.tally.stopping:
                room = self.acked + 1 + window - self.sent
                if room <= 0:
                    self.wake = trio.Event()
                    await self.wake.wait()
                    continue
                await self._send_batch(min(room, batch), size)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.send_error = repr(exc)
        finally:
            self.send_done.set()

    async def send_paced(self, rate: float, size: int, batch: int) -> None:
        """``rate`` messages per second on a fixed schedule (open loop, no window)."""
        assert self.stream is not None and self.sid is not None
        t0 = trio.current_time()
        try:
            while not self.tally.stopping:
                due = int((trio.current_time() - t0) * rate) + 1
                k = due - self.sent
                if k > 0:
                    await self._send_batch(min(k, batch), size)
                    continue
                self.wake = trio.Event()
                with trio.move_on_at(t0 + self.sent / rate):
                    await self.wake.wait()  # set by stop(): no need to sleep it out
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.send_error = repr(exc)
        finally:
            self.send_done.set()

    async def _send_batch(self, k: int, size: int) -> None:
        ts = time.perf_counter_ns()
        sid, seq = self.sid, self.sent
        data = b"".join([make_message(sid, seq + i, ts, size) for i in range(k)])
        # Never cancelled midway (stop() only sets a flag), so a line is never cut short.
        await self.stream.send_all(data)
        self.sent += k

    def stop(self) -> None:
        self.wake.set()


# ---------------------------------------------------------------------------------------
# One run


def _verify_indices(c: int, k: int) -> set[int]:
    """k receivers spread evenly over the join order, first and last included."""
    if k >= c:
        return set(range(c))
    if k <= 0:
        return set()
    if k == 1:
        return {c - 1}
    return {round(i * (c - 1) / (k - 1)) for i in range(k)}


async def _connect_all(nursery, members: Sequence[Member], address, parallel: int) -> None:
    limiter = trio.CapacityLimiter(parallel)

    async def one(m: Member) -> None:
        async with limiter:
            await nursery.start(m.run, address)

    async with trio.open_nursery() as n:
        for m in members:
            n.start_soon(one, m)


async def poll_counting(members: Sequence[Member], interval: float) -> None:
    """Sweep the counting receivers' sockets every ``interval`` seconds.

    One task doing non-blocking reads costs a system call per socket per sweep, far
    less than a trio task per receiver waking up for every small write of the server.
    Only counting receivers are swept: the extra delay does not touch the latencies.
    """
    while True:
        start = trio.current_time()
        for i, m in enumerate(members):
            m.poll()
            if i % 64 == 63:
                await trio.lowlevel.checkpoint()  # let senders and verifiers run
        await trio.sleep_until(start + interval)


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class _Snapshot:
    def __init__(self, tally: Tally, senders: Sequence[Member], server_pid: int | None):
        self.t = time.perf_counter()
        self.delivered = tally.delivered
        self.reads = tally.reads
        self.read_bytes = tally.read_bytes
        self.sent = sum(s.sent for s in senders)
        self.server_cpu = cpu_seconds(server_pid) if server_pid else None
        self.own_cpu = time.process_time()
        self.machine_busy = machine_busy_seconds()


async def run_load(args: argparse.Namespace, address, server_pid: int | None) -> dict[str, Any]:
    tally = Tally()
    c, s = args.C, args.S
    verify_at = _verify_indices(c, c if args.verify < 0 else args.verify)
    p = args.name_prefix
    senders = [Member(tally, f"{p}s{i}", sid=i, verify=True, n_senders=s) for i in range(s)]
    receivers = [
        Member(
            tally,
            f"{p}r{i}",
            sid=None,
            verify=i in verify_at,
            n_senders=s,
        )
        for i in range(c)
    ]
    members = receivers + senders
    rss_start = rss_kib(server_pid) if server_pid else None
    result: dict[str, Any] = {}

    failed: str | None = None
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        try:
            await _connect_all(nursery, members, address, args.connect_parallel)
        except* JoinRefused as group:
            failed = f"the server refused a member: {_first(group).line}"
        except* OSError as group:
            failed = f"connecting failed: {_first(group)!r}"
        if failed is not None:
            nursery.cancel_scope.cancel()
            return {"failed": failed}
        result["connect_s"] = time.perf_counter() - t0
        counting = [m for m in receivers if not m.verify]
        if counting:
            nursery.start_soon(poll_counting, counting, args.poll_interval)

        for sender in senders:
            if args.mode == "max":
                nursery.start_soon(sender.send_max, args.window, args.size, args.batch)
            else:
                nursery.start_soon(sender.send_paced, args.rate, args.size, args.batch)

        await trio.sleep(args.warmup)
        tally.lat_lo = time.perf_counter_ns()
        a = _Snapshot(tally, senders, server_pid)
        await trio.sleep(args.duration)
        tally.lat_hi = time.perf_counter_ns()
        b = _Snapshot(tally, senders, server_pid)

        tally.stopping = True
        for sender in senders:
            sender.stop()
        with trio.move_on_after(args.drain_timeout):
            for sender in senders:
                await sender.send_done.wait()
        sent_total = sum(m.sent for m in senders)
        tally.expected_total = sent_total * len(members)
        tally.check_drained()
        t_drain = time.perf_counter()
        with trio.move_on_after(args.drain_timeout):
            await tally.drained.wait()
        result["drain_s"] = time.perf_counter() - t_drain
        rss_end = rss_kib(server_pid) if server_pid else None
        nursery.cancel_scope.cancel()

    window = b.t - a.t
    deliveries = b.delivered - a.delivered
    verified = [m for m in members if m.verify]
    lost = sum(max(0, sent_total - m.got) for m in members)
    extra = sum(max(0, m.got - sent_total) for m in members)
    server_cpu = (
        b.server_cpu - a.server_cpu
        if a.server_cpu is not None and b.server_cpu is not None
        else None
    )
    own_cpu = b.own_cpu - a.own_cpu
    busy = b.machine_busy[0] - a.machine_busy[0]
    irq = b.machine_busy[1] - a.machine_busy[1]
    other_cpu = max(0.0, busy - irq - own_cpu - (server_cpu or 0.0))  # ticks: noisy
    errors = [f"{m.name}: {e}" for m in members for e in m.errors]
    errors += [f"{m.name}: send failed: {m.send_error}" for m in senders if m.send_error]

    result.update(
        window_s=window,
        messages_sent=b.sent - a.sent,
        messages_per_s=(b.sent - a.sent) / window,
        deliveries=deliveries,
        deliveries_per_s=deliveries / window,
        run_messages_sent=sent_total,
        expected_deliveries=sent_total * len(members),
        received_deliveries=sum(m.got for m in members),
        lost=lost,
        extra=extra,
        reordered=sum(m.reordered for m in verified),
        gaps=sum(m.gaps for m in verified),
        malformed=sum(m.malformed for m in verified),
        verified_members=len(verified),
        latency_samples=sum(tally.hist),
        latency_p50_ms=tally.percentile_ms(0.50),
        latency_p90_ms=tally.percentile_ms(0.90),
        latency_p99_ms=tally.percentile_ms(0.99),
        latency_max_ms=tally.percentile_ms(1.0),
        server_cpu_s=server_cpu,
        server_cpu_pct=None if server_cpu is None else 100 * server_cpu / window,
        server_cpu_us_per_delivery=(
            None if server_cpu is None or not deliveries else server_cpu / deliveries * 1e6
        ),
        server_rss_start_kib=rss_start,
        server_rss_end_kib=rss_end,
        reads=b.reads - a.reads,
        mean_read_bytes=(
            (b.read_bytes - a.read_bytes) / (b.reads - a.reads) if b.reads > a.reads else None
        ),
        loadgen_cpu_s=own_cpu,
        loadgen_cpu_pct=100 * own_cpu / window,
        loadgen_cpu_us_per_delivery=own_cpu / deliveries * 1e6 if deliveries else None,
        other_cpu_pct=100 * other_cpu / window,
        irq_cpu_pct=100 * irq / window,
        disconnected=sum(m.closed for m in members),
        errors=errors[:20],
    )
    return result


# ---------------------------------------------------------------------------------------
# Command line


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def report_text(config: dict[str, Any], r: dict[str, Any]) -> str:
    mode = config["mode"]
    load = (
        f"window {config['window']} messages per sender"
        if mode == "max"
        else f"{config['rate']:g} msgs/s per sender"
    )
    members = config["C"] + config["S"]
    out = [
        "machat load generator",
        f"  C={config['C']} receivers, S={config['S']} senders, one room ({members} members)",
        f"  mode {mode}, {load}; {config['size']}-byte messages",
        f"  warmup {config['warmup']:g} s, duration {config['duration']:g} s",
        f"  server: {config['server']}",
        f"  python {config['machine']['python']}, {config['machine']['cores']} cores, "
        f"RLIMIT_NOFILE {config['nofile']}",
        "",
        f"  connect+join      {r['connect_s']:.2f} s",
        f"  messages sent     {r['messages_sent']} in {r['window_s']:.2f} s"
        f" ({r['messages_per_s']:,.0f} msgs/s)",
        f"  deliveries/s      {r['deliveries_per_s']:,.0f}",
        f"  deliveries        expected {r['expected_deliveries']:,}, received "
        f"{r['received_deliveries']:,}, lost {r['lost']:,}, extra {r['extra']:,}"
        f"  (whole run, drained in {r['drain_s']:.2f} s)",
        f"  reordered         {r['reordered']} (gaps {r['gaps']}, malformed {r['malformed']};"
        f" checked on {r['verified_members']} members)",
        f"  latency           p50 {_fmt(r['latency_p50_ms'])} ms, p90 "
        f"{_fmt(r['latency_p90_ms'])} ms, p99 {_fmt(r['latency_p99_ms'])} ms, max "
        f"{_fmt(r['latency_max_ms'])} ms ({r['latency_samples']:,} samples)",
        f"  server CPU        {_fmt(r['server_cpu_pct'], '.0f', '%')} of a core, "
        f"{_fmt(r['server_cpu_us_per_delivery'], '.2f')} us/delivery",
        f"  server RSS        {_fmt(r['server_rss_start_kib'], ',')} KiB at start, "
        f"{_fmt(r['server_rss_end_kib'], ',')} KiB at end",
        f"  loadgen CPU       {r['loadgen_cpu_pct']:.0f}% of a core, "
        f"{_fmt(r['loadgen_cpu_us_per_delivery'], '.2f')} us/delivery; "
        f"{r['reads'] / r['window_s']:,.0f} reads/s of {_fmt(r['mean_read_bytes'], ',.0f')} bytes",
        f"  other CPU         {r['other_cpu_pct']:.0f}% of a core in other processes, "
        f"{r['irq_cpu_pct']:.0f}% in interrupts",
    ]
    if r["disconnected"]:
        out.append(f"  DISCONNECTED      {r['disconnected']} members closed by the server")
    for e in r["errors"]:
        out.append(f"  error: {e}")
    if r.get("server_killed"):
        out.append("  note: the server did not exit within 2 s of SIGINT and was killed")
    if r["other_cpu_pct"] >= 20:
        out.append(
            f"  WARNING: other processes used {r['other_cpu_pct']:.0f}% of a core during the"
            " measurement: the machine was not quiet, the figures are unreliable"
        )
    if r["loadgen_cpu_pct"] >= 90:
        out.append(
            "  WARNING: the load generator used >= 90% of a core: it may be the bottleneck;"
            " the figures are a lower bound for the server"
        )
    if r["server_cpu_pct"] is not None and r["server_cpu_pct"] >= 90:
        out.append("  note: the server is CPU-bound (>= 90% of a core)")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-C", type=int, default=100, help="receivers (default 100)")
    p.add_argument("-S", type=int, default=2, help="senders (default 2)")
    p.add_argument("--mode", choices=["max", "paced"], default="max")
    p.add_argument(
        "--window",
        type=int,
        default=64,
        help="max mode: messages in flight per sender (default 64)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="paced mode: messages per second per sender (default 100)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=64,
        help="bytes per message line sent, newline included (default 64)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=256,
        help="most messages a sender writes in one send_all (default 256)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds (default 1)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the last deliveries (default 10)",
    )
    p.add_argument(
        "--verify",
        type=int,
        default=8,
        help="receivers that parse every line (the others count lines); "
        "-1 for all (default 8; senders always verify)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.01,
        help="seconds between sweeps over the counting receivers' sockets (default 0.01)",
    )
    p.add_argument(
        "--connect", metavar="HOST:PORT", help="use a running server instead of starting one"
    )
    p.add_argument(
        "--server-pid", type=int, help="with --connect: the server's pid, for its CPU and RSS"
    )
    p.add_argument(
        "--server-flags",
        default=DEFAULT_SERVER_FLAGS,
        help=f"extra flags for the server (default {DEFAULT_SERVER_FLAGS!r})",
    )
    p.add_argument(
        "--server-module",
        default="machat.cmd.chatserver",
        help="module run with python -m (default machat.cmd.chatserver)",
    )
    p.add_argument(
        "--connect-parallel",
        type=int,
        default=64,
        help="handshakes in progress at once (default 64)",
    )
    p.add_argument("--name-prefix", default="lg", help="prefix of the members' names")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.size < 48:
        raise SystemExit("loadgen: --size must be at least 48 bytes")
    if args.mode == "paced" and args.rate <= 0:
        raise SystemExit("loadgen: --rate must be positive")
    soft, hard = raise_nofile_limit()
    if soft < args.C + args.S + 64:
        raise SystemExit(f"loadgen: RLIMIT_NOFILE {soft} is too low for {args.C + args.S}")
    config: dict[str, Any] = {
        "C": args.C,
        "S": args.S,
        "mode": args.mode,
        "window": args.window if args.mode == "max" else None,
        "rate": args.rate if args.mode == "paced" else None,
        "size": args.size,
        "warmup": args.warmup,
        "duration": args.duration,
        "verify": args.verify,
        "machine": machine_info(),
        "nofile": soft,
    }
    if args.connect:
        address = parse_address(args.connect)
        config["server"] = f"running at {args.connect}" + (
            f" (pid {args.server_pid})" if args.server_pid else " (no pid: no CPU/RSS)"
        )
        config["server_flags"] = None
        result = trio.run(run_load, args, address, args.server_pid)
    else:
        flags = shlex.split(args.server_flags)
        with ServerProcess(flags, module=args.server_module) as server:
            try:
                server.wait_ready()
            except RuntimeError as exc:
                raise SystemExit(
                    f"loadgen: {exc}\n(the extra server flags are set with --server-flags)"
                ) from None
            config["server"] = server.command
            config["server_flags"] = flags
            try:
                result = trio.run(run_load, args, server.address, server.pid)
            finally:
                if server.proc.poll() is not None:
                    print(
                        f"loadgen: the server exited ({server.proc.returncode}):\n"
                        f"{server.log_tail()}",
                        file=sys.stderr,
                    )
        result["server_exit_code"] = server.proc.returncode
        result["server_killed"] = server.killed
    if "failed" in result:
        raise SystemExit(f"loadgen: {result['failed']}")
    if args.json:
        print(json.dumps({"config": config, "result": result}))
    else:
        print(report_text(config, result))
    return {"config": config, "result": result}


if __name__ == "__main__":
    main()
