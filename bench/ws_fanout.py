"""WebSocket fan-out beside TCP's, in the same run.

    python bench/ws_fanout.py -C 100 -S 2 --duration 5
    python bench/ws_fanout.py -C 100 -S 2 --duration 5 --json

For each transport in ``--transports`` (default: tcp, ws, mixed) a fresh server
(``--rate 0 --max-per-ip 0 --max-clients 0``) gets C receivers in one room, over TCP,
over WebSocket (``/mychat`` on the same port), or half and half; S senders over TCP
keep at most ``--window`` messages in flight each. After a warmup, the measured
window gives deliveries per second and the server's CPU per delivery (its utime +
stime over the deliveries all members received).

Receivers count lines (each server line, and each WebSocket text message, ends in
``\\n``; a message's frame header never is one, since the lines are longer than 10
bytes), so the generator stays cheaper than the server.  Nothing is verified here:
loss and order are bench/loadgen.py's job.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

import trio
from benchlib import ServerProcess, cpu_seconds, join, machine_info, raise_nofile_limit

FLAGS = ["--rate", "0", "--max-per-ip", "0", "--max-clients", "0", "--stats-interval", "0"]
ROOM = "bench"


class Count:
    def __init__(self) -> None:
        self.lines = 0


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + key + body


async def ws_join(stream: trio.abc.Stream, host: str, port: int, name: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /mychat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(
        request.encode() + _mask(json.dumps({"name": name, "room": ROOM}).encode())
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("closed during the upgrade")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return rest


async def receiver(stream: trio.abc.Stream, count: Count) -> None:
    while data := await stream.receive_some(1 << 18):
        count.lines += data.count(b"\n")


async def sender(
    stream: trio.abc.Stream, line: bytes, own: bytes, window: int, stop: trio.Event, count: Count
) -> None:
    """Keep at most ``window`` own messages unechoed (its echoes hold ``own``, "S0:x");
    every line it gets is a delivery."""
    room = trio.Semaphore(window)
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            while data := await stream.receive_some(1 << 18):
                count.lines += data.count(b"\n")
                for _ in range(min(data.count(own), window - room.value)):
                    room.release()

        nursery.start_soon(read)
        while not stop.is_set():
            await room.acquire()
            await stream.send_all(line)
        nursery.cancel_scope.cancel()


async def run_one(transport: str, receivers: int, senders: int, size: int, window: int,
                  warmup: float, duration: float) -> dict:  # fmt: skip
    with ServerProcess(FLAGS) as server:
        server.wait_ready()
        host, port = server.address
        count = Count()
        stop = trio.Event()
        streams = []
        async with trio.open_nursery() as nursery:
            for i in range(receivers):
                stream = await trio.open_tcp_stream(host, port)
                streams.append(stream)
                over_ws = transport == "ws" or (transport == "mixed" and i % 2)
                if over_ws:
                    await ws_join(stream, host, port, f"W{i}")
                else:
                    await join(stream, f"R{i}", ROOM)
                nursery.start_soon(receiver, stream, count)
            for s in range(senders):
                stream = await trio.open_tcp_stream(host, port)
                streams.append(stream)
                await join(stream, f"S{s}", ROOM)
                body = b"x" * max(1, size - len(f"S{s}:") - 1)
                own = f"S{s}:x".encode()
                nursery.start_soon(sender, stream, body + b"\n", own, window, stop, count)
            await trio.sleep(warmup)
            lines0, cpu0, t0 = count.lines, cpu_seconds(server.pid), time.perf_counter()
            await trio.sleep(duration)
            lines1, cpu1, t1 = count.lines, cpu_seconds(server.pid), time.perf_counter()
            stop.set()
            nursery.cancel_scope.cancel()
        for stream in streams:
            await trio.aclose_forcefully(stream)
    delivered = lines1 - lines0
    cpu = (cpu1 or 0.0) - (cpu0 or 0.0)
    return {
        "transport": transport,
        "receivers": receivers,
        "senders": senders,
        "deliveries_per_s": delivered / (t1 - t0),
        "server_cpu_s": cpu,
        "server_cpu_per_delivery_us": cpu / delivered * 1e6 if delivered else None,
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    results = []
    for transport in args.transports.split(","):
        result = await run_one(transport, args.receivers, args.senders, args.size, args.window,
                               args.warmup, args.duration)  # fmt: skip
        results.append(result)
        print(
            f"{transport:6} C={args.receivers} S={args.senders}: "
            f"{result['deliveries_per_s'] / 1e6:.2f} M deliveries/s, "
            f"{result['server_cpu_per_delivery_us']:.2f} us server CPU per delivery",
            file=sys.stderr,
        )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-C", "--receivers", type=int, default=100)
    p.add_argument("-S", "--senders", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="bytes per message line (default 64)")
    p.add_argument("--window", type=int, default=64, help="messages in flight per sender")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--transports", default="tcp,ws,mixed")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    raise_nofile_limit()
    results = trio.run(main_async, args)
    if args.json:
        print(json.dumps({"machine": machine_info(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
