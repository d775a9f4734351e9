#!/usr/bin/env bash
# hubbub as a 3-node cluster on loopback (127.0.0.11-13, see bench/cluster-lib.sh);
# prints a markdown summary and keeps the raw reports in bench/out/cluster-*.
#
#   bench/cluster.sh                     every scenario below (about 6 minutes)
#   SCENARIOS="latency" bench/cluster.sh one of them
#   QUICK=1 bench/cluster.sh             short durations, smoke-sized
#
# Scenarios (each on a fresh cluster):
#   idle     idle cluster for IDLE_SECONDS (10): relay watermark and gossip traffic;
#            as root with nft installed, also packets/s counted by a temporary
#            nftables table "hubbubcount" (deleted on exit)
#   latency  publish-to-delivery latency, local vs remote node: LAT_SUBS (300) subscribers
#            on n1 and as many on n2, one topic, LAT_RATE (1000) publishes/s offered to n1
#            by 16 publishers; relay bytes per update on n1 from /cluster before/after
#   latency-1node  baseline for latency: LAT_SUBS subscribers on one stand-alone node,
#            same rate (what the cluster adds to the local path)
#   fanout   the 3-node scenario of the bench issue: FANOUT_SUBS (3000) subscribers on
#            every node, one topic, FANOUT_RATE (100) publishes/s offered to n1
#   fanout-1node  baseline for fanout: the same 3 x FANOUT_SUBS subscribers and rate on
#            one stand-alone node (same machine, same client)
#
# Env knobs: DURATION (20; QUICK 3), WARMUP (3; QUICK 1), PAYLOAD (64), SKIP_BUILD=1,
# BIN (target/release/hubbub), OUT (bench/out).
#
# The client runs one subscriber worker process per hub (--processes): a single worker
# thread competing with three server processes for 2 cores gets too small a CPU share,
# falls behind, and its backlog shows up as seconds of "latency" (and, past the drain,
# as loss) that is the client's, not the cluster's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
  DURATION="${DURATION:-3}" WARMUP="${WARMUP:-1}" IDLE_SECONDS="${IDLE_SECONDS:-3}"
  LAT_SUBS="${LAT_SUBS:-50}" FANOUT_SUBS="${FANOUT_SUBS:-300}"
else
  DURATION="${DURATION:-20}" WARMUP="${WARMUP:-3}" IDLE_SECONDS="${IDLE_SECONDS:-10}"
  LAT_SUBS="${LAT_SUBS:-300}" FANOUT_SUBS="${FANOUT_SUBS:-3000}"
fi
LAT_RATE="${LAT_RATE:-1000}" FANOUT_RATE="${FANOUT_RATE:-100}" PAYLOAD="${PAYLOAD:-64}"
SCENARIOS="${SCENARIOS:-idle latency latency-1node fanout fanout-1node}"
# shellcheck source=bench/cluster-lib.sh
source bench/cluster-lib.sh
mkdir -p "$OUT"
SUMMARY="$OUT/cluster-summary.md"

COUNT_TABLE=hubbubcount
cleanup() {
  nft delete table inet "$COUNT_TABLE" 2>/dev/null || true
  cluster_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p hubbub
fi

snapshot() { python3 bench/cluster.py snapshot "$1" "${NODE_IPS[@]}"; }
# utime + stime of a process, in USER_HZ (100/s) ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Relay (7947) and gossip (7946) packets on loopback, counted once each at output.
counters_start() {
  nft -f - <<EOF
table inet $COUNT_TABLE {
  counter relay_to_listener {}
  counter relay_from_listener {}
  counter gossip {}
  chain out {
    type filter hook output priority 0; policy accept;
    tcp dport 7947 counter name relay_to_listener
    tcp sport 7947 counter name relay_from_listener
    udp dport 7946 counter name gossip
  }
}
EOF
}

counters_read() { # seconds out.json
  nft -j list counters table inet "$COUNT_TABLE" | python3 -c '
import json, sys
seconds = float(sys.argv[1])
out = {"seconds": seconds, "counters": {}}
names = {"relay_to_listener": "relay TCP to :7947 (updates, watermarks)",
         "relay_from_listener": "relay TCP from :7947 (ACKs, pull answers)",
         "gossip": "gossip UDP :7946"}
for item in json.load(sys.stdin)["nftables"]:
    c = item.get("counter")
    if c:
        out["counters"][names.get(c["name"], c["name"])] = {"packets": c["packets"], "bytes": c["bytes"]}
json.dump(out, open(sys.argv[2], "w"), indent=1)' "$1" "$2"
  nft delete table inet "$COUNT_TABLE"
}

# Relay packets on the wire (both directions, ACKs included) per accepted publish,
# over the whole bench run (settle, warmup, window, drain; idle keepalives included).
packets_per_update() { # counters.json bench.json
  python3 - "$1" "$2" <<'PY'
import json, sys
counters = json.load(open(sys.argv[1]))["counters"]
report = json.load(open(sys.argv[2]))
relay = sum(v["packets"] for k, v in counters.items() if k.startswith("relay"))
accepted = report["publish"]["ok_total"]
print(f"\nRelay packets during the run (nftables, all 3 nodes, both directions, ACKs included): "
      f"{relay:,} for {accepted:,} accepted publishes = **{relay / max(accepted, 1):.2f} per update**")
PY
}

run_bench() { # name args...
  local name="$1"
  shift
  local cmd=("$BIN" bench --target hubbub "$@" --payload "$PAYLOAD" --server-pid "$(node_pids_csv)"
    --json-out "$OUT/cluster-$name.json")
  echo "${cmd[*]}" | sed "s#--server-pid [0-9,]*#--server-pid <node pids>#" >>"$OUT/cluster-commands.txt"
  "${cmd[@]}" 2>"$OUT/cluster-$name.progress" | tee "$OUT/cluster-$name.summary" >&2 ||
    echo "(bench exited $?)" >&2
}

{
  echo "# 3-node cluster runs"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' + uncommitted changes')"
  echo "- load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} >"$SUMMARY"
: >"$OUT/cluster-commands.txt"

for scenario in $SCENARIOS; do
  echo "== $scenario" >&2
  if [[ "$scenario" == *-1node ]]; then single_start; else cluster_start; fi
  case "$scenario" in
    idle)
      sleep 2
      have_nft=0
      if [[ $EUID == 0 ]] && command -v nft >/dev/null; then counters_start && have_nft=1; fi
      snapshot "$OUT/cluster-idle-before.json"
      cpu0=(); for pid in "${NODE_PIDS[@]}"; do cpu0+=("$(cpu_ticks "$pid")"); done
      sleep "$IDLE_SECONDS"
      cpu1=(); for pid in "${NODE_PIDS[@]}"; do cpu1+=("$(cpu_ticks "$pid")"); done
      snapshot "$OUT/cluster-idle-after.json"
      rm -f "$OUT/cluster-idle-counters.json"
      ((have_nft)) && counters_read "$IDLE_SECONDS" "$OUT/cluster-idle-counters.json"
      python3 bench/cluster.py idle "$OUT/cluster-idle-before.json" "$OUT/cluster-idle-after.json" \
        "$OUT/cluster-idle-counters.json" >>"$SUMMARY"
      {
        echo
        printf 'Idle CPU over %s s (USER_HZ ticks of /proc/PID/stat):' "$IDLE_SECONDS"
        for i in 0 1 2; do
          printf ' n%d %s%% of a core;' $((i + 1)) "$(python3 -c "print(f'{(${cpu1[$i]} - ${cpu0[$i]}) / $IDLE_SECONDS:.1f}')")"
        done
        echo
      } >>"$SUMMARY"
      ;;
    latency)
      # The idle watermark stream of n1, to subtract from the relay bytes of the run.
      sleep 1
      snapshot "$OUT/cluster-latency-idle0.json"
      sleep 3
      snapshot "$OUT/cluster-latency-before.json"
      IDLE_RELAY_BYTES_PER_S="$(python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
