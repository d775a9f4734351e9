#!/usr/bin/env bash
# Partition heal: how long until every node's version vector converges, and do
# subscribers on both sides get everything (late, but once)?
#
#   sudo bench/partition.sh          (root: it drives nftables; loopback only)
#
# 1. Starts a 3-node cluster on 127.0.0.11-13 (bench/cluster-lib.sh), each node with its
#    own source address (uid + SNAT, see there) so the relay links are cut too;
#    OWN_ADDRS=0 leaves relay connections on 127.0.0.1, which cuts gossip only.
# 2. Cuts n1 off from n2 and n3: nftables table inet $TABLE (default hubbubpart) with a
#    chain per hook in HOOKS (default "input"; "input output" for both), priority 0,
#    dropping 127.0.0.11 <-> .12/.13 both ways. The table is deleted on every exit
#    path (trap). Keep --source-ips below 10: the bench's 127.0.0.2.. sources must not
#    reach 127.0.0.11.
# 3. Runs `hubbub bench` with SUBS subscribers on n1 and as many on n2 (one topic),
#    2 publishers: one to n1, one to n2, RATE_PER_SIDE publishes/s each, for HOLD
#    seconds (the bench's measured window), all of it inside the partition.
# 4. The moment the bench reports "phase drain" (publishing stopped), heals (deletes
#    the table) and polls every node's /cluster every POLL_MS ms until all vectors are
#    equal and cover what any node held at heal time (bench/cluster.py heal-and-converge).
# 5. Waits for the bench's drain and checks: every subscriber on both sides got every
#    accepted publish of both sides exactly once (lost 0, duplicated 0), and the
#    nodes' stats.lost stayed 0. Exit status 0 only if all of that holds.
#
# Env: SUBS (200), RATE_PER_SIDE (50), HOLD (5), DRAIN (15), POLL_MS (25), HOOKS, TABLE,
# SKIP_BUILD=1, BIN (target/release/hubbub), OUT (bench/out).
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS="${SUBS:-200}" RATE_PER_SIDE="${RATE_PER_SIDE:-50}" HOLD="${HOLD:-5}" DRAIN="${DRAIN:-15}"
TABLE="${TABLE:-hubbubpart}"
# "input": packets vanish on arrival, the sender sees nothing (like a real network
# partition: TCP retransmits with backoff). "output" drops at send time, where the
# kernel also fails the send (EPERM) so the sender knows at once.
HOOKS="${HOOKS:-input}"
export POLL_MS="${POLL_MS:-25}" HOOKS
# shellcheck source=bench/cluster-lib.sh
source bench/cluster-lib.sh
mkdir -p "$OUT"

[[ $EUID == 0 ]] || { echo "partition.sh needs root (nftables)" >&2; exit 2; }
command -v nft >/dev/null || { echo "nft not found: apt-get install nftables" >&2; exit 2; }

