"""Turn the runs into medians, ratios and the issue's pass/fail lines, as JSON and Markdown."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.servers import SYSTEMS

KIB = 1024


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    scenario: str
    digits: int = 0
    ratios: bool = True


METRICS = (
    Metric("down_MBps", "downstream (host→browser) MB/s", "downstream"),
    Metric("up_MBps", "upstream (browser→host, masked) MB/s", "upstream"),
    Metric("rtt1_p50_us", "RTT p50, 1 console, µs", "rtt1", 1),
    Metric("rtt1_p99_us", "RTT p99, 1 console, µs", "rtt1", 1),
    Metric("rtt100_p50_us", "RTT p50, 100 consoles, µs", "rtt100"),
    Metric("rtt100_p99_us", "RTT p99, 100 consoles, µs", "rtt100"),
    Metric("rtt100_msgs_per_s", "messages/s, 100 consoles", "rtt100"),
    Metric("setup_per_s", "console setup (upgrade + first byte)/s", "setup"),
    Metric("mem_per_console_KiB", "memory per idle console, KiB", "hold", 1),
    Metric("mem_at_goal_KiB", "memory per idle console at the concurrency goal, KiB", "hold", 1),
    Metric(
        "consoles_at_goal",
        "idle consoles open at that point (goal: 10,000 for C)",
        "hold",
        ratios=False,
    ),
    Metric("held", "concurrent consoles held", "hold"),
    Metric("processes", "processes at the memory checkpoint", "hold", ratios=False),
    Metric("hold_open_per_s", "consoles opened/s while filling up", "hold"),
)
# This proxy with every console recorded (issue 14), beside the same figures without.
RECORDING = (
    Metric("down_rec_MBps", "downstream (host→browser) MB/s", "downstream-rec"),
    Metric("mem_rec_per_console_KiB", "memory per idle console, KiB", "hold-rec", 1),
)
WITHOUT = {"down_rec_MBps": "down_MBps", "mem_rec_per_console_KiB": "mem_per_console_KiB"}


def metrics_of(run: dict[str, Any]) -> dict[str, float]:
    """The table's figures from one run's raw result."""
    result = run.get("result")
    if not result:
        return {}
    scenario = run["scenario"]
    if scenario in ("downstream", "upstream"):
        return {"down_MBps" if scenario == "downstream" else "up_MBps": result["MBps"]}
    if scenario in ("rtt1", "rtt100"):
        found = {f"{scenario}_p50_us": result["p50_us"], f"{scenario}_p99_us": result["p99_us"]}
        if scenario == "rtt100":
            found["rtt100_msgs_per_s"] = result["msgs_per_s"]
        return found
    if scenario == "setup":
        return {"setup_per_s": result["per_s"]}
    if scenario == "downstream-rec":
        return {"down_rec_MBps": result["MBps"]}
    found = _hold_metrics(run["system"], result)
    if scenario == "hold-rec":
        per_console = found.get("mem_per_console_KiB")
        return {} if per_console is None else {"mem_rec_per_console_KiB": per_console}
    return found


def _hold_metrics(system: str, result: dict[str, Any]) -> dict[str, float]:
    checkpoints = sorted((k for k in result if k.startswith("at_")), key=lambda k: int(k[3:]))
    first, last = result[checkpoints[0]], result[checkpoints[-1]]
    before = result["memory_before"]
    # One process: RSS growth. A forking server: PSS summed over its process tree.
    kind = "rss" if system == "C" else "pss"
    found = {
        "held": result["held"],
        "processes": first["memory"]["processes"],
        "hold_open_per_s": result["open_rate_per_s"],
    }
    found["consoles_at_goal"] = last["open"]
    for key, point in (("mem_per_console_KiB", first), ("mem_at_goal_KiB", last)):
        if point["open"]:
            growth = point["memory"][kind] - before[kind]
            found[key] = round(growth / point["open"] / KIB, 1)
    return found


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for key, value in metrics_of(run).items():
            values.setdefault(key, {}).setdefault(run["system"], []).append(value)
    table: dict[str, Any] = {}
    for metric in METRICS + RECORDING:
        by_system = values.get(metric.key, {})
        medians = {s: statistics.median(v) for s, v in by_system.items() if v}
        row: dict[str, Any] = {"values": by_system, "median": medians}
        for other in ("A", "B") if metric.ratios else ():
            if "C" in medians and medians.get(other):
                row[f"C/{other}"] = round(medians["C"] / medians[other], 2)
        if metric.ratios and "D" in medians and medians.get("C"):
            row["D/C"] = round(medians["D"] / medians["C"], 2)
        if metric.ratios and "D" in medians and medians.get("B"):
            row["D/B"] = round(medians["D"] / medians["B"], 2)
        table[metric.key] = row
    limits = [r["result"].get("server_nofile", 0) for r in runs if _is_c_hold(r)]
    recorded = _recorded(runs)
    found = checks(table, min(limits, default=0), recorded)
    return {"metrics": table, "usage": _usage(runs), "checks": found, "recorded": recorded}


def _recorded(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the downstream-rec runs' recordings kept up (complete), and why not."""
    rec_runs = [r for r in runs if r["scenario"] == "downstream-rec"]
    made = [r["recordings"] for r in rec_runs if r.get("recordings")]
    problems = sorted({p for m in made for p in m["problems"]})
    return {
        "runs": len(made),
        "complete": bool(made) and all(m["count"] and m["complete"] == m["count"] for m in made),
        "bytes": [m["bytes"] for m in made],
        "problems": problems,
    }


