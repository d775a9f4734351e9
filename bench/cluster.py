#!/usr/bin/env python3
"""Helpers of bench/cluster.sh and bench/partition.sh (stdlib only, loopback only).

  cluster.py snapshot OUT.json IP...         every node's GET /cluster, with a timestamp
  cluster.py idle BEFORE.json AFTER.json     relay/gossip traffic of an idle cluster (markdown)
  cluster.py run NAME BENCH.json [BEFORE.json AFTER.json [PUB_NODE]]
                                             a bench run: per-hub table, server CPU, relay
                                             bytes per update on the publishing node (markdown)
  cluster.py heal-and-converge TABLE OUT.json IP...
                                             deletes nft table TABLE, then polls every node's
                                             /cluster every POLL_MS (25) ms until all vectors
                                             are equal and cover what any node held at heal
                                             time; writes the timings as JSON
"""
import http.client
import json
import os
import subprocess
import sys
import time


def get_cluster(conn):
    conn.request("GET", "/cluster")
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"/cluster answered {resp.status}")
    return json.loads(body)


def connect(ip):
    return http.client.HTTPConnection(ip, 8080, timeout=2)


def snapshot(out, ips):
    nodes = {}
    for ip in ips:
        c = get_cluster(connect(ip))
        nodes[c["node"]] = c
    snap = {"t": time.time(), "ips": ips, "nodes": nodes}
    with open(out, "w") as f:
        json.dump(snap, f, indent=1)
    return snap


def load(path):
    with open(path) as f:
        return json.load(f)


def delta(before, after, node, key):
    return after["nodes"][node]["stats"][key] - before["nodes"][node]["stats"][key]


def fmt_int(n):
    return f"{n:,.0f}"


def ms(us):
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us} µs"


def idle_report(before_path, after_path, counters_path=None):
    b, a = load(before_path), load(after_path)
    dt = a["t"] - b["t"]
    lines = [f"Idle 3-node cluster, {dt:.1f} s:", "", "| node | relay bytes out/s | relay bytes in/s | relay updates out |", "|---|---|---|---|"]
    for node in sorted(a["nodes"]):
        lines.append(
            f"| {node} | {fmt_int(delta(b, a, node, 'relay_bytes_out') / dt)} | "
            f"{fmt_int(delta(b, a, node, 'relay_bytes_in') / dt)} | {delta(b, a, node, 'relay_updates_out')} |"
        )
    if counters_path and os.path.exists(counters_path):
        c = load(counters_path)
        lines += ["", f"Loopback packets counted by nftables over {c['seconds']:.1f} s (all 3 nodes, headers included):", "",
                  "| traffic | packets/s | bytes/s |", "|---|---|---|"]
        for name, v in c["counters"].items():
            lines.append(f"| {name} | {fmt_int(v['packets'] / c['seconds'])} | {fmt_int(v['bytes'] / c['seconds'])} |")
    return "\n".join(lines)


def run_report(name, bench_path, before_path=None, after_path=None, pub_node="n1"):
    r = load(bench_path)
    b, a = (load(before_path), load(after_path)) if before_path else (None, None)
    p, d, lat = r["plan"], r["delivery"], r["latency"]
    out = [f"### {name}", ""]
    out.append(
        f"{p['subscribers']:,} subscribers over {len(p.get('hubs') or [p['sub_url']])} hub(s), {p['topics']} topic(s), "
        f"{p['rate']:.0f} publishes/s offered by {p['publishers']} publisher(s) to {', '.join(p.get('publish_hubs') or [p['pub_url']])}, "
        f"payload {p['payload_bytes']} B, {r['window_s']:.1f} s measured after {p['warmup_s']:.0f} s warmup."
    )
    out += ["", "| hub | subscribers | deliveries/s (expected) | p50 | p90 | p99 | p99.9 | max | lost / dup / reordered |", "|---|---|---|---|---|---|---|---|---|"]
    for h in r.get("per_hub", []):
        l = h["latency"]
        tag = " (publish)" if h["publish"] else ""
        out.append(
            f"| {h['url'].split('//')[1].split('/')[0]}{tag} | {h['subscribers']:,} | {fmt_int(h['per_second'])} ({fmt_int(h['expected_per_second'])}) | "
            f"{ms(l['p50_us'])} | {ms(l['p90_us'])} | {ms(l['p99_us'])} | {ms(l['p999_us'])} | {ms(l['max_us'])} | "
            f"{h['lost']} / {h['duplicated']} / {h['reordered']} |"
        )
    out.append(
        f"| **all** | {r['connect']['requested']:,} | {fmt_int(d['per_second'])} ({fmt_int(d['expected_per_second'])}) | "
        f"{ms(lat['p50_us'])} | {ms(lat['p90_us'])} | {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {ms(lat['max_us'])} | "
        f"{d['lost']} / {d['duplicated']} / {d['reordered']} |"
    )
    pb = r["publish"]
    out += ["", f"- publishes: offered {pb['offered_rate']:.0f}/s, achieved {pb['achieved_rate']:.1f}/s, errors {pb['errors'] or 'none'}, "
            f"round trip p50 {ms(pb['rtt']['p50_us'])} / p99 {ms(pb['rtt']['p99_us'])}"]
    drops = d.get("disconnects") or {}
    out.append(f"- connected {r['connect']['connected']:,} / {r['connect']['requested']:,}, dropped by server: {drops or 'none'}")
    s = r.get("server")
    if s:
        pids = s.get("per_pid", [])
        per = ", ".join(f"n{i + 1} {pp['cpu_window_percent']:.0f}%" for i, pp in enumerate(pids))
        out.append(f"- server CPU in window: {s['cpu_window_percent']:.0f}% of a core"
                   + (f" for the {len(pids)} nodes ({per})" if len(pids) > 1 else "")
                   + f"; RSS at end {s['rss_end_bytes'] / 1048576:.0f} MiB total")
    c = r["client"]
    total_client = c["cpu_parent_s"] + c["cpu_workers_s"]
    span = p["warmup_s"] + r["window_s"] + p["drain_s"]
    out.append(f"- bench client CPU (whole run, {r['connect']['seconds'] + span:.0f} s or so): {total_client:.1f} s "
               f"(parent/publishers {c['cpu_parent_s']:.1f} s, subscriber workers {c['cpu_workers_s']:.1f} s)")
    if r.get("problems"):
        out.append(f"- problems: {r['problems']}")
    if a is None:
        return "\n".join(out)
    # Relay overhead on the publishing node.
    dt = a["t"] - b["t"]
    db = delta(b, a, pub_node, "relay_bytes_out")
    du = delta(b, a, pub_node, "relay_updates_out")
    idle_rate = float(os.environ.get("IDLE_RELAY_BYTES_PER_S", "0") or 0)
    if du > 0:
        raw = db / du
        out.append(f"- relay on {pub_node} over {dt:.1f} s: {fmt_int(db)} bytes out for {fmt_int(du)} relayed updates (one per update per link) "
                   f"= **{raw:.1f} bytes per relayed update**" + (
                       f"; minus the idle watermark stream ({fmt_int(idle_rate)} B/s x {dt:.1f} s): **{(db - idle_rate * dt) / du:.1f}**"
                       if idle_rate else ""))
    for node in sorted(a["nodes"]):
        st = {k: delta(b, a, node, k) for k in ("released", "late", "lost", "duplicates", "repaired")}
        out.append(f"- {node}: released {st['released']}, late {st['late']}, lost {st['lost']}, duplicates {st['duplicates']}, repaired {st['repaired']}")
    return "\n".join(out)


