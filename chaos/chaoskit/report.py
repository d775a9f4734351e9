"""The verdict's outputs: a human summary, a JSON report, PNG timelines, RESULTS.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .util import CHAOS

COLUMNS = [
    ("published", "published"), ("acknowledged", "acked"), ("lost", "lost"), ("duplicated", "dup"),
    ("reordered", "reordered"), ("acked_then_lost", "acked-then-lost"), ("late_counted", "late (nodes)"),
    ("lost_counted", "lost (nodes)"), ("repaired", "repairs"), ("convergence_s", "converged (s)"),
]


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def summary_text(report: dict) -> str:
    lines = [f"hubbub chaos suite: {report['form']} form, target {report['target']['target']}, "
             f"{len(report['scenarios'])} scenario(s), {report['duration_s']:.0f}s",
             f"self-tests (toxiproxy-python vs chaosproxy, the checks): {report['compat']['status']}", ""]
    head = f"{'scenario':22} {'verdict':7} " + " ".join(f"{short:>10}" for _, short in COLUMNS)
    lines += [head, "-" * len(head)]
    for s in report["scenarios"]:
        m = s.get("metrics", {})
        lines.append(f"{s['name']:22} {s['verdict']:7} " + " ".join(f"{fmt(m.get(k)):>10}" for k, _ in COLUMNS))
    lines.append("")
    for s in report["scenarios"]:
        for v in s.get("violations", []):
            lines.append(f"VIOLATION {s['name']}: {v}")
    for s in report["scenarios"]:
        for n in s.get("notes", []):
            lines.append(f"note {s['name']}: {n}")
    lines += ["", f"VERDICT: {report['verdict']}"]
    return "\n".join(lines) + "\n"


def timeline(report: dict, series: dict, path: Path, t_lo: float | None = None, t_hi: float | None = None,
             title: str = "") -> None:
    """Publish rate, deliveries, vector lag; fault windows shaded (red: fault, blue: event)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    acks = np.array(series["acks"])
    dels = np.array(series["deliveries"])
    starts = [s["t_begin"] for s in report["scenarios"] if "t_begin" in s]
    lo = t_lo if t_lo is not None else (min(starts) - 1.0 if starts else 0.0)
    hi = t_hi if t_hi is not None else max([report["duration_s"], *(acks.tolist()[-1:]), 1.0])
    width = 0.5 if hi - lo < 120 else 1.0
    bins = np.arange(lo, hi + width, width)
    fig, axes = plt.subplots(3, 1, figsize=(14 if hi - lo > 120 else 10, 8), sharex=True)
    ax1, ax2, ax3 = axes
    if len(bins) > 1:
        a, _ = np.histogram(acks, bins=bins)
        d, _ = np.histogram(dels, bins=bins)
        ax1.step(bins[:-1], a / width, where="post", color="tab:green", lw=0.9)
        ax2.step(bins[:-1], d / width, where="post", color="tab:purple", lw=0.9)
    ax1.set_ylabel("acked publishes/s")
    ax2.set_ylabel("deliveries/s\n(all subscribers)")
    for node, pts in sorted(series["lag"].items()):
        pts = [(t, b) for t, b in pts if lo <= t <= hi]
        if pts:
            ax3.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.9, label=node)
    ax3.set_yscale("symlog", linthresh=10)  # a restarted node is thousands behind for a moment
    ax3.set_ylabel("vector lag\n(updates behind)")
    ax3.set_xlabel("seconds since chaos/run started (the cluster comes up first)")
    ax3.legend(loc="upper right", fontsize=7)
    for ax in axes:
        for name, t0, t1, kind in series["windows"]:
            if t1 < lo or t0 > hi:
                continue
            ax.axvspan(t0, max(t1, t0 + 0.05), color="tab:red" if kind == "fault" else "tab:blue", alpha=0.18, lw=0)
        for s in report["scenarios"]:
            if "t_begin" in s and lo <= s["t_begin"] <= hi:
                ax.axvline(s["t_begin"], color="grey", lw=0.5, ls=":")
        ax.grid(alpha=0.2)
        ax.set_xlim(lo, hi)
    for s in report["scenarios"]:
        if "t_begin" in s and lo <= s["t_begin"] <= hi:
            ax1.text(s["t_begin"], 1.02, s["name"], transform=ax1.get_xaxis_transform(), rotation=35,
                     fontsize=7, ha="left", va="bottom")
    fig.suptitle(title or f"hubbub chaos ({report['form']} form): red = fault window, blue = graceful event",
                 y=0.995, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, series: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    files.append(out / "report.json")
    (out / "series.json").write_text(json.dumps(series))  # what the plots are drawn from (--replot)
    text = summary_text(report)
    (out / "summary.txt").write_text(text)
    files.append(out / "summary.txt")
    try:
        timeline(report, series, out / "timeline.png")
        files.append(out / "timeline.png")
        for s in report["scenarios"]:
            if "t_begin" in s and "t_end" in s:
                p = out / f"timeline-{s['name']}.png"
                timeline(report, series, p, s["t_begin"] - 0.5, s["t_end"] + 0.5,
                         title=f"{s['name']}: {s['injects']}"[:150])
                files.append(p)
    except ImportError as e:
        print(f"no timeline: {e} (pip install matplotlib)")
    return files


def write_results_md(report: dict, out: Path) -> Path:
    """chaos/RESULTS.md (+ chaos/results/timeline.png) from a run's report."""
    res = CHAOS / "results"
    res.mkdir(exist_ok=True)
    if (out / "timeline.png").exists():
        shutil.copy2(out / "timeline.png", res / "timeline.png")
    t = report["target"]
    lines = [
        "# Chaos suite: results of a full run",
        "",
        "Generated by `chaos/run --full --write-results` (regenerate the file from a run's outputs: "
        "`chaos/run --replot --write-results --out DIR`); the last section, the analysis, is "
        "`chaos/results/notes.md`, written by hand.",
        "",
        f"`chaos/run {'--full' if report['form'] == 'full' else ''}`".replace(" `", "`") +
        f" against the `{t['target']}` target on {report['started']}: {len(report['scenarios'])} scenarios, "
        f"{report['duration_s'] / 60:.1f} min, verdict **{report['verdict']}**. hubbub {report.get('hubbub', '?')}; "
        f"the machine: {report.get('machine', '?')}.",
        "",
        "Counted by the verifier (clients' side, independent of the nodes): *published* = publish attempts "
        "(sequence numbers), *acked* = answered 200, *lost* = acknowledged updates a subscriber never received "
        "while others did, *dup* = deliveries beyond the first, *reordered* = updates out of place between "
        "nodes' orders (fewest moves to agree, summed over nodes against the best reference node), "
        "*acked-then-lost* = acknowledged updates no subscriber anywhere received. From the nodes' counters "
        "(GET /cluster, increase during the scenario): *late*, *lost*, *repairs* (updates that came through "
        "anti-entropy). *converged* = seconds from the end of the last fault until every node held everything "
        "any node held at that moment (publishing going on); the stated bound is "
        f"{report['convergence_bound_s']:.0f} s.",
        "",
        "| scenario | " + " | ".join(short for _, short in COLUMNS) + " | verdict |",
        "|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for s in report["scenarios"]:
        m = s.get("metrics", {})
        lines.append(f"| {s['name']} | " + " | ".join(fmt(m.get(k)) for k, _ in COLUMNS) + f" | {s['verdict']} |")
    lines += ["", "![timeline](results/timeline.png)", "",
              "Red: fault windows; blue: graceful restarts (not faults). A run also draws one plot per scenario "
              "(`chaos/out/timeline-<scenario>.png`).", "", "## Per scenario", ""]
    for s in report["scenarios"]:
        m = s.get("metrics", {})
        lat = m.get("latency_ms", {})
        lines.append(f"### {s['name']}: {s['verdict']}")
        lines.append("")
        lines.append(f"- injects: {s['injects']}")
        lines.append(f"- proves: {s['proves']}")
        if lat:
            lines.append("- delivery latency p50/p99/max (ms), sticky subscribers, live streams: " + "; ".join(
                f"{k} {fmt(v.get('p50_ms'))}/{fmt(v.get('p99_ms'))}/{fmt(v.get('max_ms'))}" for k, v in lat.items()))
        lines.append(f"- subscribers {m.get('subscribers')}, deliveries {m.get('deliveries')}, mover moves "
                     f"{m.get('moves')}, reconnects {m.get('reconnects')}, publish retries {m.get('publish_retries')}, "
                     f"vectors equal {fmt(m.get('vectors_equal_s'))} s after publishing stopped")
        for k, v in (s.get("extra") or {}).items():
            if k != "violations":
                lines.append(f"- {k}: `{json.dumps(v, default=str)}`")
        for v in s.get("violations", []):
            lines.append(f"- **violation**: {v}")
        for n in s.get("notes", []):
            lines.append(f"- note: {n}")
        lines.append("")
    notes = res / "notes.md"  # the hand-written analysis of the run, kept across regenerations
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    path = CHAOS / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    return path