BENCH_PID=""
cleanup() {
  nft delete table inet "$TABLE" 2>/dev/null || true
  if [[ -n "$BENCH_PID" ]]; then kill -TERM "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
  cluster_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p hubbub
fi
nft delete table inet "$TABLE" 2>/dev/null || true

partition() {
  local a b hook rules=""
  a="$(node_ip 1)"
  b="{ $(node_ip 2), $(node_ip 3) }"
  for hook in $HOOKS; do
    rules+="
  chain $hook {
    type filter hook $hook priority 0; policy accept;
    ip saddr $a ip daddr $b meta l4proto tcp counter drop
    ip saddr $b ip daddr $a meta l4proto tcp counter drop
    ip saddr $a ip daddr $b counter drop
    ip saddr $b ip daddr $a counter drop
  }"
  done
  nft -f - <<EOF
table inet $TABLE {$rules
}
EOF
}

echo "== starting the cluster" >&2
cluster_start
python3 bench/cluster.py snapshot "$OUT/partition-before.json" "${NODE_IPS[@]}"

echo "== partition: n1 | n2 n3" >&2
partition
t_cut=$(date +%s.%N)

progress="$OUT/partition-bench.progress"
# Emptied here, not only by the redirection below: that happens in the background
# job, and the wait loop must not find the previous run's "phase drain" first.
: >"$progress"
"$BIN" bench --target hubbub --hub "$(hub_url 1)" --hub "$(hub_url 2)" \
  --publish-hub "$(hub_url 1)" --publish-hub "$(hub_url 2)" --publishers 2 \
  --rate $((2 * RATE_PER_SIDE)) --subscribers $((2 * SUBS)) --topics 1 \
  --warmup 0 --duration "$HOLD" --drain "$DRAIN" --settle 1 --server-pid "$(node_pids_csv)" \
  --json-out "$OUT/partition-bench.json" >"$OUT/partition-bench.summary" 2>"$progress" &
BENCH_PID=$!

# Heal as soon as publishing stops (the bench prints "phase drain" at once).
until grep -q "phase drain" "$progress" 2>/dev/null; do
  kill -0 "$BENCH_PID" 2>/dev/null || { echo "bench ended early:" >&2; cat "$progress" "$OUT/partition-bench.summary" >&2; exit 1; }
  sleep 0.01
done
sleep 0.1 # the last in-flight publish answers (a publish never waits for the fan-out)
t_heal=$(date +%s.%N)
echo "== heal after $(python3 -c "print(f'{$t_heal - $t_cut:.1f}')") s of partition" >&2
converge_rc=0
python3 bench/cluster.py heal-and-converge "$TABLE" "$OUT/partition-converge.json" "${NODE_IPS[@]}" || converge_rc=$?

bench_rc=0
wait "$BENCH_PID" || bench_rc=$?
BENCH_PID=""
python3 bench/cluster.py snapshot "$OUT/partition-after.json" "${NODE_IPS[@]}"

python3 - "$OUT" "$t_cut" "$t_heal" "$SUBS" "$HOLD" "$RATE_PER_SIDE" "$bench_rc" <<'EOF'
import json, os, sys
out, t_cut, t_heal, subs, hold, rate, bench_rc = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])
ld = lambda n: json.load(open(f"{out}/partition-{n}.json"))
b, a, conv, r = ld("before"), ld("after"), ld("converge"), ld("bench")
ok = True
print(f"partition n1 | n2,n3 (nft hooks: {os.environ.get('HOOKS')}) for {t_heal - t_cut:.1f} s; {hold} s of publishing inside it, {rate}/s to n1 and {rate}/s to n2")
c = conv["converged_s"]
m = conv["members_view_converged_s"]
dropped = conv.get("dropped", {})
print(f"dropped while partitioned: {dropped.get('tcp', 0)} TCP packets (relay), {dropped.get('other', 0)} other (gossip UDP)")
print(f"vectors equal and complete on all 3 nodes {c * 1000:.0f} ms after the heal" if c is not None else "vectors did NOT converge")
print(f"  (members' gossiped vectors agreeing too: {m * 1000:.0f} ms; polled every {conv['poll_ms']:.0f} ms, {conv['polls']} polls)" if m is not None else "  (members' gossiped vectors did not agree in time)")
ok &= c is not None
published = sum(conv["target"][o] - b["nodes"]["n1"]["vector"].get(o, 0) for o in conv["target"])
pb = r["publish"]
print(f"published: {pb['ok_total']} accepted by the bench ({pb['errors'] or 'no errors'}); the vectors grew by {published}")
ok &= published == pb["ok_total"] and not pb["errors"]
for node in sorted(a["nodes"]):
    d = {k: a["nodes"][node]["stats"][k] - b["nodes"][node]["stats"][k] for k in ("released", "late", "lost", "duplicates", "repaired")}
    print(f"{node}: released {d['released']}, late {d['late']}, lost {d['lost']}, duplicates {d['duplicates']}, repaired {d['repaired']}")
    ok &= d["lost"] == 0 and d["released"] == pb["ok_total"]
for h in r["per_hub"]:
    want = pb["ok_total"] * h["subscribers"]
    print(f"subscribers on {h['url'].split('//')[1].split('/')[0]}: {h['subscribers']} ({h['connected_at_end']} at end), "
          f"received {h['total']} of {want}, lost {h['lost']}, duplicated {h['duplicated']}, reordered {h['reordered']}")
    ok &= h["total"] == want and h["lost"] == 0 and h["duplicated"] == 0 and h["connected_at_end"] == h["subscribers"]
drops = r["delivery"]["disconnects"]
if drops:
    print(f"streams dropped by a server: {drops}")
    ok = False
print("PASS" if ok and bench_rc == 0 else f"FAIL (bench exit {bench_rc})")
sys.exit(0 if ok and bench_rc == 0 else 1)
EOF
