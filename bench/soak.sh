#!/usr/bin/env bash
# Soak: steady publishing with subscriber churn for an hour (by default), server RSS
# and CPU sampled all along; writes the JSON report, PNG plots (latency histogram,
# RSS/CPU over time) and the RSS growth per hour after the warm-up.
#
#   bench/soak.sh                        hubbub, 1 h measured after a 20 min warm-up
#   SOAK=600 WARMUP=120 bench/soak.sh    shorter
#   TARGET=nchan bench/soak.sh           the same load against nginx+nchan
#
# Env knobs: SOAK (3600 s measured), WARMUP (1200 s: the history fills its 10,000
# entries at 50/s in 200 s, and RSS measured here still settled for ~18 min after
# that before it went flat; memory is judged after the warm-up), SUBS (5000), TOPICS (50),
# RATE (50 publishes/s), CHURN (50 subscribers closed and reopened per second, each
# resuming with Last-Event-ID), SAMPLE (10 s), LISTEN (127.0.0.1:8085, its own port so
# it can run beside other benches), SKIP_BUILD=1, BIN, OUT (bench/out/soak-$TARGET).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${TARGET:-hubbub}"
SOAK="${SOAK:-3600}" WARMUP="${WARMUP:-1200}" SUBS="${SUBS:-5000}" TOPICS="${TOPICS:-50}"
RATE="${RATE:-50}" CHURN="${CHURN:-50}" SAMPLE="${SAMPLE:-10}" LISTEN="${LISTEN:-127.0.0.1:8085}"
BIN="${BIN:-target/release/hubbub}" OUT="${OUT:-bench/out/soak-$TARGET}"
mkdir -p "$OUT"
[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release -p hubbub

PIDS="" SERVER=""
stop() {
  if [[ -n "$SERVER" ]]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  [[ "$TARGET" == nchan ]] && bench/nchan.sh stop >/dev/null 2>&1 || true
}
trap stop EXIT
if [[ "$TARGET" == hubbub ]]; then
  "$BIN" serve --dev --subscriptions=false --listen "$LISTEN" >"$OUT/serve.log" 2>&1 &
  SERVER=$! PIDS=$SERVER
  for _ in $(seq 100); do curl -fs -o /dev/null "http://$LISTEN/healthz" && break; sleep 0.1; done
  target_args=(--target hubbub --hub "http://$LISTEN/.well-known/mercure")
else
  bench/nchan.sh start
  PIDS="$(bench/nchan.sh pids | xargs | tr ' ' ',')"
  target_args=(--target nchan)
fi

# --source-ips 0: kernel-chosen source ports, so this never collides with another
# bench's pre-assigned ports on 127.0.0.2+.
"$BIN" bench "${target_args[@]}" --subscribers "$SUBS" --topics "$TOPICS" --rate "$RATE" \
  --publishers 4 --churn "$CHURN" --duration "$SOAK" --warmup "$WARMUP" --drain 10 \
  --sample-interval "$SAMPLE" --source-ips 0 --server-pid "$PIDS" \
  --json-out "$OUT/soak.json" --plot-dir "$OUT" 2>"$OUT/progress.log" | tee "$OUT/summary.txt"

python3 - "$OUT/soak.json" "$WARMUP" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
report = json.load(open(sys.argv[1]))
warmup = float(sys.argv[2])
samples = report["server"]["samples"]
# The first sample after the warm-up (publishing started after connect + settle).
start = next((s for s in samples if s["t_s"] >= samples[0]["t_s"] + warmup), None)
if start is None or len(samples) < 3:
    sys.exit("soak: too few samples after the warm-up to judge growth")
after = [s for s in samples if s["t_s"] >= start["t_s"]]
xs = [s["t_s"] for s in after]
ys = [s["rss_bytes"] / 2**20 for s in after]
n = len(xs)
mx, my = sum(xs) / n, sum(ys) / n
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
hours = (xs[-1] - xs[0]) / 3600
print(f"RSS after warm-up: {ys[0]:.1f} MiB at {xs[0]:.0f} s, {ys[-1]:.1f} MiB at {xs[-1]:.0f} s, "
      f"min {min(ys):.1f}, max {max(ys):.1f} ({n} samples over {hours:.2f} h)")
print(f"RSS growth after warm-up: end-start {100 * (ys[-1] - ys[0]) / ys[0] / max(hours, 1e-9):+.3f} %/h, "
      f"least-squares slope {100 * slope * 3600 / my:+.3f} %/h (target < 0.05 %/h)")
PY
