#!/usr/bin/env bash
# hubbub vs nginx+nchan on the same scenarios; writes bench/RESULTS.md.
#
#   bench/compare.sh                 full run (about 15 minutes)
#   QUICK=1 bench/compare.sh         short durations, smoke-sized check of the pipeline
#
# Env knobs:
#   DURATION   measured window per throughput scenario, s      (default 20; QUICK: 3)
#   WARMUP     publishing before the window, s                 (default 3;  QUICK: 1)
#   IDLE_HOLD  how long idle subscribers are held, s           (default 5;  QUICK: 1)
#   DRAIN      time after publishing stops before counting losses, s (default 10; QUICK: 3):
#              a saturated server delivers seconds late; a short drain would count that as loss
#   SCENARIOS  space-separated subset of scenario ids (see below), default all
#   TARGETS    "hubbub nchan" (default) or one of them
#   SKIP_BUILD=1  use the existing target/release/hubbub
#
# Every server is started fresh for every scenario, so the "before" RSS is a clean
# baseline. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
  DURATION="${DURATION:-3}" WARMUP="${WARMUP:-1}" IDLE_HOLD="${IDLE_HOLD:-1}" DRAIN="${DRAIN:-3}"
else
  DURATION="${DURATION:-20}" WARMUP="${WARMUP:-3}" IDLE_HOLD="${IDLE_HOLD:-5}" DRAIN="${DRAIN:-10}"
fi
TARGETS="${TARGETS:-hubbub nchan}"
OUT=bench/out
BIN=target/release/hubbub
HUB_LISTEN=127.0.0.1:8080
HUB_URL="http://$HUB_LISTEN/.well-known/mercure"
mkdir -p "$OUT"

# id | what it shows | bench arguments
SCENARIO_TABLE="
idle-1k|1,000 idle subscribers (memory per subscriber)|--subscribers 1000 --rate 0 --duration $IDLE_HOLD
idle-10k|10,000 idle subscribers (memory per subscriber)|--subscribers 10000 --rate 0 --duration $IDLE_HOLD
idle-19k|19,000 idle subscribers (memory per subscriber)|--subscribers 19000 --rate 0 --duration $IDLE_HOLD
light-1k|1,000 subscribers on one topic, 10 publishes/s (the box not saturated: the hub's own path)|--subscribers 1000 --topics 1 --rate 10 --publishers 2 --duration $DURATION --warmup $WARMUP --drain $DRAIN
fanout-10|10,000 subscribers on one topic, 10 publishes/s|--subscribers 10000 --topics 1 --rate 10 --publishers 2 --duration $DURATION --warmup $WARMUP --drain $DRAIN
fanout-100|10,000 subscribers on one topic, 100 publishes/s|--subscribers 10000 --topics 1 --rate 100 --publishers 8 --duration $DURATION --warmup $WARMUP --drain $DRAIN
fanout-1000|10,000 subscribers on one topic, 1,000 publishes/s offered|--subscribers 10000 --topics 1 --rate 1000 --publishers 16 --duration $DURATION --warmup $WARMUP --drain $DRAIN
seq-100|10,000 subscribers on one topic, one sequential publisher offering 100/s (publish round trip under fan-out)|--subscribers 10000 --topics 1 --rate 100 --publishers 1 --duration $DURATION --warmup $WARMUP --drain $DRAIN
seq-1000|10,000 subscribers on one topic, one sequential publisher offering 1,000/s (what one backend gets through)|--subscribers 10000 --topics 1 --rate 1000 --publishers 1 --duration $DURATION --warmup $WARMUP --drain $DRAIN
topics-1000|10,000 subscribers over 1,000 topics, 1,000 publishes/s|--subscribers 10000 --topics 1000 --rate 1000 --publishers 8 --duration $DURATION --warmup $WARMUP --drain $DRAIN
"
SCENARIOS_GIVEN="${SCENARIOS:-}"
SCENARIOS="${SCENARIOS:-$(echo "$SCENARIO_TABLE" | awk -F'|' 'NF {print $1}' | tr '\n' ' ')}"

HUB_PID=""
cleanup() {
  stop_hubbub
  bench/nchan.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

wait_port() { # host port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1:$2" >&2
  return 1
}

start_hubbub() {
  "$BIN" serve --dev --subscriptions=false --listen "$HUB_LISTEN" >"$OUT/hubbub-serve.log" 2>&1 &
  HUB_PID=$!
  wait_port 127.0.0.1 8080
}

stop_hubbub() {
  [[ -n "$HUB_PID" ]] || return 0
  kill -TERM "$HUB_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$HUB_PID" 2>/dev/null || true
  wait "$HUB_PID" 2>/dev/null || true
  HUB_PID=""
}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release -p hubbub
fi
[[ " $TARGETS " == *" nchan "* ]] && bench/nchan.sh stop >/dev/null 2>&1 || true

# A subset run keeps the other scenarios' results (and their commands).
[[ -n "${SCENARIOS_GIVEN:-}" ]] || : >"$OUT/commands.txt"
for id in $SCENARIOS; do
  line="$(echo "$SCENARIO_TABLE" | grep "^$id|")" || { echo "unknown scenario $id" >&2; exit 2; }
  args="$(echo "$line" | cut -d'|' -f3)"
  for target in $TARGETS; do
    echo "== $id on $target: $args" >&2
    if [[ "$target" == hubbub ]]; then
      start_hubbub
      pids="$HUB_PID"
      target_args=(--target hubbub --hub "$HUB_URL")
    else
      bench/nchan.sh start >&2
      pids="$(bench/nchan.sh pids | xargs | tr ' ' ',')"
      target_args=(--target nchan)
    fi
    # shellcheck disable=SC2086 # $args is a list of words on purpose
    cmd=("$BIN" bench "${target_args[@]}" $args --server-pid "$pids" --json-out "$OUT/$id-$target.json")
    echo "${cmd[*]}" | sed "s#--server-pid [0-9,]*#--server-pid <pid>#" >>"$OUT/commands.txt"
    "${cmd[@]}" 2>"$OUT/$id-$target.progress" | tee "$OUT/$id-$target.summary" || echo "(bench exited $?)" >&2
    if [[ "$target" == hubbub ]]; then stop_hubbub; else bench/nchan.sh stop >&2; fi
    sleep 1
  done
done

python3 bench/results.py "$OUT" "$SCENARIO_TABLE" >bench/RESULTS.md
echo "wrote bench/RESULTS.md" >&2
