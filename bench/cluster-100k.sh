#!/usr/bin/env bash
# The bench issue's cluster target: 100,000 subscribers on a 6-node cluster on this
# one machine, every update delivered once. Nodes n1..n6 on 127.0.0.11-16 (see
# bench/cluster-lib.sh), SUBS subscribers spread evenly (subscriber i on node i % 6),
# publishers sending to every node in turn, so each update crosses the relay to the
# five other nodes. Exits non-zero if anything is lost, duplicated or reordered.
#
#   bench/cluster-100k.sh                   100k subscribers, 1 publish/s for 30 s
#   SUBS=30000 RATE=2 bench/cluster-100k.sh smaller / faster
#
# Env knobs: NODES (6), SUBS (100000), RATE (1 publish/s; every publish is SUBS
# deliveries, and on 2 shared cores ~100k deliveries/s is the whole machine), DURATION
# (30), WARMUP (3), DRAIN (30), CONNECT_RATE (5000/s), SKIP_BUILD=1, BIN, OUT.
#
# Limits on this kind of machine: 20,000 open files per process, so each node holds
# at most ~19,900 sockets (16,667 subscribers + links here) and the client spreads
# its subscribers over one worker process per ~15,000 and over several loopback
# source addresses (the bench's defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
export NODES="${NODES:-6}"
SUBS="${SUBS:-100000}" RATE="${RATE:-1}" DURATION="${DURATION:-30}" WARMUP="${WARMUP:-3}"
DRAIN="${DRAIN:-30}" CONNECT_RATE="${CONNECT_RATE:-5000}"
# shellcheck source=bench/cluster-lib.sh
source bench/cluster-lib.sh
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p hubbub
trap cluster_stop EXIT

cluster_start
hubs=() pubs=()
for i in $(seq "$NODES"); do
  hubs+=(--hub "$(hub_url "$i")")
  pubs+=(--publish-hub "$(hub_url "$i")")
done
report="$OUT/cluster-100k.json"
status=0
"$BIN" bench "${hubs[@]}" "${pubs[@]}" --subscribers "$SUBS" --topics 1 --rate "$RATE" \
  --publishers "$NODES" --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" \
  --connect-rate "$CONNECT_RATE" --server-pid "$(node_pids_csv)" --json-out "$report" \
  --fail-on-loss | tee "$OUT/cluster-100k.summary" || status=$?
echo
echo "== /cluster after the run: every node's version vector must be the same"
python3 - "${NODE_IPS[@]}" <<'PY' | tee -a "$OUT/cluster-100k.summary" || status=1
import json, sys, urllib.request
vectors = {}
for ip in sys.argv[1:]:
    c = json.load(urllib.request.urlopen(f"http://{ip}:8080/cluster", timeout=5))
    s = c["stats"]
    vectors[c["node"]] = c["vector"]
    print(f'{c["node"]}: subscribers {c["subscribers"]}, released {s["released"]}, late {s["late"]}, '
          f'lost {s["lost"]}, duplicates dropped {s["duplicates"]}, vector {json.dumps(c["vector"], sort_keys=True)}')
same = len({json.dumps(v, sort_keys=True) for v in vectors.values()}) == 1
print("vectors identical on all nodes:", "yes" if same else "NO")
sys.exit(0 if same else 1)
PY
echo "report: $report"
exit "$status"
