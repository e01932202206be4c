"""Benchmark a machat cluster: one room over 1, 2 and 3 nodes, and many rooms over them.

    python bench/cluster.py [--loadgen PATH] [--quick] [--repeat N] [--messages M]
                            [--window W[,W...]] [--pin auto|off|S:G] [--json OUT]

Every configuration starts a fresh ``redis-server`` (loopback TCP, no persistence)
and N nodes (``--redis``), drives them with loadgen-c (``--ports P1,P2,...``, clients
spread round-robin; ``--server-pid`` lists every node *and* Redis, so each one's CPU
is reported), and stops everything.  The same load against one node without
``--redis`` is the baseline for the target: in cluster mode a node should spend at
most 1.5x its single-node CPU per delivery.

Figures per configuration: deliveries/s, p50/p99 latency, CPU per delivery of each
node and of all nodes, Redis's CPU per delivery and per room message (one message
said in a room, whatever its number of recipients).  This machine has 2 cores shared
by nodes, Redis and the load generator: it measures cost, not capacity.

Full load runs once for each ``--window`` (what loadgen-c keeps in flight): at its
own 64 a plain node serving 150 members delivered 19.2 M a second, at 512 33.7 M
(336ab95, pinned, medians of 3), so the first measures passes the generator keeps
small and the second a node that is saturated.

Placement (``--pin``, as in ``bench/run.py``): by default the nodes -- plain or in the
cluster -- run on the first CPU, and Redis and loadgen-c on the others.  The nodes'
CPU is what the target is about; left to the scheduler, they were moved about and
shared a core with Redis and the generator, and a cluster node's CPU per delivery
went up by about a quarter (and swung three times as much) while a plain node's did
not move.

Without ``--loadgen``, loadgen-c is built from ``../shared/loadgen-c`` (as
``bench/run.py`` does); if it cannot be built, the script says why and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import sleeps
from generators import LOADGEN_C_SRC, build_loadgen_c
from targets import Placement

REPO = Path(__file__).resolve().parent.parent
NODE_FLAGS = ("--rate", "0", "--max-per-ip", "0", "--max-clients", "0", "--stats-interval", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited:\n{path.read_text()}")
        if path.exists() and re.search(pattern, path.read_text()):
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {pattern!r} in {path}")


class Cluster:
    """Redis (unless ``nodes`` is 0: one plain node) and the nodes, in a work dir."""

    def __init__(self, nodes: int, workdir: Path, placement: Placement) -> None:
        self.count = nodes
        self.dir = workdir
        self.placement = placement
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.node_pids: list[int] = []
        self.redis_pid: int | None = None

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        placement = self.placement
        flags: list[str] = []
        if self.count:
            port = free_port()
            log = self.dir / "redis.log"
            redis = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--logfile", str(log), "--dir", str(self.dir)],
                stdout=subprocess.DEVNULL,
                preexec_fn=placement.preexec(placement.generator),
            )  # fmt: skip
            self.procs.append(redis)
            self.redis_pid = redis.pid
            wait_for(log, "Ready to accept connections", redis)
            flags = ["--redis", f"redis://127.0.0.1:{port}/0"]
        for i in range(max(self.count, 1)):
            port = free_port()
            log = self.dir / f"node{i}.log"
            args = [sys.executable, "-m", "machat.cmd.chatserver", "-a", f"127.0.0.1:{port}"]
            args += [*NODE_FLAGS, *flags]
            if self.count:
                args += ["--node", f"n{i}"]
            with log.open("wb") as out:
                node = subprocess.Popen(
                    args,
                    cwd=REPO,
                    stderr=out,
                    stdout=subprocess.DEVNULL,
                    preexec_fn=placement.preexec(placement.server),
                )
            self.procs.append(node)
            wait_for(log, "joined through Redis" if self.count else "listening on", node)
            self.ports.append(port)
            self.node_pids.append(node.pid)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(loadgen: str, nodes: int, scenario: list[str], workdir: Path, placement: Placement) -> dict:
    """One run: a fresh Redis and nodes, loadgen-c, the figures."""
    with Cluster(nodes, workdir, placement) as cluster:
        pids = cluster.node_pids + ([cluster.redis_pid] if cluster.redis_pid else [])
        command = [
            loadgen,
            "--ports", ",".join(map(str, cluster.ports)),
            "--server-pid", ",".join(map(str, pids)),
            "--timeout", "120",
            *scenario,
        ]  # fmt: skip
        # (where they really run: the placement, as the system applied it)
        cpus = [sorted(os.sched_getaffinity(pid)) for pid in pids]
        slept = [sleeps(pid) or 0 for pid in cluster.node_pids]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=180,
            preexec_fn=placement.preexec(placement.generator),
        )
        slept = [(sleeps(pid) or 0) - s for pid, s in zip(cluster.node_pids, slept, strict=True)]
    if not result.stdout.strip():
        raise RuntimeError(f"loadgen-c failed: {result.stderr}")
    data = json.loads(result.stdout)
    r = data["run"]
    deliveries = r["received_deliveries"] or 1
    per_pid = {p["pid"]: p for p in r["cpu"]["per_pid"] if p}
    node_cpu = [per_pid[pid]["server_cpu_s"] for pid in cluster.node_pids if pid in per_pid]
    # What share of the deliveries each node made: its own members' (clients are dealt
    # round-robin; in fanout, senders and receivers each on their own).
    n = len(cluster.node_pids)
    params = data["params"]
    if scenario[0] == "fanout":
        members = [0] * n
        for role in ("receivers", "senders"):
            for j in range(params[role]):
                members[j % n] += 1
        shares = [m / sum(members) for m in members]
    else:
        shares = [1 / n] * n
    out = {
        "nodes": nodes or 1,
        "redis": bool(nodes),
        "scenario": " ".join(scenario),
        "placement": placement.describe(),
        "node_cpus": cpus[: len(cluster.node_pids)],
        "redis_cpus": cpus[len(cluster.node_pids) :],
        "completed": r["stopped"] == "complete",
        "loss_pct": r["loss_pct"],
        "deliveries_per_s": r["deliveries_per_s"],
        "messages": r["sent_msgs"],
        "p50_ms": r["latency_us"]["p50"] / 1000,
        "p99_ms": r["latency_us"]["p99"] / 1000,
        # CPU per delivery the node made itself (its members'), the target's measure
        "node_cpu_us_per_own_delivery": [
            c / (deliveries * share) * 1e6 for c, share in zip(node_cpu, shares, strict=True)
        ],
        "nodes_cpu_us_per_delivery": sum(node_cpu) / deliveries * 1e6,
        # (includes the clients' connecting: a few per client)
        "node_sleeps_per_1000_messages": [n / max(r["sent_msgs"], 1) * 1000 for n in slept],
    }
    if cluster.redis_pid and cluster.redis_pid in per_pid:
        redis_cpu = per_pid[cluster.redis_pid]["server_cpu_s"]
        out["redis_cpu_us_per_delivery"] = redis_cpu / deliveries * 1e6
        out["redis_cpu_us_per_message"] = redis_cpu / max(r["sent_msgs"], 1) * 1e6
        out["redis_cpu_pct"] = redis_cpu / max(r["cpu"]["wall_s"], 1e-9) * 100
    return out


def median_row(rows: list[dict]) -> dict:
    """One configuration's runs as one row: the median of every figure (of each node's,
    for the per-node lists), completed only if every run did, the worst loss."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if key == "completed":
            out[key] = all(r[key] for r in rows)
        elif key == "loss_pct":
            out[key] = max(r[key] for r in rows)
        elif isinstance(value, list):
            columns = zip(*(r[key] for r in rows), strict=True)
            out[key] = [statistics.median(column) for column in columns]
        elif isinstance(value, float):  # (the integers say what ran: the same in all)
            out[key] = statistics.median(r[key] for r in rows)
    return out


