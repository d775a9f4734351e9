#!/usr/bin/env bash
# Every measurement of the bench issue, one after the other (about 2 hours with
# the default 1 h soak; nothing else should run on the machine meanwhile):
#   1. bench/compare.sh      hubbub vs nginx+nchan, same client: idle memory at
#                            1k/10k/19k, 1k subs at 10/s, 10k subs at 10/100/1,000/s,
#                            10k subs over 1,000 topics -> bench/RESULTS.md
#   2. bench/cluster.sh      3-node cluster: idle cost, local vs remote latency,
#                            fan-out over 3 nodes            -> bench/out/cluster-*
#   3. bench/partition.sh    partition + heal (root only: nftables; skipped otherwise)
#   4. bench/cluster-100k.sh 100k subscribers on 6 nodes, every update once
#   5. bench/soak.sh         1 h soak with churn: RSS growth %/h, PNG plots
#                            -> bench/out/soak-hubbub/
# Env: SOAK (3600) and every knob of the scripts above; QUICK=1 shortens 1 and 2.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hubbub
export SKIP_BUILD=1
bench/compare.sh
bench/cluster.sh | tee bench/out/cluster-summary.md
if [[ $EUID == 0 ]] && command -v nft >/dev/null; then
  bench/partition.sh
else
  echo "partition.sh skipped: needs root and nft" >&2
fi
bench/cluster-100k.sh
bench/soak.sh
# RESULTS.md again, now with the cluster, 100k and soak sections.
SCENARIO_TABLE="$(bash -c 'source <(sed -n "/^SCENARIO_TABLE=\"/,/^\"/p" bench/compare.sh); echo "$SCENARIO_TABLE"')"
python3 bench/results.py bench/out "$SCENARIO_TABLE" >bench/RESULTS.md
echo "wrote bench/RESULTS.md" >&2
