"""Smoke test of bench/loadgen.py: a real server subprocess, a fraction of a second of load.

Loopback only, port chosen by the load generator; the whole run is bounded by the
subprocess timeout. It checks the load generator works end to end and that the server
loses and reorders nothing under a tiny load, not any performance figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------------------------------
# bench/run.py: the benchmark table's command, one tiny row against a real server

RUN = REPO / "bench" / "run.py"
LOADGEN_C_SRC = REPO.parent / "shared" / "loadgen-c"


def _run_table(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "burst100", "--targets", "machat"]
        + ["--repeat", "1", "--no-plot", "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(out.read_text()), proc.stdout


def _check_burst_record(results: dict, stdout: str, generator: str) -> None:
    (run,) = results["runs"]
    assert (run["scenario"], run["target"], run["generator"]) == ("burst100", "machat", generator)
    assert run["ok"] and run["problems"] == []
    assert run["delivered"] == run["expected"] > 0 and run["lost"] == 0
    assert run["deliveries_per_s"] > 0 and run["server_cpu_us"] > 0
    assert any(c.startswith("server: ") and "--max-per-ip 0" in c for c in run["commands"])
    (row,) = results["summary"]
    assert row["runs"] == 1 and row["lost_max"] == 0 and row["failed_runs"] == 0
    assert results["config"]["machine"]["cores"] >= 1
    line = next(x for x in stdout.splitlines() if x.startswith("burst100"))
    assert line.split()[:3] == ["burst100", "machat", "1"]


def test_run_py_default_generator(tmp_path: Path) -> None:
    """loadgen-c when it can be built here (gcc and ../shared/loadgen-c), else the fallback."""
    results, stdout = _run_table(tmp_path)
    buildable = shutil.which("gcc") and (LOADGEN_C_SRC / "Makefile").is_file()
    _check_burst_record(results, stdout, "loadgen-c" if buildable else "python")
    if buildable:
        (run,) = results["runs"]
        assert run["raw"][0]["run"]["stopped"] == "complete"
        assert run["loss_pct"] == 0.0 and run["reordered"] is None  # loadgen-c: no order check
    # The same tables again from the results file, without running anything.
    again = subprocess.run(
        [sys.executable, str(RUN), "--from-json", str(tmp_path / "results.json"), "--no-plot"]
        + ["--markdown", str(tmp_path / "table.md")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0, again.stderr
    row = next(x for x in stdout.splitlines() if x.startswith("burst100"))
    assert row in again.stdout.splitlines()
    assert "| burst100 | machat | 1 |" in (tmp_path / "table.md").read_text()


def test_run_py_python_fallback(tmp_path: Path) -> None:
    """The Python generator's JSON normalised into the same record, with order checked."""
    results, stdout = _run_table(tmp_path, "--generator", "python")
    _check_burst_record(results, stdout, "python")
    (run,) = results["runs"]
    assert run["reordered"] == 0
    assert run["commands"][-1].startswith("python bench/loadgen.py --connect")


