#!/usr/bin/env bash
# chainrule against the peers of ../shared/peers (numpy, PyTorch, JAX, candle, dfdx, burn, naive
# ndarray), all measured in one run on this machine, printed as one set of markdown tables.
#
#   benches/peers/compare.sh                 # RUNS=3 rounds at 1 and 2 threads, W1-W6
#   RUNS=1 ONLY="numpy jax naive" WORKLOADS=W1,W2,W3 benches/peers/compare.sh
#   ONLY=conv WORKLOADS=W4,W5,W6 benches/peers/compare.sh   # the convolutional workloads alone
#
# Each round runs the peers' own run_all.sh for one run, then chainrule at every thread count with
# the same settings (1 thread: `taskset -c 0` and every thread knob at 1; 2 threads: knobs at 2),
# so drift on a shared machine spreads over all implementations alike. The peers' first round
# sets up what they need (a Python venv with numpy, jax and torch, Debian's OpenBLAS) and builds
# the Rust peers: the first call takes much longer than the later ones.
#
# Knobs: RUNS, THREADS, ONLY (as in run_all.sh), WORKLOADS (chainrule's, default all six),
# PEERS (default ../shared/peers beside the
# repository), PEERS_WORK (where the peers are built and measured, default /tmp/peers-work),
# RAW (where the JSON lines and tables.md go).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PEERS=$(cd "${PEERS:-$ROOT/../shared/peers}" && pwd)
export PEERS_WORK=${PEERS_WORK:-${TMPDIR:-/tmp}/peers-work}
RUNS=${RUNS:-3}
THREADS=${THREADS:-"1 2"}
ONLY=${ONLY:-"mlp conv"}
WORKLOADS=${WORKLOADS:-W1,W2,W3,W4,W5,W6}
RAW=${RAW:-$PEERS_WORK/raw/chainrule-$(date +%Y%m%d-%H%M%S)}
log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

# The peers build and measure in a work folder; chainrule's peer goes beside theirs in it.
mkdir -p "$PEERS_WORK" "$RAW"
(cd "$PEERS" && tar cf - --exclude=./raw --exclude=./venv .) | (cd "$PEERS_WORK" && tar xf -)
chmod -R u+w "$PEERS_WORK"
OURS=$PEERS_WORK/rust/chainrule
mkdir -p "$OURS"
cp -r "$ROOT/benches/peers/src" "$OURS/"
sed "s|path = \"../..\"|path = \"$ROOT\"|" "$ROOT/benches/peers/Cargo.toml" >"$OURS/Cargo.toml"
log "building chainrule's peer"
(cd "$OURS" && cargo build --release -q --target-dir "$OURS/target")

ours() { # threads
  local t=$1 pre=()
  [ "$t" = 1 ] && pre=(taskset -c 0)
  "${pre[@]}" env MATMUL_NUM_THREADS="$t" CHAINRULE_THREADS="$t" \
    "$OURS/target/release/peer-chainrule" --threads "$t" --workloads "$WORKLOADS" >>"$RAW/run$r.jsonl"
}

for r in $(seq 1 "$RUNS"); do
  log "round $r of $RUNS: the peers (${ONLY})"
  skip=1
  [ "$r" = 1 ] && skip=0
  RUNS=1 FIRST_RUN=$r THREADS=$THREADS ONLY=$ONLY SKIP_BUILD=$skip RAW=$RAW \
    "$PEERS_WORK/run_all.sh" >>"$RAW/peers.log"
  for t in $THREADS; do
    log "round $r of $RUNS: chainrule, $t thread(s)"
    ours "$t"
  done
done

log "raw JSON lines in $RAW"
"$PEERS_WORK/venv/bin/python" "$PEERS_WORK/aggregate.py" "$RAW" | tee "$RAW/tables.md"
