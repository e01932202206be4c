"""Run the benchmark table of issue 8 against this checkout, with anchors when installed.

    python bench/run.py                          # the whole table, medians of 3
    python bench/run.py --quick                  # a short smoke run of every scenario
    python bench/run.py --only burst100,idle --targets machat,redis --repeat 5

For every run it starts a fresh server on a free loopback port (machat from this
checkout, Redis / InspIRCd / ngircd when installed), drives it with loadgen-c (built from
``../shared/loadgen-c``; the Python generators in bench/ if it cannot be built), stops
it with SIGTERM. Repetitions are interleaved: every scenario and target once, then again.
Prints the configuration, a table of medians and the issue's targets; writes every run to
``--out`` (JSON) and a plot to ``--plot`` (PNG). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import report
import scenarios as sc
import targets as targets_mod
from benchlib import raise_nofile_limit
from generators import (
    BENCH,
    LOADGEN_C_SRC,
    GeneratorError,
    LoadgenC,
    PythonGenerator,
    Record,
    build_loadgen_c,
)
from targets import MACHAT_FLAGS, REPO_ROOT, Target, TargetUnavailable, all_targets


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine() -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--untracked-files=no") not in ("", "?")
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
        "commit_subject": _git("log", "-1", "--format=%s"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_at_start": os.getloadavg(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"scenarios: {', '.join(sc.NAMES)}\ntargets: "
        + ", ".join(t.name for t in all_targets()),
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="runs of each row, interleaved; the table shows medians (default 3, 1 with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short smoke version of every scenario (figures not comparable)",
    )
    p.add_argument("--only", help="comma-separated scenarios to run (default all)")
    p.add_argument("--targets", help="comma-separated targets (default every one installed)")
    p.add_argument("--sizes", help="room sizes (C) of the sweep plotted, e.g. 10,50,100,250,500")
    p.add_argument("--loadgen", type=Path, help="a loadgen-c binary to use instead of building it")
    p.add_argument(
        "--loadgen-src",
        type=Path,
        default=LOADGEN_C_SRC,
        help=f"where loadgen-c's source is (default {LOADGEN_C_SRC})",
    )
    p.add_argument(
        "--generator",
        choices=["auto", "c", "python"],
        default="auto",
        help="auto: loadgen-c if it builds, else bench/loadgen.py and idle.py;"
        " c: fail if loadgen-c is not available; python: the Python generators",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=BENCH / "results.json",
        help="JSON results: configuration, every run, medians (default bench/results.json,"
        " ignored by git)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=BENCH / "results.png",
        help="PNG plot (default bench/results.png, ignored by git)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS",
        help="run nothing: print the tables and draw the plot from a results file",
    )
    p.add_argument(
        "--markdown", type=Path, help="also write the tables and targets as Markdown here"
    )
    p.add_argument(
        "--pin",
        default="auto",
        help="CPU placement: auto (servers on the first CPU, the generator on the others,"
        " when there are two or more), off, or S:G such as 0:1 (default auto)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the servers' logs, configs and databases here (default: a"
        " temporary directory, removed at the end)",
    )
    return p


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def choose_targets(names: list[str] | None) -> tuple[list[Target], dict[str, str]]:
    """The targets to run (all installed ones by default) and why the others are not."""
    known = {t.name: t for t in all_targets()}
    if names:
        unknown = set(names) - set(known)
        if unknown:
            raise SystemExit(f"run.py: unknown target(s) {sorted(unknown)}; known: {list(known)}")
    chosen, skipped = [], {}
    for name, target in known.items():
        if names and name not in names:
            continue
        try:
            target.check()
        except TargetUnavailable as exc:
            skipped[name] = str(exc)
            if names:  # asked for by name: say so loudly, run the rest
                print(f"run.py: {name}: {exc}", file=sys.stderr)
            continue
        chosen.append(target)
    return chosen, skipped


def run_one(
    scenario: sc.Scenario,
    target: Target,
    generator: LoadgenC | PythonGenerator,
    repeat: int,
    workdir: Path,
    index: int,
) -> Record:
    rec = Record(scenario.name, target.name, repeat, generator.name, room_size=scenario.room_size)
    tag = f"{index:03d}-{scenario.name}-{target.name.replace('+', '-')}"
    try:
        with target.start(workdir, tag) as running:
            rec.commands.extend(f"server: {c}" for c in running.commands)
            try:
                generator.run(scenario, target, running, rec)
            except GeneratorError as exc:
                rec.problems.append(str(exc))
                rec.problems.append(running.log_tail(5))
        for command, code, killed in running.exits:
            if killed:
                rec.problems.append(f"server did not stop within 5 s of SIGTERM: {command}")
            elif code != 0 and target.protocol == "machat":
                rec.problems.append(f"server exited with status {code}")
        if target.protocol == "machat":
            for log in running.logs:
                text = log.read_text(errors="replace")
                if "Traceback" in text:
                    excerpt = text[text.index("Traceback") :].splitlines()[:8]
                    rec.problems.append(
                        f"the server logged an exception ({log.name}; --workdir keeps the"
                        " logs):\n" + "\n".join(excerpt)
                    )
    except (RuntimeError, OSError, TargetUnavailable) as exc:
        rec.problems.append(f"could not start {target.name}: {exc}")
    rec.ok = not rec.problems and bool(rec.raw)
    return rec


def _progress(i: int, n: int, rec: Record) -> str:
    if rec.kib_per_conn is not None:
        figures = f"{rec.kib_per_conn:.1f} KiB/conn"
        if rec.rss_growth_pct is not None:
            figures += f", wave 2 {rec.rss_growth_pct:+.1f}%"
    elif rec.deliveries_per_s is not None:
        us = "?" if rec.server_cpu_us is None else f"{rec.server_cpu_us:.3f}"
        figures = f"{rec.deliveries_per_s / 1e6:.2f} M deliveries/s, {us} us/delivery"
    else:
        figures = "no figures"
    state = "ok" if rec.ok else "PROBLEM: " + "; ".join(rec.problems)[:300]
    return f"[{i}/{n}] {rec.scenario} {rec.target} (run {rec.repeat + 1}): {figures}; {state}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        config, records = saved["config"], [Record(**r) for r in saved["runs"]]
        names = list(config["scenarios"])
        sizes = [int(n[4:]) for n in names if n.startswith("size")]
        chosen = [s for s in sc.scenarios(config["quick"], sizes) if s.name in names]
        for line in header(config):
            print(line)
        return present(args, config, records, chosen)
    config, records, chosen = measure(args, argv)
    return present(args, config, records, chosen)


def measure(
    args: argparse.Namespace, argv: Sequence[str] | None
) -> tuple[dict[str, Any], list[Record], list[sc.Scenario]]:
    """Run the plan; the configuration, every run's record, the scenarios run."""
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = [int(x) for x in _csv(args.sizes) or []] or None
    try:
        plan_scenarios = sc.select(sc.scenarios(args.quick, sizes), _csv(args.only))
    except ValueError as exc:
        raise SystemExit(f"run.py: {exc}") from None
    try:
        targets_mod.PLACEMENT = targets_mod.Placement.parse(args.pin)
    except ValueError as exc:
        raise SystemExit(f"run.py: {exc}") from None
    targets, skipped = choose_targets(_csv(args.targets))
    if not targets:
        raise SystemExit("run.py: no target to run")
    nofile = raise_nofile_limit()  # the servers started here inherit it
    # SIGTERM and SIGINT both end the runs through KeyboardInterrupt, so that every
    # server started so far is stopped (they run in their own sessions) and the runs done
    # are reported.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="machat-bench-")))

        lg_note = "not used"
        loadgen_c: LoadgenC | None = None
        if args.generator != "python":
            if args.loadgen:
                if not os.access(args.loadgen, os.X_OK):
                    raise SystemExit(f"run.py: {args.loadgen} is not an executable")
                loadgen_c, lg_note = LoadgenC(args.loadgen.resolve()), f"given: {args.loadgen}"
            else:
                binary, lg_note = build_loadgen_c(args.loadgen_src.resolve(), workdir)
                loadgen_c = LoadgenC(binary) if binary else None
            if loadgen_c is None:
                if args.generator == "c":
                    raise SystemExit(f"run.py: loadgen-c is not available: {lg_note}")
                print(
                    f"run.py: loadgen-c not available ({lg_note}); using bench/loadgen.py"
                    " and bench/idle.py",
                    file=sys.stderr,
                )
        python_gen = PythonGenerator()

        # The plan: every repetition runs every scenario on every target, the targets'
        # order rotated from one repetition to the next.
        plan: list[tuple[int, sc.Scenario, Target, LoadgenC | PythonGenerator]] = []
        unsupported: set[str] = set()
        for rep in range(repeat):
            for scenario in plan_scenarios:
                row = [t for t in targets if t.name in scenario.targets]
                shift = rep % len(row) if row else 0
                for target in row[shift:] + row[:shift]:
                    gen: LoadgenC | PythonGenerator | None
                    if scenario.kind == "order":
                        gen = python_gen  # the generator that checks order
                    elif loadgen_c and loadgen_c.supports(scenario, target):
                        gen = loadgen_c
                    elif not loadgen_c and python_gen.supports(scenario, target):
                        gen = python_gen
                    else:
                        gen = None
                    if gen is None:
                        unsupported.add(f"{scenario.name}/{target.name}")
                    else:
                        plan.append((rep, scenario, target, gen))

        config = {
            "argv": sys.argv if argv is None else ["bench/run.py", *argv],
            "machine": machine(),
            "quick": args.quick,
            "repeat": repeat,
            "loadgen_c": lg_note,
            "generator": "loadgen-c" if loadgen_c else "python (bench/loadgen.py, idle.py)",
            "machat_flags": " ".join(MACHAT_FLAGS) + " (machat+db: --db <fresh file>)",
            "targets": {
                t.name: t.version()
                + (
                    f" (loadgen-c --connect-concurrency {t.connect_concurrency})"
                    if t.connect_concurrency
                    else ""
                )
                for t in targets
            },
            "targets_skipped": skipped,
            "not_runnable": sorted(unsupported),
            "scenarios": {s.name: s.describe() for s in plan_scenarios},
            "rlimit_nofile": nofile,
            "placement": targets_mod.PLACEMENT.describe(),
        }
        for line in header(config):
            print(line, flush=True)

        records: list[Record] = []
        t0 = time.monotonic()
        try:
            for i, (rep, scenario, target, gen) in enumerate(plan, 1):
                rec = run_one(scenario, target, gen, rep, workdir, i)
                records.append(rec)
                print(_progress(i, len(plan), rec), file=sys.stderr, flush=True)
        except KeyboardInterrupt:  # the servers were stopped on the way out of start()
            config["interrupted_after_runs"] = len(records)
            print(f"run.py: interrupted; reporting the {len(records)} runs done", file=sys.stderr)
        config["wall_s"] = round(time.monotonic() - t0, 1)
        config["loadavg_at_end"] = os.getloadavg()

    return config, records, plan_scenarios


