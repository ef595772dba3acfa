#!/bin/sh
# The cluster benchmark of docs/benchmarks.md ("Cluster client"): three
# embedded servers, the first slow (every 20th call, 5%, waits 5 ms more),
# 8 callers on one client core; round robin and p2c+EWMA, hedging off and on,
# plus a healthy baseline (no slow server). ROUNDS rounds (default 3), CSVs in
# $OUT (default target/cluster-bench); the last round is plotted into
# docs/img/cluster-latency.svg. Then the cost of balancing: a cluster of one vs a plain
# client at 128 in flight × 64 B (P2), 7 alternating runs each.
set -eu
bin=${RINGRPC:-target/release/ringrpc}
out=${OUT:-target/cluster-bench}
rounds=${1:-3}
mkdir -p "$out"
common="--servers 3 --in-flight 8 --duration 5 --warmup 1"
for r in $(seq "$rounds"); do
  "$bin" bench $common --balance round-robin --hedge off --csv "$out/healthy-$r.csv"
  for b in round-robin p2c; do
    for h in off on; do
      "$bin" bench $common --slow-every 20 --slow-ms 5 --balance "$b" --hedge "$h" \
        --csv "$out/$b-$h-$r.csv"
    done
  done
done
head -n 1 "$out/p2c-on-$rounds.csv" > "$out/cluster.csv"
for f in round-robin-off round-robin-on p2c-off p2c-on; do
  tail -n +2 "$out/$f-$rounds.csv" >> "$out/cluster.csv"
done
"$bin" plot --cluster "$out/cluster.csv" --out docs/img
"$bin" bench --compare cluster --in-flight 128 --rounds 7 --duration 2
