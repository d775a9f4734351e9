# Sourced by bench/cluster.sh, bench/partition.sh and bench/cluster-100k.sh: a private
# hubbub cluster of $NODES nodes (default 3, at most 9) on loopback, node i on 127.0.0.1$i
# (HTTP :8080, gossip :7946, relay :7947).
#
#   cluster_start [extra serve flags]   start n1..n$NODES, wait until every /readyz is 200
#   single_start [extra serve flags]    one stand-alone node on n1's address instead
#   cluster_stop                        TERM (then KILL) exactly the nodes it started
#   hub_url I / node_ip I / cluster_json I
#
# Needs: bash, curl, python3. Env: BIN (default target/release/hubbub), OUT (logs).
#
# One address per node, like pods: a node's relay client dials without binding a
# source address, so on loopback its connections would leave from 127.0.0.1 and no
# rule keyed on node addresses (bench/partition.sh) would see them. As root with nft
# (and OWN_ADDRS != 0), node i therefore runs as uid 6401i (setpriv) and an nftables
# nat table "hubbubsrc" rewrites the source 127.0.0.1 of the connections it opens to
# its own address; cluster_stop deletes the table.

BIN="${BIN:-target/release/hubbub}"
OUT="${OUT:-bench/out}"
CLUSTER_SECRET="${CLUSTER_SECRET:-bench-cluster-secret}"
NODES="${NODES:-3}"
((NODES >= 1 && NODES <= 9)) || { echo "NODES must be 1..9" >&2; exit 2; }
NODE_IPS=()
for _i in $(seq "$NODES"); do NODE_IPS+=("127.0.0.1$_i"); done
NODE_PIDS=()
SRC_TABLE=hubbubsrc
OWN_ADDRS="${OWN_ADDRS:-1}"

node_ip() { echo "${NODE_IPS[$(($1 - 1))]}"; }
hub_url() { echo "http://$(node_ip "$1"):8080/.well-known/mercure"; }
cluster_json() { curl -fsS --max-time 2 "http://$(node_ip "$1"):8080/cluster"; }
node_pids_csv() { local IFS=,; echo "${NODE_PIDS[*]}"; }

own_addrs() { [[ "$OWN_ADDRS" != 0 && $EUID == 0 ]] && command -v nft >/dev/null && command -v setpriv >/dev/null; }

cluster_start() {
  mkdir -p "$OUT"
  local seeds="" i ip run=()
  for ip in "${NODE_IPS[@]}"; do seeds+="${seeds:+,}$ip:7946"; done
  NODE_PIDS=()
  if own_addrs; then
    nft delete table ip "$SRC_TABLE" 2>/dev/null || true
    local rules=""
    for i in $(seq "$NODES"); do
      rules+="
    meta skuid $((64010 + i)) ip saddr 127.0.0.1 ip daddr 127.0.0.0/8 snat to $(node_ip "$i")"
    done
    nft -f - <<EOF
table ip $SRC_TABLE {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;$rules
  }
}
EOF
  fi
  for i in $(seq "$NODES"); do
    ip="$(node_ip "$i")"
    run=()
    own_addrs && run=(setpriv --reuid=$((64010 + i)) --regid=$((64010 + i)) --clear-groups)
    "${run[@]}" "$BIN" serve --dev --subscriptions=false --listen "$ip:8080" --node-id "n$i" \
      --gossip-listen "$ip:7946" --relay-listen "$ip:7947" \
      --seeds "$seeds" --cluster-secret "$CLUSTER_SECRET" "$@" \
      >"$OUT/cluster-n$i.log" 2>&1 &
    NODE_PIDS+=("$!")
  done
  local deadline=$((SECONDS + 60)) ready
  while :; do
    ready=0
    for i in $(seq "$NODES"); do
      [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$(node_ip "$i"):8080/readyz")" == 200 ]] &&
        ready=$((ready + 1))
    done
    ((ready == NODES)) && break
    if ((SECONDS > deadline)); then
      echo "cluster not ready after 60 s (logs: $OUT/cluster-n*.log)" >&2
      return 1
    fi
    for i in "${!NODE_PIDS[@]}"; do
      kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || { echo "node n$((i + 1)) exited (log: $OUT/cluster-n$((i + 1)).log)" >&2; return 1; }
    done
    sleep 0.2
  done
  # /readyz is per node; also wait until every node has a connected link to every other.
  deadline=$((SECONDS + 30))
  until python3 - "${NODE_IPS[@]}" <<'EOF' 2>/dev/null
import json, sys, urllib.request
ips = sys.argv[1:]
for ip in ips:
    c = json.load(urllib.request.urlopen(f"http://{ip}:8080/cluster", timeout=2))
    links = [m.get("link") for m in c.get("members", [])]
    if links.count("connected") < len(ips) - 1:
        sys.exit(1)
EOF
  do
    ((SECONDS > deadline)) && { echo "members did not converge in 30 s" >&2; return 1; }
    sleep 0.2
  done
}

# One stand-alone node (no cluster flags) on n1's address: the single-node baseline.
single_start() {
  mkdir -p "$OUT"
  "$BIN" serve --dev --subscriptions=false --listen "$(node_ip 1):8080" "$@" >"$OUT/single-n1.log" 2>&1 &
  NODE_PIDS=("$!")
  for _ in $(seq 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$(node_ip 1):8080/readyz")" == 200 ]] && return 0
    sleep 0.1
  done
  echo "single node not ready (log: $OUT/single-n1.log)" >&2
  return 1
}

cluster_stop() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  NODE_PIDS=()
  if [[ $EUID == 0 ]] && command -v nft >/dev/null; then nft delete table ip "$SRC_TABLE" 2>/dev/null || true; fi
}