def show(row: dict) -> str:
    nodes = "/".join(f"{c:.3f}" for c in row["node_cpu_us_per_own_delivery"])
    slept = "/".join(f"{n:.0f}" for n in row["node_sleeps_per_1000_messages"])
    redis = (
        f"redis {row['redis_cpu_us_per_delivery']:.3f} us/delivery, "
        f"{row['redis_cpu_us_per_message']:.1f} us/message ({row['redis_cpu_pct']:.0f}%)"
        if "redis_cpu_us_per_delivery" in row
        else "no redis"
    )
    return (
        f"{row['scenario']:<40} nodes={row['nodes']} redis={row['redis']!s:<5} "
        f"{row['deliveries_per_s'] / 1e6:6.3f} M/s "
        f"p50/p99 {row['p50_ms']:.1f}/{row['p99_ms']:.1f} ms "
        f"loss {row['loss_pct']}% | CPU us per own delivery, each node {nodes}; all nodes "
        f"per delivery {row['nodes_cpu_us_per_delivery']:.3f}; sleeps per 1000 messages, "
        f"each node {slept} | {redis}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loadgen", help="a loadgen-c binary (default: build one)")
    parser.add_argument("--quick", action="store_true", help="a few seconds in all (smoke)")
    parser.add_argument("--json", metavar="OUT", help="append every result as a JSON line")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each configuration, interleaved; "
        "the summary and the target use medians (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--messages", type=int, metavar="M", help="messages per sender in the full-load "
        "runs (default 3000, as issue 8's bursts; longer runs swing less)",
    )  # fmt: skip
    parser.add_argument(
        "--window", default="64,512", metavar="W[,W...]", help="loadgen-c's delivery "
        "window (messages in flight) in the full-load runs, which run once for each "
        "(default 64,512: the generator's own, and one that saturates a plain node)",
    )  # fmt: skip
    parser.add_argument(
        "--pin",
        default="auto",
        help="CPU placement: auto (the nodes on the first CPU, Redis and the generator on"
        " the others, when there are two or more), off, or S:G such as 0:1 (default auto)",
    )
    args = parser.parse_args()
    try:
        placement = Placement.parse(args.pin)
        windows = [int(w) for w in args.window.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    quick = args.quick
    c, m, pm = (60, "200", "200") if quick else (150, "3000", "2000")
    if args.messages:
        m = str(args.messages)

    def one_room(receivers: int, load: tuple[str, ...]) -> list[str]:
        paced = load[0] == "--rate"
        return ["fanout", "-C", str(receivers), "-S", "3", "-M", pm if paced else m, *load]

    def rooms(k: int) -> list[str]:
        count, m_rooms = ("30", "30") if quick else ("100", "150")
        return ["rooms", "-R", count, "-k", str(k), "-M", m_rooms, "--rate", "10"]

    # (nodes, scenario, baseline): nodes 0 is one node without --redis.  A cluster run's
    # baseline is one plain node with as many receivers as each cluster node has (and
    # the same three senders): the same messages, the same fan-out per message.
    # Full load at each window (a plain node's passes, and so its cost per delivery,
    # grow with what the generator keeps in flight), then paced.
    plan: list[tuple[int, list[str], list[str] | None]] = []
    loads = [("--window", str(w)) for w in windows] + ([] if quick else [("--rate", "1000")])
    for load in loads:
        plan.append((0, one_room(c, load), None))
        for n in (1, 2, 3):
            plan.append((0, one_room(c // n, load), None) if n > 1 else (0, [], None))
            plan.append((n, one_room(c, load), one_room(c // n, load)))
    plan = [p for p in plan if p[1]]
    # Many rooms of 6 over 3 nodes: each node has 2 members of every room, so its
    # baseline is one node with rooms of 2 (the same fan-out per message).
    plan += [(0, rooms(6), None), (0, rooms(2), None), (3, rooms(6), rooms(2))]
    runs: list[list[dict]] = [[] for _ in plan]
    with tempfile.TemporaryDirectory(prefix="machat-cluster-bench-") as tmp:
        loadgen = args.loadgen
        if loadgen is None:
            binary, how = build_loadgen_c(LOADGEN_C_SRC, Path(tmp))
            if binary is None:
                hint = f"make -C {LOADGEN_C_SRC} OUT=/tmp/loadgen-c"
                print(f"cannot build loadgen-c ({how}): {hint}, then --loadgen", file=sys.stderr)
                return 2
            loadgen = str(binary)
            print(f"loadgen-c: {how}", flush=True)
        print(f"placement: {placement.describe()}; Redis on the generator's CPUs", flush=True)
        for repetition in range(max(args.repeat, 1)):
            for i, (nodes, scenario, _) in enumerate(plan):
                workdir = Path(tmp) / f"run{repetition}-{i}"
                workdir.mkdir()
                row = run(loadgen, nodes, scenario, workdir, placement)
                runs[i].append(row)
                print(show(row), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [median_row(r) for r in runs]
    if args.repeat > 1:
        print(f"\nmedians of {args.repeat}:")
        for row in rows:
            print(show(row))
    base = {r["scenario"]: r for r in rows if not r["redis"]}
    print("\ntarget: a cluster node's CPU per delivery it makes <= 1.5x a single node's")
    for (nodes, _, baseline), row in zip(plan, rows, strict=True):
        if baseline is None or " ".join(baseline) not in base:
            continue
        single = base[" ".join(baseline)]["nodes_cpu_us_per_delivery"]
        worst = max(row["node_cpu_us_per_own_delivery"])
        row["ratio_to_single_node"] = worst / single
        print(
            f"{row['scenario']:<40} nodes={nodes}: worst node {worst:.3f} us/delivery = "
            f"{worst / single:.2f}x one node serving as many members ({single:.3f}, "
            f"{' '.join(baseline)})"
        )
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"summary": rows}) + "\n")
    return 0 if all(r["completed"] and r["loss_pct"] == 0 for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
