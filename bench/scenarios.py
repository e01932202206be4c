"""The scenarios of the benchmark table (issue 8), in full and in a short smoke version.

Each scenario is one loadgen-c command; `Scenario.loadgen_c_args` spells it. The targets a
scenario runs against are named here, the servers themselves live in ``targets.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

BURST_TARGETS = frozenset({"machat", "machat+db", "redis", "inspircd", "ngircd"})
PACED_TARGETS = frozenset({"machat", "machat+db", "inspircd"})
SWEEP_TARGETS = frozenset({"machat", "redis", "inspircd", "ngircd"})
MACHAT_TARGETS = frozenset({"machat", "machat+db"})

#: Scenario names ``--only`` accepts, in the order they run within a repetition.
NAMES = ("burst100", "burst500", "rooms10", "rooms40", "bigroom", "idle", "sizes", "order")
DEFAULT_SIZES = (10, 50, 100, 250, 500)
QUICK_SIZES = (10, 50, 100)


@attrs.frozen
class Scenario:
    """One row group of the table: a load, and the targets it is measured on."""

    name: str
    title: str
    #: loadgen-c's scenario: "fanout", "rooms", "connections"; "order" is bench/loadgen.py.
    kind: str
    targets: frozenset[str]
    C: int = 0  # fanout: receivers (order: too)
    S: int = 0  # fanout: senders
    M: int = 0  # messages per sender
    rate: float = 0.0  # messages/s per sender, 0: closed loop (window 64)
    R: int = 0  # rooms: rooms
    k: int = 0  # rooms: members per room, each a sender
    K: int = 0  # connections: idle clients
    hold: float = 0.0  # connections: seconds held
    waves: int = 1  # connections: waves against the same server process
    duration: float = 0.0  # order: seconds measured by bench/loadgen.py
    connect_concurrency: int | None = None
    #: Part of the room-size sweep plotted against C.
    sweep: bool = False

    @property
    def room_size(self) -> int | None:
        return self.C + self.S if self.kind == "fanout" else None

    @property
    def paced(self) -> bool:
        return self.rate > 0

    def loadgen_c_args(self) -> list[str]:
        """The scenario part of the loadgen-c command (after the global options)."""
        rate = ["--rate", f"{self.rate:g}"] if self.rate else []
        if self.kind == "fanout":
            return ["fanout", "-C", str(self.C), "-S", str(self.S), "-M", str(self.M), *rate]
        if self.kind == "rooms":
            return ["rooms", "-R", str(self.R), "-k", str(self.k), "-M", str(self.M), *rate]
        if self.kind == "connections":
            return ["connections", "-K", str(self.K), "--hold", f"{self.hold:g}"]
        raise ValueError(f"{self.name}: loadgen-c has no {self.kind!r} scenario")

    def describe(self) -> str:
        if self.kind == "order":
            return (
                f"bench/loadgen.py -C {self.C} -S {self.S} --verify -1 --duration {self.duration:g}"
            )
        cc = (
            f"--connect-concurrency {self.connect_concurrency} " if self.connect_concurrency else ""
        )
        waves = f" (x{self.waves}, same server)" if self.waves > 1 else ""
        return cc + " ".join(self.loadgen_c_args()) + waves


def _fanout(name: str, title: str, targets: frozenset[str], C: int, M: int, **kw) -> Scenario:
    return Scenario(name, title, "fanout", targets, C=C, S=2, M=M, **kw)


def scenarios(quick: bool = False, sizes: Sequence[int] | None = None) -> list[Scenario]:
    """Every scenario, in `NAMES` order; ``sizes`` expands the sweep into one per C."""
    q = quick
    burst_m = 200 if q else 3000
    out = [
        _fanout("burst100", "burst, one room", BURST_TARGETS, 100, burst_m),
        _fanout("burst500", "burst, one room", BURST_TARGETS, 500, burst_m),
    ]
    rooms = dict(R=10 if q else 100, k=10, connect_concurrency=64)
    out += [
        Scenario(
            "rooms10",
            "many rooms, paced",
            "rooms",
            PACED_TARGETS,
            M=10 if q else 150,
            rate=10,
            **rooms,
        ),
        Scenario(
            "rooms40",
            "many rooms, paced",
            "rooms",
            PACED_TARGETS,
            M=40 if q else 150,
            rate=40,
            **rooms,
        ),
        _fanout(
            "bigroom",
            "one big room, paced",
            PACED_TARGETS,
            50 if q else 500,
            100 if q else 2000,
            rate=200,
        ),
        Scenario(
            "idle",
            "idle connections",
            "connections",
            PACED_TARGETS,
            K=200 if q else 5000,
            hold=0.5 if q else 3,
            waves=2,
        ),
    ]
    for c in sizes or (QUICK_SIZES if q else DEFAULT_SIZES):
        out.append(_fanout(f"size{c}", "room-size sweep", SWEEP_TARGETS, c, burst_m, sweep=True))
    out.append(
        Scenario(
            "order",
            "per-sender order, every line parsed",
            "order",
            MACHAT_TARGETS,
            C=10 if q else 100,
            S=2,
            duration=0.5 if q else 2.0,
        )
    )
    return out


def select(all_scenarios: Sequence[Scenario], only: Sequence[str] | None) -> list[Scenario]:
    """The scenarios named in ``only`` ("sizes" is the whole sweep); all if None.

    A sweep size equal to a selected burst scenario is left out: the burst rows are the
    same command, and the plot uses them.
    """
    wanted = set(only) if only else set(NAMES)
    unknown = wanted - set(NAMES) - {s.name for s in all_scenarios}
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {NAMES}")
    chosen = [s for s in all_scenarios if s.name in wanted or (s.sweep and "sizes" in wanted)]
    burst = {(s.C, s.M) for s in chosen if s.name.startswith("burst")}
    return [s for s in chosen if not (s.sweep and s.name not in wanted and (s.C, s.M) in burst)]