def present(
    args: argparse.Namespace,
    config: dict[str, Any],
    records: list[Record],
    plan_scenarios: list[sc.Scenario],
) -> int:
    """Print the tables and targets, write the JSON, Markdown and plot; the exit status."""
    if not records:
        print("run.py: no run completed", file=sys.stderr)
        return 1
    quick, repeat = config["quick"], config["repeat"]
    summary = report.summarise(records)
    targets_met = report.checks(summary)
    # The measurements are saved first: a bug in what follows must not lose them.
    results = {
        "config": config,
        "summary": summary,
        "targets": [
            dict(zip(("what", "value", "goal", "verdict"), c, strict=True)) for c in targets_met
        ],
        "runs": [r.to_json() for r in records],
    }
    if not args.from_json:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print()
    for line in report.tables(summary, plan_scenarios):
        print(line)
    problems = [(s["scenario"], s["target"], p) for s in summary for p in s["problems"]]
    if problems:
        print("\nProblems (rows marked !):")
        for scenario, target, p in problems:
            print(f"  {scenario}/{target}: {p.splitlines()[0] if p else p}")
    print("\nIssue 8 targets (medians" + (", QUICK RUN: not comparable" if quick else "") + "):")
    width = max(len(c[0]) for c in targets_met)
    for what, value, goal, verdict in targets_met:
        print(f"  {what.ljust(width)}  {value:>12}  goal {goal:<20} {verdict}")
    if paired := report.paired_db_ratios(records):
        print("  db/no-db run by run (median, range):  " + "; ".join(paired))
    print(
        f"\n{len(records)} runs in {config['wall_s']} s; load average at the end "
        + " ".join(f"{x:.2f}" for x in config["loadavg_at_end"])
    )
    if not args.from_json:
        print(f"results: {args.out}")

    if args.markdown:
        md = report.tables(summary, plan_scenarios, markdown=True)
        md += ["", "| check | measured (medians) | goal | verdict |", "| --- | --- | --- | --- |"]
        md += [
            f"| {what} | {value} | {goal} | {verdict} |"
            for what, value, goal, verdict in targets_met
        ]
        args.markdown.write_text("\n".join(md) + "\n")
    if not args.no_plot:
        m = config["machine"]
        title = (
            f"machat {m['commit']} | {m['cores']} cores, {m['cpu']}, Linux {m['kernel']},"
            f" {m['python']} | {m['date_utc']} UTC | medians of {repeat}"
            + (" | QUICK" if quick else "")
        )
        report.plot(summary, plan_scenarios, args.plot, title)
        print(f"plot: {args.plot}")
    return 0 if all(r.ok for r in records) and "interrupted_after_runs" not in config else 1


