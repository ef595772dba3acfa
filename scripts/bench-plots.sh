#!/usr/bin/env bash
# Regenerates the benchmark plots of docs/benchmarks.md (docs/img/*.svg):
#   1. cargo bench -p ringrpc-peers --bench peers -- [ARGS...]           -> target/peers/peers.csv
#   2. ringrpc bench --compare floor --in-flight 1,16,128,1024 --csv target/bench/bench.csv
#      (embedded server pinned to CPU 0, client to CPU 1: the defaults)
#   3. ringrpc plot --peers target/peers/peers.csv --bench target/bench/bench.csv --out docs/img
#
# Usage: scripts/bench-plots.sh [PEERS_ARGS...]
#   PEERS_ARGS go to the peers bench, e.g. `--secs 1 --warmup 0.5 --rounds 1` for a
#   quick run; its --secs and --warmup also set ringrpc bench's --duration and --warmup.
# Environment:
#   RINGRPC_BENCH_ARGS  more options for `ringrpc bench` (e.g. "--rate 10000,100000")
#   OUT                 output directory of the SVGs (default docs/img)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

out="${OUT:-docs/img}"
bench_args=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --secs) bench_args+=(--duration "${args[i + 1]:?--secs needs a value}") ;;
    --warmup) bench_args+=(--warmup "${args[i + 1]:?--warmup needs a value}") ;;
  esac
done
# Word-split on purpose: RINGRPC_BENCH_ARGS holds several options.
# shellcheck disable=SC2206
extra=(${RINGRPC_BENCH_ARGS:-})

set -x
cargo bench -p ringrpc-peers --bench peers -- "$@"
cargo run --release --bin ringrpc -- bench --compare floor --in-flight 1,16,128,1024 \
  ${bench_args[@]+"${bench_args[@]}"} ${extra[@]+"${extra[@]}"} --csv target/bench/bench.csv
cargo run --release --bin ringrpc -- plot \
  --peers target/peers/peers.csv --bench target/bench/bench.csv --out "$out"
