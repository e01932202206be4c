"""Memory per idle connection: N clients joined to R rooms, doing nothing.

    python bench/idle.py                # 5000 connections over 50 rooms
    python bench/idle.py -N 1000 -R 10 --json

Starts the server (or uses ``--connect``), reads its RSS at rest, opens N connections in
batches (each joins room ``idle<i mod R>`` and then only reads, discarding the notices),
reads the RSS with everyone connected and the server's CPU while they sit idle, closes
them all and reads the RSS once more. Refusals (``! ERROR 109`` when the server is full,
or any other error line) are counted and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from benchlib import (
    JoinRefused,
    ServerProcess,
    cpu_seconds,
    join,
    machine_info,
    parse_address,
    raise_nofile_limit,
    rss_kib,
)

DEFAULT_SERVER_FLAGS = "--max-per-ip 0 --max-clients 0"


def nofile_limit_of(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    except OSError:
        pass
    return None


class Idlers:
    """The open connections. After the handshake a connection's task only holds it open;
    one sweeper task reads (and discards) what arrives on all of them, without blocking:
    cheaper than thousands of tasks waking up for every join notice."""

    def __init__(self) -> None:
        self.joined = 0
        self.closed_by_server = 0
        self.refused: Counter[str] = Counter()  # error code (or "other") -> count
        self.first_refusal: str | None = None
        self.connect_errors: Counter[str] = Counter()
        self._raw: dict[int, socket.socket] = {}  # client number -> duplicate of its socket

    @property
    def connected(self) -> int:
        return len(self._raw)

    async def hold(
        self, address, i: int, name: str, room: str, *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError as exc:
            self.connect_errors[f"{type(exc).__name__} errno {exc.errno}"] += 1
            task_status.started()
            return
        try:
            try:
                await join(stream, name, room)
            except JoinRefused as exc:
                self.refused[str(exc.code) if exc.code is not None else "other"] += 1
                if self.first_refusal is None:
                    self.first_refusal = exc.line
                task_status.started()
                return
            except (trio.BrokenResourceError, OSError) as exc:
                self.connect_errors[type(exc).__name__] += 1
                task_status.started()
                return
            self.joined += 1
            # Shares the open file (non-blocking) with trio's socket, which trio closes.
            raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
            self._raw[i] = raw
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._raw.pop(i, None)
                raw.close()
        finally:
            await trio.aclose_forcefully(stream)

    async def sweep(self, interval: float) -> None:
        """Read and discard whatever arrived on every connection, every ``interval`` s."""
        while True:
            for n, (i, raw) in enumerate(list(self._raw.items())):
                try:
                    while data := raw.recv(65536):
                        if len(data) < 65536:
                            break
                    else:  # end of file: the server closed it
                        self.closed_by_server += 1
                        del self._raw[i]
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_by_server += 1
                    del self._raw[i]
                if n % 256 == 255:
                    await trio.lowlevel.checkpoint()
            await trio.sleep(interval)


async def run_idle(args: argparse.Namespace, address, pid: int | None) -> dict[str, Any]:
    def rss() -> int | None:
        return rss_kib(pid) if pid else None

    r: dict[str, Any] = {}
    idlers = Idlers()
    await trio.sleep(args.settle)
    r["rss_baseline_kib"] = rss()
    limiter = trio.CapacityLimiter(args.parallel)
    t0 = time.perf_counter()
    connect_cpu0 = cpu_seconds(pid) if pid else None
    async with trio.open_nursery() as holders:
        holders.start_soon(idlers.sweep, args.sweep_interval)

        async def open_one(i: int) -> None:
            async with limiter:
                name = f"{args.name_prefix}{i}"
                await holders.start(idlers.hold, address, i, name, f"idle{i % args.R}")

        for start in range(0, args.N, args.batch):
            async with trio.open_nursery() as batch:
                for i in range(start, min(start + args.batch, args.N)):
                    batch.start_soon(open_one, i)
        r["connect_s"] = time.perf_counter() - t0
        connect_cpu1 = cpu_seconds(pid) if pid else None
        r["connect_server_cpu_s"] = (
            None if connect_cpu0 is None or connect_cpu1 is None else connect_cpu1 - connect_cpu0
        )
        r["connected"] = idlers.connected

        await trio.sleep(args.settle)  # let the join notices drain
        r["rss_connected_kib"] = rss()
        cpu0 = cpu_seconds(pid) if pid else None
        await trio.sleep(args.idle_seconds)
        cpu1 = cpu_seconds(pid) if pid else None
        r["rss_idle_end_kib"] = rss()
        r["server_idle_cpu_pct"] = (
            None if cpu0 is None or cpu1 is None else 100 * (cpu1 - cpu0) / args.idle_seconds
        )
        r["still_connected"] = idlers.connected
        holders.cancel_scope.cancel()

    await trio.sleep(args.settle)
    r["rss_after_disconnect_kib"] = rss()
    r["refused"] = dict(idlers.refused)
    r["first_refusal"] = idlers.first_refusal
    r["connect_errors"] = dict(idlers.connect_errors)
    r["closed_by_server"] = idlers.closed_by_server
    base, full = r["rss_baseline_kib"], r["rss_connected_kib"]
    r["rss_per_connection_kib"] = (
        (full - base) / r["connected"] if base is not None and full and r["connected"] else None
    )
    return r


def _kib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} KiB ({v / 1024:,.1f} MiB)"


def report_text(config: dict[str, Any], r: dict[str, Any]) -> str:
    per = r["rss_per_connection_kib"]
    out = [
        "machat idle connections",
        f"  N={config['N']} connections, R={config['R']} rooms, batches of {config['batch']}",
        f"  server: {config['server']}",
        f"  server RLIMIT_NOFILE (soft/hard): {config['server_nofile']}; ours {config['nofile']}",
        f"  python {config['machine']['python']}, {config['machine']['cores']} cores",
        "",
        f"  connected            {r['connected']} of {config['N']} in {r['connect_s']:.2f} s"
        + (
            ""
            if r["connect_server_cpu_s"] is None
            else f" (server CPU {r['connect_server_cpu_s']:.2f} s)"
        ),
        f"  RSS baseline         {_kib(r['rss_baseline_kib'])}",
        f"  RSS all connected    {_kib(r['rss_connected_kib'])}",
        "  RSS per connection   "
        + ("n/a" if per is None else f"{per:.1f} KiB ({per * 1024:,.0f} bytes)"),
        f"  RSS after idling     {_kib(r['rss_idle_end_kib'])}"
        f" (server CPU while idle: "
        + (
            "n/a"
            if r["server_idle_cpu_pct"] is None
            else f"{r['server_idle_cpu_pct']:.1f}% of a core"
        )
        + ")",
        f"  RSS after disconnect {_kib(r['rss_after_disconnect_kib'])}",
    ]
    if r["refused"]:
        total = sum(r["refused"].values())
        full = r["refused"].get("109", 0)
        out.append(f"  REFUSED              {total} handshakes: {r['refused']}")
        out.append(f"    first: {r['first_refusal']}")
        if full:
            out.append(
                f"    {full} refused with ERROR 109 (server full): a connection cap was hit;"
                " lift it with --server-flags '--max-per-ip 0 --max-clients 0'"
            )
    if r["connect_errors"]:
        out.append(f"  CONNECT ERRORS       {r['connect_errors']}")
    if r["closed_by_server"]:
        out.append(f"  closed by the server while idle: {r['closed_by_server']}")
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-N", type=int, default=5000, help="connections (default 5000)")
    p.add_argument("-R", type=int, default=50, help="rooms (default 50)")
    p.add_argument("--batch", type=int, default=500, help="connections per batch (default 500)")
    p.add_argument(
        "--parallel", type=int, default=64, help="handshakes in progress at once (default 64)"
    )
    p.add_argument(
        "--settle", type=float, default=1.0, help="seconds to wait before each RSS reading"
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=2.0,
        help="seconds to measure the server's CPU with everyone idle (default 2)",
    )
    p.add_argument(
        "--sweep-interval",
        type=float,
        default=0.05,
        help="seconds between reads of all connections (default 0.05)",
    )
    p.add_argument("--connect", metavar="HOST:PORT", help="use a running server")
    p.add_argument("--server-pid", type=int, help="with --connect: the server's pid")
    p.add_argument(
        "--server-flags",
        default=DEFAULT_SERVER_FLAGS,
        help=f"extra flags for the server (default {DEFAULT_SERVER_FLAGS!r})",
    )
    p.add_argument("--server-module", default="machat.cmd.chatserver")
    p.add_argument("--name-prefix", default="idle", help="prefix of the clients' names")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    soft, _ = raise_nofile_limit()
    if soft < args.N + 64:
        raise SystemExit(f"idle: RLIMIT_NOFILE {soft} is too low for {args.N} connections")
    config: dict[str, Any] = {
        "N": args.N,
        "R": args.R,
        "batch": args.batch,
        "nofile": soft,
        "machine": machine_info(),
    }
    if args.connect:
        pid = args.server_pid
        config["server"] = f"running at {args.connect}" + (f" (pid {pid})" if pid else "")
        config["server_nofile"] = nofile_limit_of(pid) if pid else None
        result = trio.run(run_idle, args, parse_address(args.connect), pid)
    else:
        flags = shlex.split(args.server_flags)
        with ServerProcess(flags, module=args.server_module) as server:
            try:
                server.wait_ready()
            except RuntimeError as exc:
                raise SystemExit(f"idle: {exc}") from None
            config["server"] = server.command
            config["server_nofile"] = nofile_limit_of(server.pid)
            result = trio.run(run_idle, args, server.address, server.pid)
    if args.json:
        print(json.dumps({"config": config, "result": result}))
    else:
        print(report_text(config, result))
    return {"config": config, "result": result}


if __name__ == "__main__":
    main()