def _is_c_hold(run: dict[str, Any]) -> bool:
    return run["scenario"] == "hold" and run["system"] == "C" and bool(run.get("result"))


def _usage(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median CPU and fault rates per (scenario, system) over the repetitions."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("usage"):
            groups.setdefault((run["scenario"], run["system"]), []).append(run["usage"])
    rows = []
    for (scenario, system), usages in groups.items():
        row: dict[str, Any] = {"scenario": scenario, "system": system}
        for who in ("client", "server", "targets"):
            for field in ("cpu_pct", "kernel_pct", "faults_per_s"):
                found = [u[who][field] for u in usages if who in u]
                if found:
                    row[f"{who}_{field}"] = statistics.median(found)
        rows.append(row)
    return rows


def _held_check(held: float | None, nofile: int) -> dict[str, str]:
    target = "10,000 concurrent consoles held"
    if held is None:
        return {"target": target, "status": "n/a", "detail": "not measured"}
    detail = f"C held {held:,.0f}"
    if held < 10_000 and 0 < nofile < 2 * 10_000 + 100:
        detail += (
            f"; the proxy's RLIMIT_NOFILE is {nofile:,} (2 descriptors per console), so one"
            " process cannot hold 10,000 here"
        )
    return {"target": target, "status": "PASS" if held >= 10_000 else "FAIL", "detail": detail}


def checks(
    table: dict[str, Any], nofile: int = 0, recorded: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """The issue's targets, each PASS, FAIL or n/a (not measured)."""

    def med(key: str, system: str) -> float | None:
        value = table.get(key, {}).get("median", {}).get(system)
        return None if value is None else float(value)

    def line(target: str, ok: bool | None, detail: str) -> dict[str, str]:
        status = "n/a" if ok is None else "PASS" if ok else "FAIL"
        return {"target": target, "status": status, "detail": detail}

    def ratio_check(key: str, system: str, factor: float, target: str) -> dict[str, str]:
        c, other = med(key, "C"), med(key, system)
        if c is None or not other:
            return line(target, None, "not measured")
        return line(target, c >= factor * other, f"C/{system} = {c / other:.2f} (need ≥ {factor})")

    def at_most(key: str, limit: float, target: str, unit: str) -> dict[str, str]:
        c = med(key, "C")
        if c is None:
            return line(target, None, "not measured")
        return line(target, c <= limit, f"C = {c:g} {unit} (need ≤ {limit:g})")

    found = [
        ratio_check("down_MBps", "A", 0.6, "downstream ≥ 60 % of direct TCP"),
        ratio_check("down_MBps", "B", 2.0, "downstream ≥ 2× websockify"),
        ratio_check("up_MBps", "B", 3.0, "upstream ≥ 3× websockify"),
    ]
    c99, b99 = med("rtt100_p99_us", "C"), med("rtt100_p99_us", "B")
    target = "RTT p99 at 100 consoles ≤ ½ websockify's"
    if c99 is None or b99 is None:
        found.append(line(target, None, "not measured"))
    else:
        found.append(line(target, c99 <= b99 / 2, f"C = {c99:g} µs, B = {b99:g} µs"))
    c1, a1 = med("rtt1_p99_us", "C"), med("rtt1_p99_us", "A")
    target = "1-console RTT p99 within 50 µs of direct TCP"
    if c1 is None or a1 is None:
        found.append(line(target, None, "not measured"))
    else:
        found.append(line(target, c1 - a1 <= 50, f"C − A = {c1 - a1:.1f} µs"))
    found.append(at_most("mem_per_console_KiB", 16, "≤ 16 KiB per idle console", "KiB"))
    found.append(_at_goal_check(med("mem_at_goal_KiB", "C"), med("consoles_at_goal", "C")))
    found.append(_held_check(med("held", "C"), nofile))
    found.append(ratio_check("setup_per_s", "B", 20.0, "setup rate ≥ 20× websockify"))
    d_setup, b_setup = med("setup_per_s", "D"), med("setup_per_s", "B")
    target = "setup rate ≥ 20× websockify, 2 workers"
    if d_setup is None or not b_setup:
        found.append(line(target, None, "not measured"))
    else:
        ratio = d_setup / b_setup
        found.append(line(target, ratio >= 20, f"D/B = {ratio:.2f} (need ≥ 20)"))
    d_held = med("held", "D")
    target = "≥ 20,000 consoles held on one machine (2 workers)"
    if d_held is None:
        found.append(line(target, None, "not measured"))
    else:
        found.append(line(target, d_held >= 20_000, f"D held {d_held:,.0f}"))
    down, down_rec = med("down_MBps", "C"), med("down_rec_MBps", "C")
    target = "downstream with recording on ≥ 70 % of without"
    if not down or down_rec is None:
        found.append(line(target, None, "not measured"))
    elif recorded and not recorded["complete"]:
        # The recorder gave up part way (best_effort): the rest of the window was not recorded.
        megabytes = ", ".join(f"{b / 1e6:,.0f}" for b in recorded["bytes"])
        why = "; ".join(recorded["problems"]) or "incomplete"
        detail = f"on/off = {down_rec / down:.2f}, but the recording stopped ({why}) after"
        found.append(line(target, False, f"{detail} {megabytes} MB"))
    else:
        found.append(line(target, down_rec >= 0.7 * down, f"on/off = {down_rec / down:.2f}"))
    mem, mem_rec = med("mem_per_console_KiB", "C"), med("mem_rec_per_console_KiB", "C")
    target = "recording adds ≤ 8 KiB per idle console"
    if mem is None or mem_rec is None:
        found.append(line(target, None, "not measured"))
    else:
        found.append(line(target, mem_rec - mem <= 8, f"on − off = {mem_rec - mem:+.1f} KiB"))
    return found


def _at_goal_check(kib: float | None, consoles: float | None) -> dict[str, str]:
    """≤ 16 KiB per idle console also with the goal's 10,000 consoles open (or as many as one
    process could hold: the open-files limit may stop it a few short)."""
    target = "≤ 16 KiB per idle console at 10,000 consoles"
    if kib is None or not consoles:
        return {"target": target, "status": "n/a", "detail": "not measured"}
    status = "PASS" if kib <= 16 else "FAIL"
    detail = f"C = {kib:g} KiB with {consoles:,.0f} open (need ≤ 16)"
    if consoles < 9_900:
        status, detail = "n/a", f"only {consoles:,.0f} consoles were open: {detail}"
    return {"target": target, "status": status, "detail": detail}


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _recording_table(table: dict[str, Any], recorded: dict[str, Any] | None) -> list[str]:
    """This proxy without and with recording (the -rec scenarios), when they ran."""
    rows = []
    for metric in RECORDING:
        on = table.get(metric.key, {}).get("median", {}).get("C")
        off = table.get(WITHOUT[metric.key], {}).get("median", {}).get("C")
        if on is None:
            continue
        if off is None:
            change = "–"
        elif metric.scenario == "hold-rec":
            change = f"{on - off:+,.{metric.digits}f}"
        else:
            change = f"{on / off:.2f}" if off else "–"
        cells = [_fmt(off, metric.digits), _fmt(on, metric.digits), change]
        rows.append(f"| {metric.label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = [
        "",
        "## Recording on (issue 14)",
        "",
        "C with `[recording] dir` set: every console written to disk (a temporary directory on "
        "the same disk; the token-file consoles are raw, so no keyframe requests). Change: on/off "
        "for throughput, on − off for memory.",
        "",
        "| metric | C, recording off | C, recording on | change |",
        "|---|---:|---:|---:|",
    ]
    tail = []
    if recorded and recorded["runs"]:
        megabytes = ", ".join(f"{b / 1e6:,.0f}" for b in recorded["bytes"])
        why = "; ".join(recorded["problems"])
        state = "complete" if recorded["complete"] else f"stopped: {why}"
        tail = ["", f"Downstream recordings: {megabytes} MB written per run, {state}."]
    return head + rows + tail


def markdown(report: dict[str, Any]) -> str:
    machine, settings, summary = report["machine"], report["settings"], report["summary"]
    out = [
        f"# Console proxy benchmark, {report['started']}",
        "",
        f"Mode: {'quick' if settings['quick'] else 'full'}, {settings['reps']} repetition(s), "
        f"A/B/C/D interleaved; {settings['duration']} s per throughput/latency window. "
        "Medians over repetitions.",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()),
        "",
        "| metric | A: " + " | B: ".join(SYSTEMS[s] for s in "AB") + f" | C: {SYSTEMS['C']} "
        f"| D: {SYSTEMS['D']} | C/A | C/B | D/C |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for metric in METRICS:
        row = summary["metrics"].get(metric.key, {})
        medians = row.get("median", {})
        if not medians:
            continue
        cells = [_fmt(medians.get(s), metric.digits) for s in "ABCD"]
        ratios = [_fmt(row.get(f"C/{s}"), 2) for s in "AB"] + [_fmt(row.get("D/C"), 2)]
        out.append(f"| {metric.label} | " + " | ".join(cells + ratios) + " |")
    if settings["reps"] > 1:
        out += ["", "Every repetition (A; B; C; D):", ""]
        for metric in METRICS:
            values = summary["metrics"].get(metric.key, {}).get("values", {})
            if values:
                each = "; ".join(
                    ", ".join(_fmt(v, metric.digits) for v in values.get(s, [])) or "–"
                    for s in "ABCD"
                )
                out.append(f"- {metric.label}: {each}")
    out += _recording_table(summary["metrics"], summary.get("recorded"))
    out += ["", "## Targets (issues 6 and 14)", "", "| target | result | detail |", "|---|---|---|"]
    out += [f"| {c['target']} | {c['status']} | {c['detail']} |" for c in summary["checks"]]
    out += [
        "",
        "## CPU and page faults during each measurement window (medians)",
        "",
        "Client = this load client (one process); server = the proxy's process tree; "
        "targets = the loopback console servers.",
        "",
        "| scenario | system | client CPU % | server CPU % | server kernel % "
        "| server faults/s | targets CPU % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["usage"]:
        cells = [
            row.get("client_cpu_pct"),
            row.get("server_cpu_pct"),
            row.get("server_kernel_pct"),
            row.get("server_faults_per_s"),
            row.get("targets_cpu_pct"),
        ]
        text = " | ".join(_fmt(c, 0) for c in cells)
        out.append(f"| {row['scenario']} | {row['system']} | {text} |")
    errors = [r for r in report["runs"] if r.get("error")]
    if errors:
        out += ["", "## Errors", ""]
        out += [f"- {r['system']} {r['scenario']} rep {r['rep']}: {r['error']}" for r in errors]
    holds = [r for r in report["runs"] if r["scenario"] == "hold" and r.get("result")]
    if holds:
        out += ["", "## Concurrency runs", ""]
        for run in holds:
            res = run["result"]
            out.append(
                f"- {run['system']} rep {run['rep']}: attempted {res['attempted']:,}, "
                f"opened {res['opened']:,}, held {res['held']:,}; failures {res['failures']}"
            )
    return "\n".join(out) + "\n"
