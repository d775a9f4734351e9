"""chaos/run's engine: `python3 -m chaoskit [--full] [--scenario NAME] [--target compose|local]`.

Brings the cluster up, runs the scenarios one after another (each with a fresh
verifier topic), prints a verdict, writes chaos/out/{summary.txt,report.json,
timeline*.png,cluster-logs.txt}, and stops everything it started, also on
failure, Ctrl-C or SIGTERM. Exit status: 0 = every check held, 1 = a violation
of the README's guarantee (or a scenario that could not run), 2 = bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import report as reports
from .scenarios import BY_NAME, FULL, SCENARIOS, SHORT, Ctx, Params, Scenario, describe
from .targets import ComposeTarget, LocalTarget, Target, build_proxy_binary
from .util import CHAOS, ROOT, T0, log, pid_alive, run
from .verify import ChaosVerifier, ClusterPoller, measure_convergence, wait_vectors_equal


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def compat_check(out: Path) -> dict:
    """toxiproxy-python (PyPI) against chaosproxy: chaos/tests/test_toxiproxy_compat.py."""
    bin_ = build_proxy_binary()
    log("self-tests (chaos/tests): toxiproxy-python against chaosproxy, the verifier's checks")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHAOS / "tests")],
                       env=dict(os.environ, CHAOSPROXY_BIN=str(bin_)), capture_output=True, text=True, timeout=300)
    (out / "compat.txt").write_text(r.stdout + r.stderr)
    last = (r.stdout.strip().splitlines() or ["?"])[-1]
    log(f"self-tests: {last}")
    return {"status": "pass" if r.returncode == 0 else "FAIL", "pytest": last}


def run_scenario(sc: Scenario, target: Target, poller: ClusterPoller, p: Params) -> dict:
    nodes = target.nodes()
    res: dict = {"name": sc.name, "injects": sc.injects, "proves": sc.proves}
    log(f"scenario {sc.name}: {sc.injects}")
    target.wait_ready(timeout=60)
    pre, vs = wait_vectors_equal(nodes, 30)
    if pre is None:
        res["notes"] = [f"vectors differed before the scenario: {vs}"]
    t_begin = time.monotonic()
    v = ChaosVerifier(nodes, rate=p.rate, **sc.verifier)
    ctx = Ctx(target, v, p)
    conv = {"converged_s": None}
    try:
        v.start()
        time.sleep(p.warmup)
        sc.fn(ctx)
        ctx.cleanup()
        if v.last_heal() is not None:
            conv = measure_convergence(nodes, p.convergence_bound)
            t_conv = conv.get("converged_s") or 0.0
            v.settled(time.monotonic())
        else:
            conv, t_conv = {"converged_s": None, "why": "no fault"}, 0.0
        time.sleep(max(0.0, p.recovery - t_conv))
    except BaseException:
        v.abort()
        ctx.cleanup()
        raise
    drained = v.stop()
    equal_s, vs = wait_vectors_equal(nodes, p.convergence_bound)
    t_end = time.monotonic()
    time.sleep(0.6)  # one more poller round
    counters = poller.deltas(t_begin, time.monotonic())
    a = v.analyze(counters)
    violations = list(a.pop("violations")) + ctx.extra.pop("violations", [])
    notes = res.get("notes", []) + a.pop("notes") + ctx.notes
    if v.last_heal() is not None and conv.get("converged_s") is None:
        violations.append(f"vectors did not converge within {p.convergence_bound:.0f}s of the last fault: "
                          f"{conv.get('why')}")
    if equal_s is None:
        violations.append(f"vectors not equal {p.convergence_bound:.0f}s after publishing stopped: {vs}")
    metrics = {k: a[k] for k in ("published", "acknowledged", "lost", "duplicated", "reordered", "acked_then_lost",
                                 "subscribers", "deliveries", "moves", "reconnects", "resume_misses",
                                 "publish_retries", "latency_ms", "excused_mover_anomalies")}
    metrics.update(
        late_counted=sum(c["late"] for c in counters.values()),
        lost_counted=sum(c["lost"] for c in counters.values()),
        repaired=sum(c["repaired"] for c in counters.values()),
        pulls=sum(c["pulls_sent"] for c in counters.values()),
        convergence_s=conv.get("converged_s"),
        vectors_equal_s=None if equal_s is None else round(equal_s, 2),
        drain_s=round(drained, 2),
    )
    res.update(
        verdict="FAIL" if violations else "pass",
        violations=violations, notes=notes, metrics=metrics, counters=counters, extra=ctx.extra,
        order_pairs=a["order_pairs"], acked_then_lost_sample=a["acked_then_lost_sample"],
        per_subscriber=a["per_subscriber"],
        windows=[(w.name, round(w.t0 - T0, 2), round((w.t1 or w.t0) - T0, 2), w.kind) for w in v.windows],
        t_begin=round(t_begin - T0, 2), t_end=round(t_end - T0, 2),
    )
    res["_series"] = v.series()
    m = metrics
    log(f"scenario {sc.name}: {res['verdict']}: published {m['published']}, acked {m['acknowledged']}, "
        f"lost {m['lost']}, dup {m['duplicated']}, reordered {m['reordered']}, acked-then-lost "
        f"{m['acked_then_lost']}, late {m['late_counted']}, repaired {m['repaired']}, "
        f"converged {m['convergence_s']}s")
    for x in violations:
        log(f"  VIOLATION: {x}")
    for x in notes:
        log(f"  note: {x}")
    return res


def hubbub_version() -> str:
    r = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "crates"], check=False).stdout.strip()
    return (r.stdout.strip() or "?") + (" (+ uncommitted changes in crates/)" if dirty else "")


def enter_netns(argv: list[str]) -> int:
    """The local target: re-run this command inside a network namespace of its own."""
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("hubbubchaos-") and name[12:].isdigit() and not pid_alive(int(name[12:])):
            log(f"removing stale network namespace {name}")
            run(["ip", "netns", "del", name], check=False)
    ns = f"hubbubchaos-{os.getpid()}"
    run(["ip", "netns", "add", ns])
    proc = None
    try:
        run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        log(f"local target: running in network namespace {ns}")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "chaoskit", *argv],
                                env=dict(os.environ, CHAOS_NETNS=ns), cwd=str(CHAOS))
        return proc.wait()
    except KeyboardInterrupt:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        return 1
    finally:
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        run(["ip", "netns", "del", ns], check=False)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="chaos/run", description="hubbub's chaos suite (chaos/README.md)")
    ap.add_argument("--full", action="store_true", help="the long form (default: the short form CI runs)")
    ap.add_argument("--scenario", action="append", default=[], metavar="NAME",
                    help="run only this scenario (repeatable, or comma-separated)")
    ap.add_argument("--target", choices=("compose", "local"), default="compose")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--no-build", action="store_true",
                    help="use the existing hubbub image (compose: $HUBBUB_IMAGE or hubbub:dev) or binary (local)")
    ap.add_argument("--skip-compat", action="store_true", help="skip the toxiproxy-python compatibility test")
    ap.add_argument("--write-results", action="store_true", help="write chaos/RESULTS.md from this run")
    ap.add_argument("--out", default=str(CHAOS / "out"), help="output directory (default chaos/out)")
    ap.add_argument("--replot", action="store_true",
                    help="redraw the plots (and RESULTS.md with --write-results) from the last run's outputs")
    args = ap.parse_args(argv)
    if args.list:
        print(describe())
        return 0
    if args.replot:
        out = Path(args.out)
        report = json.loads((out / "report.json").read_text())
        series = json.loads((out / "series.json").read_text())
        for f in out.glob("timeline*.png"):
            f.unlink()
        print("\n".join(str(f) for f in reports.write(report, series, out)))
        if args.write_results:
            print(f"wrote {reports.write_results_md(report, out)}")
        return 0
    names = [n for s in args.scenario for n in s.split(",") if n]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown scenario(s): {unknown}\n{describe()}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    if args.target == "local" and not os.environ.get("CHAOS_NETNS"):
        if os.geteuid() != 0:
            print("the local target needs root (network namespaces, nftables)", file=sys.stderr)
            return 2
        return enter_netns(argv)
    scenarios = [BY_NAME[n] for n in names] if names else SCENARIOS
    p = FULL if args.full else SHORT
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("timeline*.png"), *(out / n for n in ("report.json", "summary.txt", "compat.txt",
                                                                 "cluster-logs.txt"))]:
        old.unlink(missing_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    target: Target = (LocalTarget if args.target == "local" else ComposeTarget)(out, build=not args.no_build)
    report: dict = {"form": p.form, "target": target.describe(), "started": started,
                    "convergence_bound_s": p.convergence_bound, "params": vars(p), "hubbub": hubbub_version(),
                    "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
                    "scenarios": [], "compat": {"status": "skipped"}}
    series = {"acks": [], "deliveries": [], "windows": [], "lag": {}}
    poller = None
    failed_setup = None
    try:
        if not args.skip_compat:
            report["compat"] = compat_check(out)
        target.up()
        poller = ClusterPoller(target.nodes())
        poller.start()
        for sc in scenarios:
            try:
                res = run_scenario(sc, target, poller, p)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - the suite goes on; the verdict fails
                log(f"scenario {sc.name} could not run: {e}")
                traceback.print_exc()
                res = {"name": sc.name, "injects": sc.injects, "proves": sc.proves, "verdict": "ERROR",
                       "violations": [f"could not run: {type(e).__name__}: {e}"[:500]], "notes": []}
            s = res.pop("_series", None)
            if s:
                series["acks"] += [t - T0 for t in s["acks"]]
                series["deliveries"] += [t - T0 for t in s["deliveries"]]
                series["windows"] += [(n, a - T0, b - T0, k) for n, a, b, k in s["windows"]]
            report["scenarios"].append(res)
    except KeyboardInterrupt as e:
        failed_setup = f"interrupted ({e})"
        log(failed_setup)
    except Exception as e:  # noqa: BLE001
        failed_setup = f"{type(e).__name__}: {e}"
        log(f"setup failed: {failed_setup}")
        traceback.print_exc()
    finally:
        if poller is not None:
            poller.stop()
            for t, node, behind in poller.lag_series():
                series["lag"].setdefault(node, []).append((t - T0, behind))
        try:
            target.down()
        except Exception as e:  # noqa: BLE001
            log(f"teardown failed: {e}")
            failed_setup = failed_setup or f"teardown failed: {e}"
    report["duration_s"] = round(time.monotonic() - T0, 1)
    bad = [s for s in report["scenarios"] if s["verdict"] != "pass"]
    ok = not bad and not failed_setup and report["compat"]["status"] in ("pass", "skipped") and \
        len(report["scenarios"]) == len(scenarios)
    report["verdict"] = "PASS" if ok else "FAIL"
    if failed_setup:
        report["error"] = failed_setup
    files = reports.write(report, series, out)
    print()
    print(reports.summary_text(report), end="")
    if failed_setup:
        print(f"error: {failed_setup}")
    print(f"outputs: {', '.join(str(f.relative_to(out.parent) if f.is_relative_to(out.parent) else f) for f in files[:4])}"
          f"{' ...' if len(files) > 4 else ''} (in {out})")
    if args.write_results:
        print(f"wrote {reports.write_results_md(report, out)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
