"""What a benchmark run prints and draws: medians over repetitions, the tables, the
issue's targets, and the plot (matplotlib, the ``bench`` extra, imported only here)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generators import Record
from scenarios import Scenario

NUMERIC = (
    "deliveries_per_s",
    "offered_per_s",
    "server_cpu_us",
    "server_cpu_pct",
    "loadgen_cpu_us",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "elapsed_s",
    "connections",
    "kib_per_conn",
    "rss_start_kib",
    "rss_wave1_kib",
    "rss_between_kib",
    "rss_wave2_kib",
    "rss_growth_pct",
    "peak_growth_pct",
)


def summarise(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per (scenario, target), in the order first run: medians of every figure,
    the range of the server's CPU per delivery, and the worst loss and order seen."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.scenario, r.target), []).append(r)
    out = []
    for (scenario, target), runs in groups.items():
        s: dict[str, Any] = {"scenario": scenario, "target": target, "runs": len(runs)}
        for key in NUMERIC:
            values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
            s[key] = statistics.median(values) if values else None
            if key == "server_cpu_us" and values:
                s["server_cpu_us_range"] = (min(values), max(values))
        s["room_size"] = runs[0].room_size
        s["generator"] = runs[0].generator
        s["failed_runs"] = sum(not r.ok for r in runs)
        lost = [r.lost for r in runs if r.lost is not None]
        s["lost_max"] = max(lost) if lost else None
        reordered = [r.reordered for r in runs if r.reordered is not None]
        s["reordered_max"] = max(reordered) if reordered else None
        s["problems"] = sorted({p for r in runs for p in r.problems})
        out.append(s)
    return out


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v / 1e3:.1f} k"


def _loss(s: dict[str, Any]) -> str:
    if s["lost_max"] is None:
        return "-"
    return "0" if s["lost_max"] == 0 else f"LOSS {s['lost_max']}"


def _order(s: dict[str, Any]) -> str:
    if s["reordered_max"] is None:
        return "n/c"
    return "exact" if s["reordered_max"] == 0 else f"BROKEN {s['reordered_max']}"


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
) -> list[str]:
    if markdown:
        cells = [header, ["---"] * len(header), *rows]
        return ["| " + " | ".join(c.strip() for c in r) + " |" for r in cells]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in pairs).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def tables(
    summary: Sequence[dict[str, Any]], scenarios: Sequence[Scenario], markdown: bool = False
) -> list[str]:
    """The chat table and the idle table, aligned text or Markdown."""
    by_name = {s.name: s for s in scenarios}
    chat_rows, idle_rows = [], []
    for s in summary:
        sc = by_name[s["scenario"]]
        flag = " !" if s["failed_runs"] else ""
        if sc.kind == "connections":
            idle_rows.append(
                [
                    s["scenario"] + flag,
                    s["target"],
                    str(s["runs"]),
                    _num(s["connections"], ".0f"),
                    _num(s["kib_per_conn"], ".1f"),
                    " / ".join(
                        _num(s[k] and s[k] / 1024, ".1f")
                        for k in (
                            "rss_start_kib",
                            "rss_wave1_kib",
                            "rss_between_kib",
                            "rss_wave2_kib",
                        )
                    ),
                    _num(s["rss_growth_pct"], "+.1f"),
                    _num(s["peak_growth_pct"], "+.1f"),
                    "0" if not s["problems"] else "PROBLEMS",
                ]
            )
            continue
        lo_hi = s.get("server_cpu_us_range")
        spread = f" ({lo_hi[0]:.2f}-{lo_hi[1]:.2f})" if lo_hi and s["runs"] > 1 else ""
        chat_rows.append(
            [
                s["scenario"] + flag,
                s["target"],
                str(s["runs"]),
                _rate(s["deliveries_per_s"]),
                _rate(s["offered_per_s"]) if s["offered_per_s"] else "max",
                _num(s["server_cpu_us"], ".3f") + spread,
                _num(s["server_cpu_pct"], ".0f"),
                _num(s["p50_ms"], ".1f"),
                _num(s["p99_ms"], ".1f"),
                _loss(s),
                _order(s),
            ]
        )
    out = []
    if chat_rows:
        out += _table(
            [
                "scenario",
                "target",
                "runs",
                "deliv/s",
                "offered",
                "server us/deliv (range)",
                "srv CPU%",
                "p50 ms",
                "p99 ms",
                "loss",
                "order",
            ],
            chat_rows,
            markdown,
        )
    if idle_rows:
        out += ([""] if out else []) + _table(
            [
                "scenario",
                "target",
                "runs",
                "conns",
                "KiB/conn",
                "RSS MiB: start / wave 1 / gone / wave 2",
                "wave 2 adds %",
                "wave 2 vs wave 1 %",
                "errors",
            ],
            idle_rows,
            markdown,
        )
    return out


def _get(summary: Sequence[dict[str, Any]], scenario: str, target: str) -> dict | None:
    for s in summary:
        if s["scenario"] == scenario and s["target"] == target:
            return s
    return None


def _db_figure(scenario: str) -> str:
    """The figure that ``--db`` is compared on: memory for idle, CPU for the rest."""
    return "kib_per_conn" if scenario == "idle" else "server_cpu_us"


def paired_db_ratios(records: Sequence[Any]) -> list[str]:
    """``--db`` against no ``--db`` run by run: per scenario, the median and range of
    the ratios of the two targets' runs in the same repetition (run a minute apart at
    most, where the medians of a sitting can come from different minutes)."""
    runs: dict[tuple[str, str, int], float] = {}
    for r in records:
        value = getattr(r, _db_figure(r.scenario))
        if r.ok and r.generator == "loadgen-c" and value:
            runs[r.scenario, r.target, r.repeat] = value
    out = []
    for scenario in dict.fromkeys(s for s, _, _ in runs):
        ratios = [
            runs[scenario, "machat+db", i] / runs[scenario, "machat", i]
            for s, t, i in runs
            if s == scenario and t == "machat" and (scenario, "machat+db", i) in runs
        ]
        if ratios:
            out.append(
                f"{scenario} {statistics.median(ratios):.2f} "
                f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs)"
            )
    return out


def checks(summary: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """The issue's targets against the medians: (what, measured, goal, verdict)."""
    out: list[tuple[str, str, str, str]] = []

    def add(what: str, value: float | None, goal: str, ok: bool | None, spec: str) -> None:
        verdict = "n/a" if value is None or ok is None else ("met" if ok else "NOT met")
        out.append((what, _num(value, spec), goal, verdict))

    for name in ("burst100", "burst500"):
        m, redis = _get(summary, name, "machat"), _get(summary, name, "redis")
        if m and m["server_cpu_us"] is not None:
            us = m["server_cpu_us"]
            add(f"{name} machat us/delivery", us, "<= 0.12", us <= 0.12, ".3f")
            if redis and redis["server_cpu_us"]:
                ratio = redis["server_cpu_us"] / us
                add(f"{name} Redis/machat CPU ratio", ratio, ">= 2.5", ratio >= 2.5, ".2f")
    m = _get(summary, "rooms10", "machat")
    if m and m["server_cpu_us"] is not None:
        add(
            "rooms10 machat us/delivery", m["server_cpu_us"], "<= 5", m["server_cpu_us"] <= 5, ".2f"
        )
        p99 = m["p99_ms"]
        add("rooms10 machat p99 ms", p99, "<= 100", None if p99 is None else p99 <= 100, ".1f")
    m = _get(summary, "rooms40", "machat")
    if m and m["deliveries_per_s"] and m["offered_per_s"]:
        share = m["deliveries_per_s"] / m["offered_per_s"]
        add("rooms40 machat delivered/offered", share, ">= 0.95 (keeps up)", share >= 0.95, ".2f")
    m = _get(summary, "rooms40", "machat+db")
    if m and m["deliveries_per_s"] and m["offered_per_s"]:
        share = m["deliveries_per_s"] / m["offered_per_s"]
        add(
            "rooms40 machat+db delivered/offered", share, ">= 0.95 (keeps up)", share >= 0.95, ".2f"
        )
    m = _get(summary, "bigroom", "machat")
    if m and m["server_cpu_us"] is not None:
        add(
            "bigroom machat us/delivery", m["server_cpu_us"], "<= 2", m["server_cpu_us"] <= 2, ".2f"
        )
    m = _get(summary, "idle", "machat")
    if m and m["kib_per_conn"] is not None:
        add("idle machat KiB/connection", m["kib_per_conn"], "<= 8", m["kib_per_conn"] <= 8, ".1f")
        g = m["rss_growth_pct"]
        add("idle machat RSS added by wave 2 %", g, "< 5", None if g is None else g < 5, "+.1f")
    for s in summary:
        if s["target"] != "machat+db" or s["generator"] != "loadgen-c":
            continue  # bench/loadgen.py's CPU figure has 10 ms ticks: too coarse for 10%
        base = _get(summary, s["scenario"], "machat")
        key = _db_figure(s["scenario"])
        if base and base.get(key) and s.get(key) is not None:
            ratio = s[key] / base[key]
            add(f"{s['scenario']} db/no-db {key}", ratio, "<= 1.10", ratio <= 1.10, ".2f")
    machat = [s for s in summary if s["target"].startswith("machat")]
    lossy = [f"{s['scenario']}/{s['target']}" for s in machat if s["lost_max"]]
    failed = [f"{s['scenario']}/{s['target']}" for s in machat if s["failed_runs"]]
    out.append(
        (
            "machat zero loss, every run",
            ", ".join(lossy) or "none lost",
            "0",
            "NOT met" if lossy else "met",
        )
    )
    ordered = [s for s in machat if s["reordered_max"] is not None]
    broken = [f"{s['scenario']}/{s['target']}" for s in ordered if s["reordered_max"]]
    out.append(
        (
            "machat per-sender order (order rows)",
            ", ".join(broken) or (f"exact in {len(ordered)} row(s)" if ordered else "no row"),
            "exact",
            "n/a" if not ordered else ("NOT met" if broken else "met"),
        )
    )
    if failed:
        out.append(("machat runs with problems", ", ".join(failed), "none", "NOT met"))
    return out