def header(config: dict[str, Any]) -> list[str]:
    m = config["machine"]
    out = [
        "machat benchmark (bench/run.py)"
        + ("  QUICK: smoke figures only" if config["quick"] else ""),
        f"  commit     {m['commit']} {m['commit_subject']}",
        f"  machine    {m['cores']} cores, {m['cpu']}; Linux {m['kernel']}; {m['python']};"
        f" load average {' '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}",
        f"  date       {m['date_utc']} UTC; {config['repeat']} repetition(s), interleaved,"
        " a fresh server per run",
        f"  generator  {config['generator']}; loadgen-c: {config['loadgen_c']}",
        f"  placement  {config.get('placement', 'not pinned')} (--pin)",
        f"  machat     python -m machat.cmd.chatserver -a 127.0.0.1:<free port>"
        f" {config['machat_flags']}",
    ]
    for name, version in config["targets"].items():
        out.append(f"  target     {name}: {version}")
    for name, why in config["targets_skipped"].items():
        out.append(f"  skipped    {name}: {why}")
    out.append(
        "  scenarios  (loadgen-c commands after --protocol/--port/--server-pid; every run's"
        " exact commands are in the JSON)"
    )
    for name, text in config["scenarios"].items():
        out.append(f"    {name:<9} {text}")
    if config["not_runnable"]:
        out.append(f"  not runnable with this generator: {', '.join(config['not_runnable'])}")
    return out


if __name__ == "__main__":
    sys.exit(main())