def test_run_py_default_scenarios_are_the_issue_table(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import scenarios

    full = {s.name: s.describe() for s in scenarios.scenarios()}
    assert full["burst100"] == "fanout -C 100 -S 2 -M 3000"
    assert full["burst500"] == "fanout -C 500 -S 2 -M 3000"
    assert full["rooms10"] == "--connect-concurrency 64 rooms -R 100 -k 10 -M 150 --rate 10"
    assert full["rooms40"] == "--connect-concurrency 64 rooms -R 100 -k 10 -M 150 --rate 40"
    assert full["bigroom"] == "fanout -C 500 -S 2 -M 2000 --rate 200"
    assert full["idle"] == "connections -K 5000 --hold 3 (x2, same server)"
    chosen = [s.name for s in scenarios.select(scenarios.scenarios(), ["burst100", "sizes"])]
    assert chosen == ["burst100", "size10", "size50", "size250", "size500"]


def test_a_target_of_two_processes(tmp_path: Path, monkeypatch) -> None:
    """The hook for a cluster target: one `Running` over two machat processes. loadgen-c
    gets both ports and both pids; the Python generators refuse it."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import generators
    import scenarios
    import targets

    class TwoProcesses(targets.Target):
        name = "two"
        protocol = "machat"
        kinds = frozenset({"connections"})  # independent servers: no relaying between them

        @contextlib.contextmanager
        def start(self, workdir: Path, tag: str) -> Iterator[targets.Running]:
            first = targets.free_port()
            second = next(p for p in iter(targets.free_port, None) if p != first)
            specs = [targets.machat_process(first), targets.machat_process(second)]
            with targets.serve(specs, workdir, tag) as running:
                yield running

    target = TwoProcesses()
    scenario = scenarios.Scenario("idle", "idle", "connections", frozenset({"two"}), K=40, hold=0.2)
    record = generators.Record("idle", "two", 0, "loadgen-c")
    binary, note = generators.build_loadgen_c(LOADGEN_C_SRC, tmp_path)
    with target.start(tmp_path, "two") as running:
        assert len(set(running.ports)) == 2 and len(set(running.pids)) == 2
        if binary is None:
            with pytest.raises(generators.GeneratorError, match="one server process"):
                generators.PythonGenerator().run(scenario, target, running, record)
        else:
            generators.LoadgenC(binary).run(scenario, target, running, record)
    assert [(code, killed) for _, code, killed in running.exits] == [(0, False), (0, False)]
    if binary is not None:
        (raw,) = record.raw
        assert raw["ports"] == list(running.ports)
        assert record.problems == [] and record.connections == 40
        assert record.kib_per_conn is not None and record.kib_per_conn > 0
        per_pid = raw["server"]["after_hold"]["per_pid"]
        assert [p["pid"] for p in per_pid] == list(running.pids)
        assert all(p["fds"] >= 20 for p in per_pid)  # half the clients on each process


def test_medians_over_an_even_number_of_runs_print(monkeypatch) -> None:
    """Two repetitions give medians that are halves (200 and 201 connections: 200.5)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import generators
    import report
    import scenarios

    idle = next(s for s in scenarios.scenarios(quick=True) if s.name == "idle")
    runs = [
        generators.Record(
            "idle",
            "machat",
            i,
            "loadgen-c",
            ok=True,
            connections=200 + i,
            kib_per_conn=7.0 + i,
            rss_growth_pct=0.0,
            lost=None,
        )
        for i in range(2)
    ]
    (row,) = report.summarise(runs)
    assert (row["runs"], row["connections"], row["kib_per_conn"]) == (2, 200.5, 7.5)
    lines = report.tables([row], [idle])
    assert lines[2].split()[:5] == ["idle", "machat", "2", "200", "7.5"]


def test_db_ratios_run_by_run_pair_each_repetitions_runs(monkeypatch) -> None:
    """Each repetition's ``--db`` run is compared with that repetition's plain one (not
    with another minute's); a run that failed or another generator's is left out."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import generators
    import report

    def record(target: str, repeat: int, us: float, **kw: object) -> object:
        return generators.Record(
            "rooms10", target, repeat, kw.pop("generator", "loadgen-c"), ok=kw.pop("ok", True),
            server_cpu_us=us,
        )  # fmt: skip

    runs = [
        record("machat", 0, 4.0), record("machat+db", 0, 4.4),  # 1.10
        record("machat+db", 1, 3.0), record("machat", 1, 3.0),  # 1.00
        record("machat", 2, 2.0), record("machat+db", 2, 2.4),  # 1.20
        record("machat", 3, 1.0), record("machat+db", 3, 9.0, ok=False),
        record("machat", 4, 1.0, generator="python"), record("machat+db", 4, 9.0),
    ]  # fmt: skip
    assert report.paired_db_ratios(runs) == ["rooms10 1.10 (1.00-1.20, 3 pairs)"]
    assert report.paired_db_ratios(runs[:1]) == []


def test_placement_parses_and_pins_a_server(tmp_path: Path, monkeypatch) -> None:
    """``--pin``: auto puts the servers on the first CPU and the generator on the rest;
    a server started under a placement runs (with every thread it starts) on its CPUs."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import targets

    cpus = sorted(os.sched_getaffinity(0))
    auto = targets.Placement.parse("auto")
    if len(cpus) >= 2:
        assert auto == targets.Placement(frozenset(cpus[:1]), frozenset(cpus[1:]))
    else:
        assert auto == targets.Placement()
    assert targets.Placement.parse("off") == targets.Placement()
    first = cpus[0]
    assert targets.Placement.parse(f"{first}:") == targets.Placement(frozenset({first}), None)
    for bad in ("0", "x:1", "0:y"):
        with pytest.raises(ValueError, match="expected auto, off or S:G"):
            targets.Placement.parse(bad)

    monkeypatch.setattr(targets, "PLACEMENT", targets.Placement(frozenset({first}), None))
    port = targets.free_port()
    with targets.serve([targets.machat_process(port)], tmp_path, "pinned") as running:
        (pid,) = running.pids
        assert os.sched_getaffinity(pid) == {first}
    assert [code for _, code, _ in running.exits] == [0]


# ---------------------------------------------------------------------------------------
# bench/cluster.py: the cluster benchmark, a few seconds of it

CLUSTER = REPO / "bench" / "cluster.py"


@pytest.mark.cluster
def test_cluster_py_quick(tmp_path: Path) -> None:
    """One plain node, then 1-3 nodes on a fresh Redis, one room and many rooms:
    every run completes with nothing lost, with each node's and Redis's CPU, and
    the full-load runs with the window asked for.  Where
    loadgen-c cannot be built, the script says so and exits 2."""
    out = tmp_path / "rows.jsonl"
    proc = subprocess.run(
        [sys.executable, str(CLUSTER), "--quick", "--window", "64,100", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tools = shutil.which("gcc") and shutil.which("make")
    if not (tools and (LOADGEN_C_SRC / "Makefile").is_file()):
        assert proc.returncode == 2 and "cannot build loadgen-c" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr + proc.stdout
    *rows, last = [json.loads(line) for line in out.read_text().splitlines()]
    summary = last["summary"]  # the same rows, the cluster ones with their ratio
    ratios = [r.pop("ratio_to_single_node") for r in summary if "ratio_to_single_node" in r]
    assert summary == rows and len(ratios) == 7 and all(x > 0 for x in ratios)
    one_room = [(1, False), (1, True), (1, False), (2, True), (1, False), (3, True)]
    assert [(r["nodes"], r["redis"]) for r in rows] == [
        *one_room, *one_room, (1, False), (1, False), (3, True),
    ]  # fmt: skip
    # (full load once for each window asked for, in turn)
    assert [r["scenario"].split("--window ")[-1] for r in rows[:12]] == ["64"] * 6 + ["100"] * 6
    for row in rows:
        assert row["completed"] and row["loss_pct"] == 0, row
        assert len(row["node_cpu_us_per_own_delivery"]) == row["nodes"]
        assert all(cpu > 0 for cpu in row["node_cpu_us_per_own_delivery"])
        assert len(row["node_sleeps_per_1000_messages"]) == row["nodes"]
        assert all(n > 0 for n in row["node_sleeps_per_1000_messages"])  # (it waits at times)
        assert (row.get("redis_cpu_us_per_message", 0) > 0) == row["redis"]
        assert ("--window" in row["scenario"]) == row["scenario"].startswith("fanout")
    assert sum("x one node serving as many members" in x for x in proc.stdout.splitlines()) == 7
    # Placed by default as `--pin auto`: the nodes on the first CPU, Redis on the others.
    cpus = sorted(os.sched_getaffinity(0))
    nodes_on, redis_on = (cpus[:1], cpus[1:]) if len(cpus) > 1 else (cpus, cpus)
    for row in rows:
        assert row["node_cpus"] == [nodes_on] * row["nodes"], row
        assert row["redis_cpus"] == ([redis_on] if row["redis"] else []), row