COLOURS = {
    "machat": "tab:blue",
    "machat+db": "tab:cyan",
    "redis": "tab:red",
    "inspircd": "tab:green",
    "ngircd": "tab:olive",
}


def _order_key(target: str) -> tuple[int, str]:
    names = list(COLOURS)
    return (names.index(target) if target in names else len(names), target)


def plot(
    summary: Sequence[dict[str, Any]], scenarios: Sequence[Scenario], path: Path, title: str
) -> None:
    """Deliveries/s and server CPU per delivery against room size, and idle memory."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "run.py: the plot needs matplotlib, the `bench` extra: pip install -e '.[bench]'"
            " (or pass --no-plot)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {s.name: s for s in scenarios}
    fanout = {s.name for s in scenarios if s.kind == "fanout" and not s.paced}
    series: dict[str, list[tuple[int, float | None, float | None]]] = {}
    for s in summary:
        if s["scenario"] in fanout and s["room_size"]:
            series.setdefault(s["target"], []).append(
                (by_name[s["scenario"]].C, s["deliveries_per_s"], s["server_cpu_us"])
            )
    idle = [s for s in summary if s["scenario"] == "idle" and s["kib_per_conn"] is not None]

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4.2))
    sizes = sorted({p[0] for points in series.values() for p in points})
    for target, points in sorted(series.items(), key=lambda kv: _order_key(kv[0])):
        points.sort()
        xs = [p[0] for p in points]
        style = {"marker": "o", "label": target, "color": COLOURS.get(target)}
        ax1.plot(xs, [p[1] and p[1] / 1e6 for p in points], **style)
        ax2.plot(xs, [p[2] for p in points], **style)
    for ax, label in ((ax1, "deliveries/s (millions)"), (ax2, "server CPU per delivery (us)")):
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("room size C (receivers; fanout -C C -S 2 -M N)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax2.set_ylim(bottom=0)
    ax1.set_title("burst fan-out throughput")
    ax2.set_title("server CPU per delivery")
    if idle:
        names = [s["target"] for s in idle]
        ax3.bar(
            names,
            [s["kib_per_conn"] for s in idle],
            color=[COLOURS.get(n, "tab:gray") for n in names],
        )
        for i, s in enumerate(idle):
            growth = s["rss_growth_pct"]
            note = f"{s['kib_per_conn']:.1f}" + (
                "" if growth is None else f"\nwave 2 adds {growth:+.1f}%"
            )
            ax3.annotate(note, (i, s["kib_per_conn"]), ha="center", va="bottom", fontsize=8)
        ax3.set_ylabel("RSS per idle connection (KiB)")
        conns = idle[0]["connections"]
        ax3.set_title(f"idle: connections -K {conns}")
        ax3.margins(y=0.25)
    else:
        ax3.text(0.5, 0.5, "idle scenario not run", ha="center", va="center")
        ax3.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
