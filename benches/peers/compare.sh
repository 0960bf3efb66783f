#!/usr/bin/env bash
# chainrule against numpy, PyTorch (eager and torch.compile), JAX, candle and burn on the six
# workloads W1-W6 of README.md, all measured in one run on this machine, printed as markdown.
#
#   benches/peers/compare.sh                                  # RUNS=3 rounds at 1 and 2 threads
#   RUNS=1 ONLY="chainrule torch gemm" WORKLOADS=W1,W4 benches/peers/compare.sh
#
# The first call creates a Python venv and builds the Rust peers in PEERS_WORK (see README.md);
# later calls reuse them. Each round runs every implementation at every thread count (1 thread:
# `taskset -c 0` and every thread knob at 1; n threads: every knob at n, no pinning), so drift on
# a shared machine spreads over all implementations alike.
#
# Knobs (environment):
#   RUNS        rounds (default 3); the tables show the median over rounds
#   THREADS     thread counts (default "1 2")
#   ONLY        implementations (default all): chainrule gemm numpy torch torchc jax candle burn,
#               or the groups python (numpy torch torchc jax), rust (chainrule candle burn),
#               peers (all but chainrule); keep gemm for the "% of peak" columns
#   WORKLOADS   W1..W6, comma-separated (default all six)
#   PEERS_WORK  work folder: venv, cargo target dirs, raw results (default ${TMPDIR:-/tmp}/chainrule-peers)
#   RAW         this run's JSON lines and tables (default $PEERS_WORK/raw/<date-time>)
#   SKIP_BUILD  1 = don't call cargo or pip (use what PEERS_WORK has)
#   RUN_TIMEOUT seconds before one program run is killed (default 900)
#   PEERS_QUICK 1 = every timing loop 1/50 as long: checks that everything runs, measures nothing
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
THREADS=${THREADS:-"1 2"}
ONLY=${ONLY:-all}
WORKLOADS=${WORKLOADS:-W1,W2,W3,W4,W5,W6}
PEERS_WORK=${PEERS_WORK:-${TMPDIR:-/tmp}/chainrule-peers}
RAW=${RAW:-$PEERS_WORK/raw/$(date +%Y%m%d-%H%M%S)}
SKIP_BUILD=${SKIP_BUILD:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
VENV=$PEERS_WORK/venv
log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }

# The implementations to run, groups expanded.
impls=()
for i in $ONLY; do
  case $i in
    all) impls+=(gemm numpy torch torchc jax candle burn chainrule) ;;
    python) impls+=(numpy torch torchc jax) ;;
    rust) impls+=(chainrule candle burn) ;;
    peers) impls+=(gemm numpy torch torchc jax candle burn) ;;
    gemm | numpy | torch | torchc | jax | candle | burn | chainrule) impls+=("$i") ;;
    *) log "unknown implementation in ONLY: $i"; exit 2 ;;
  esac
done
wants() { [[ " ${impls[*]} " == *" $1 "* ]]; }
python_needed() { wants gemm || wants numpy || wants torch || wants torchc || wants jax; }

# The requested workloads split by program family (MLPs W1-W3, conv nets W4-W6).
mlp=$(tr ',' '\n' <<<"$WORKLOADS" | grep -E '^W[123]$' | paste -sd, || true)
conv=$(tr ',' '\n' <<<"$WORKLOADS" | grep -E '^W[456]$' | paste -sd, || true)

mkdir -p "$PEERS_WORK" "$RAW"

# Setup: the venv (again when requirements.txt changed), then the Rust peers.
if [ "$SKIP_BUILD" != 1 ]; then
  if python_needed && ! cmp -s "$HERE/requirements.txt" "$VENV/requirements.txt"; then
    log "creating the Python venv in $VENV (first time: ~6 GB with PyTorch's CUDA packages)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
    cp "$HERE/requirements.txt" "$VENV/requirements.txt"
  fi
  for p in chainrule candle burn gemm; do
    wants "$p" || continue
    log "building $p"
    locked=--locked
    [ "$p" = chainrule ] && locked= # it follows the repository's own dependencies
    cargo build --release $locked --manifest-path "$HERE/rust/$p/Cargo.toml" \
      --target-dir "$PEERS_WORK/target/$p"
  done
fi

# One program run at `threads` threads, its JSON lines appended to this round's file.
run() { # threads, command...
  local t=$1 pin=()
  shift
  [ "$t" = 1 ] && pin=(taskset -c 0)
  if ! env OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" \
    RAYON_NUM_THREADS="$t" MATMUL_NUM_THREADS="$t" CHAINRULE_THREADS="$t" \
    TORCHINDUCTOR_CACHE_DIR="$PEERS_WORK/inductor" \
    timeout "$RUN_TIMEOUT" "${pin[@]}" "$@" --threads "$t" >>"$RAW/run$r.jsonl" 2>>"$RAW/stderr.log"; then
    log "FAILED: $* --threads $t (see $RAW/stderr.log)"
  fi
}

# A Python peer. numpy's bundled OpenBLAS picks its kernel itself (SkylakeX on AVX-512) unless
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE override it, so they are unset for these programs.
py() { # threads, script, args...
  local t=$1 script=$2
  shift 2
  run "$t" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONDONTWRITEBYTECODE=1 \
    "$VENV/bin/python" "$HERE/py/$script" "$@"
}

bin() { echo "$PEERS_WORK/target/$1/release/peer-$1"; }

for r in $(seq 1 "$RUNS"); do
  for t in $THREADS; do
    for i in "${impls[@]}"; do
      log "round $r of $RUNS, $t thread(s): $i"
      case $i in
        gemm)
          run "$t" "$(bin gemm)"
          py "$t" gemm_numpy.py ;;
        numpy | torch | torchc | jax)
          lib=${i%c}
          extra=()
          [ "$i" = torchc ] && extra=(--compile)
          if [ -n "$mlp" ]; then py "$t" "mlp_$lib.py" --workloads "$mlp" "${extra[@]}"; fi
          if [ -n "$conv" ]; then py "$t" "conv_$lib.py" --workloads "$conv" "${extra[@]}"; fi ;;
        candle | burn | chainrule)
          run "$t" "$(bin "$i")" --workloads "$WORKLOADS" ;;
      esac
    done
  done
done

log "raw JSON lines in $RAW"
python3 "$HERE/aggregate.py" "$RAW" | tee "$RAW/tables.md"