print((b["nodes"]["n1"]["stats"]["relay_bytes_out"] - a["nodes"]["n1"]["stats"]["relay_bytes_out"]) / (b["t"] - a["t"]))' \
        "$OUT/cluster-latency-idle0.json" "$OUT/cluster-latency-before.json")"
      have_nft=0
      if [[ $EUID == 0 ]] && command -v nft >/dev/null; then counters_start && have_nft=1; fi
      run_bench latency --hub "$(hub_url 1)" --hub "$(hub_url 2)" --subscribers $((2 * LAT_SUBS)) \
        --topics 1 --rate "$LAT_RATE" --publishers 16 --duration "$DURATION" --warmup "$WARMUP" --processes 2
      snapshot "$OUT/cluster-latency-after.json"
      rm -f "$OUT/cluster-latency-counters.json"
      if ((have_nft)); then
        counters_read 0 "$OUT/cluster-latency-counters.json"
        packets_per_update "$OUT/cluster-latency-counters.json" "$OUT/cluster-latency.json" >>"$SUMMARY"
      fi
      IDLE_RELAY_BYTES_PER_S="$IDLE_RELAY_BYTES_PER_S" python3 bench/cluster.py run \
        "latency: local (n1) vs remote (n2) subscribers, publishing to n1" "$OUT/cluster-latency.json" \
        "$OUT/cluster-latency-before.json" "$OUT/cluster-latency-after.json" n1 >>"$SUMMARY"
      ;;
    fanout)
      snapshot "$OUT/cluster-fanout-before.json"
      run_bench fanout --hub "$(hub_url 1)" --hub "$(hub_url 2)" --hub "$(hub_url 3)" \
        --subscribers $((3 * FANOUT_SUBS)) --topics 1 --rate "$FANOUT_RATE" --publishers 8 \
        --duration "$DURATION" --warmup "$WARMUP" --processes 3
      snapshot "$OUT/cluster-fanout-after.json"
      python3 bench/cluster.py run "fanout: subscribers on every node, publishing to n1" \
        "$OUT/cluster-fanout.json" "$OUT/cluster-fanout-before.json" "$OUT/cluster-fanout-after.json" n1 >>"$SUMMARY"
      ;;
    latency-1node)
      run_bench latency-1node --hub "$(hub_url 1)" --subscribers "$LAT_SUBS" --topics 1 \
        --rate "$LAT_RATE" --publishers 16 --duration "$DURATION" --warmup "$WARMUP" --processes 2
      python3 bench/cluster.py run "latency baseline: $LAT_SUBS subscribers on one stand-alone node" \
        "$OUT/cluster-latency-1node.json" >>"$SUMMARY"
      ;;
    fanout-1node)
      run_bench fanout-1node --hub "$(hub_url 1)" --subscribers $((3 * FANOUT_SUBS)) --topics 1 \
        --rate "$FANOUT_RATE" --publishers 8 --duration "$DURATION" --warmup "$WARMUP" --processes 3
      python3 bench/cluster.py run "fanout baseline: the same subscribers on one stand-alone node" \
        "$OUT/cluster-fanout-1node.json" >>"$SUMMARY"
      ;;
    *)
      echo "unknown scenario $scenario" >&2
      exit 2
      ;;
  esac
  printf '\n' >>"$SUMMARY"
  cluster_stop
  sleep 1
done
{
  echo "- load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "Commands:"
  echo
  echo '```'
  cat "$OUT/cluster-commands.txt"
  echo '```'
} >>"$SUMMARY"
cat "$SUMMARY"
