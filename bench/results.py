#!/usr/bin/env python3
"""Turns the JSON reports of bench/compare.sh into bench/RESULTS.md (on stdout).

usage: results.py OUT_DIR SCENARIO_TABLE
SCENARIO_TABLE is compare.sh's "id|description|args" lines.
"""
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - machine info is best effort
        return ""


def machine():
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    nginx = sh("nginx -v 2>&1 | cut -d/ -f2")
    nchan = sh("dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null")
    commit = sh("git rev-parse --short HEAD 2>/dev/null") or "uncommitted"
    return [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}; kernel {platform.release()}",
        f"- open files per process: {sh('ulimit -n')}; everything on loopback, client and servers on the same 2 cores",
        f"- hubbub: `target/release/hubbub serve --dev` at commit {commit}",
        f"- nchan: nginx {nginx or '?'} + libnginx-mod-nchan {nchan or '?'}, 1 worker process, memory store (bench/nchan.sh)",
    ]


def mib(b):
    return f"{b / 1048576:.1f} MiB"


def ms(us):
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us} µs"


def load(out, sid, target):
    path = os.path.join(out, f"{sid}-{target}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def idle_rows(r):
    s = r.get("server") or {}
    per = s.get("rss_per_subscriber_bytes")
    c = r["connect"]
    return [
        ("connected / requested", f"{c['connected']:,} / {c['requested']:,}"),
        ("connect time", f"{c['seconds']:.1f} s"),
        ("RSS before / with subscribers", f"{mib(s.get('rss_before_bytes', 0))} / {mib(s.get('rss_connected_bytes', 0))}"),
        ("**RSS per subscriber**", f"**{per / 1024:.2f} KiB**" if per is not None else "n/a"),
        ("dropped by server", str(sum(r["delivery"]["disconnects"].values()))),
    ]


def per_delivery(s, d):
    """Server CPU time per delivery in the measured window (what the CPU target compares)."""
    cpu = s.get("cpu_window_percent", 0) / 100
    rate = d.get("per_second", 0)
    return f"{cpu / rate * 1e6:.2f} µs" if rate else "-"


def load_rows(r):
    s = r.get("server") or {}
    p, d, lat, c = r["publish"], r["delivery"], r["latency"], r["connect"]
    errors = ", ".join(f"{k}={v}" for k, v in p["errors"].items()) or "none"
    client_cpu = r["client"]["cpu_parent_s"] + r["client"]["cpu_workers_s"]
    return [
        ("connected / requested", f"{c['connected']:,} / {c['requested']:,}"),
        ("publishes/s offered / achieved", f"{p['offered_rate']:.0f} / {p['achieved_rate']:.1f}"),
        ("publish errors", errors),
        ("**deliveries/s**", f"**{d['per_second']:,.0f}**"),
        ("deliveries/s expected from achieved publishes", f"{d['expected_per_second']:,.0f}"),
        ("latency p50 / p99 / p99.9 / max",
         f"{ms(lat['p50_us'])} / {ms(lat['p99_us'])} / {ms(lat['p999_us'])} / {ms(lat['max_us'])}"),
        ("publish round trip p50 / p99", f"{ms(p['rtt']['p50_us'])} / {ms(p['rtt']['p99_us'])}"),
        ("lost / duplicated / reordered", f"{d['lost']} / {d['duplicated']} / {d['reordered']}"),
        ("dropped by server", str(sum(d["disconnects"].values()))),
        ("server CPU in window", f"{s.get('cpu_window_percent', 0):.0f}% of a core"),
        ("server CPU per delivery", per_delivery(s, d)),
        ("server RSS with subscribers / peak", f"{mib(s.get('rss_connected_bytes', 0))} / {mib(s.get('rss_peak_bytes', 0))}"),
        ("bench client CPU (whole run)", f"{client_cpu:.1f} s"),
    ]


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def extra_sections(out):
    """The hubbub-only runs of bench/all.sh, when their outputs are in OUT_DIR:
    the 3-node cluster (cluster.sh), 100k subscribers on 6 nodes (cluster-100k.sh)
    and the soak (soak.sh). nchan has no cluster of its own to compare with."""
    lines = []
    cluster = read(os.path.join(out, "cluster-summary.md"))
    if cluster:
        # Its own headings go one level under this section's.
        cluster = "\n".join("###" + l[1:] if l.startswith("# ") else l for l in cluster.splitlines())
        lines += ["## 3-node cluster (`bench/cluster.sh`, hubbub only)", "", cluster, ""]
    big = read(os.path.join(out, "cluster-100k.summary"))
    if big:
        lines += ["## 100,000 subscribers on 6 nodes (`bench/cluster-100k.sh`, hubbub only)", "", "```", big, "```", ""]
    soak = read(os.path.join(out, "soak-hubbub", "summary.txt"))
    if soak:
        lines += ["## Soak (`bench/soak.sh`)", "", "```", soak, "```", "",
                  "Plots: `bench/out/soak-hubbub/latency.png`, `bench/out/soak-hubbub/rss.png`.", ""]
    return lines


def main():
    out, table = sys.argv[1], sys.argv[2]
    scenarios = [line.split("|", 2) for line in table.strip().splitlines() if line.strip()]
    lines = ["# hubbub vs nchan", "", "Generated by `bench/compare.sh` (see its header for the knobs).", "", "## Machine", ""]
    lines += machine()
    lines += ["", "## Results", ""]
    for sid, desc, _args in scenarios:
        reports = {t: load(out, sid, t) for t in ("hubbub", "nchan")}
        if not any(reports.values()):
            continue
        lines += [f"### {sid}: {desc}", ""]
        first = next(r for r in reports.values() if r)
        rows_of = idle_rows if first["plan"]["rate"] == 0 else load_rows
        rows = {t: dict(rows_of(r)) if r else {} for t, r in reports.items()}
        keys = [k for k, _ in rows_of(first)]
        lines += ["| | hubbub | nchan |", "|---|---|---|"]
        for k in keys:
            lines.append(f"| {k} | {rows['hubbub'].get(k, '—')} | {rows['nchan'].get(k, '—')} |")
        problems = [f"{t}: {p}" for t, r in reports.items() if r for p in r.get("problems", [])]
        if problems:
            lines += ["", "Problems: " + "; ".join(problems)]
        lines.append("")
    lines += extra_sections(out)
    lines += ["## Commands", "", "```"]
    try:
        with open(os.path.join(out, "commands.txt")) as f:
            lines += [l.rstrip() for l in f if l.strip()]
    except OSError:
        pass
    lines += ["```", "", "Raw JSON reports, progress logs and summaries: `bench/out/` (not committed).", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