def heal_and_converge(table, out, ips):
    poll = float(os.environ.get("POLL_MS", "25")) / 1000
    timeout = float(os.environ.get("CONVERGE_TIMEOUT", "60"))
    conns = {ip: connect(ip) for ip in ips}

    def poll_all():
        res = {}
        for ip in ips:
            try:
                res[ip] = get_cluster(conns[ip])
            except (OSError, http.client.HTTPException, RuntimeError):
                conns[ip].close()
                conns[ip] = connect(ip)
                res[ip] = get_cluster(conns[ip])
        return res

    at_heal_before = poll_all()
    # What the partition dropped (rules with "meta l4proto tcp" vs the rest).
    dropped = {"tcp": 0, "other": 0}
    listing = subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True)
    for item in json.loads(listing.stdout or "{}").get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        is_tcp = any("l4proto" in json.dumps(e) for e in rule["expr"] if "match" in e)
        dropped["tcp" if is_tcp else "other"] += packets
    subprocess.run(["nft", "delete", "table", "inet", table], check=True)
    t_heal = time.monotonic()
    # Everything published: what each origin's own node (or anyone) held when the partition healed.
    target = {}
    for c in at_heal_before.values():
        for origin, seq in c["vector"].items():
            target[origin] = max(target.get(origin, 0), seq)
    polls, t_vectors, t_members, last = 0, None, None, None
    while time.monotonic() - t_heal < timeout:
        res = poll_all()
        polls += 1
        now = time.monotonic() - t_heal
        vecs = [c["vector"] for c in res.values()]
        if t_vectors is None and all(v == vecs[0] for v in vecs) and all(vecs[0].get(o, 0) >= s for o, s in target.items()):
            t_vectors = now
        # Each node's view of its peers' vectors (gossiped) agreeing as well.
        if t_vectors is not None and t_members is None:
            views = [m["vector"] for c in res.values() for m in c["members"]]
            if all(v == vecs[0] for v in views):
                t_members = now
        last = res
        if t_vectors is not None and t_members is not None:
            break
        time.sleep(poll)
    result = {
        "poll_ms": poll * 1000,
        "polls": polls,
        "target": target,
        "converged_s": t_vectors,
        "members_view_converged_s": t_members,
        "dropped": dropped,
        "vectors_at_heal": {c["node"]: c["vector"] for c in at_heal_before.values()},
        "vectors_at_end": {c["node"]: c["vector"] for c in (last or {}).values()},
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("converged_s", "members_view_converged_s", "polls")}))
    return 0 if t_vectors is not None else 1


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "snapshot":
        snapshot(argv[2], argv[3:])
    elif cmd == "idle":
        print(idle_report(argv[2], argv[3], argv[4] if len(argv) > 4 else None))
    elif cmd == "run":
        print(run_report(*argv[2:7]))
    elif cmd == "heal-and-converge":
        return heal_and_converge(argv[2], argv[3], argv[4:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
