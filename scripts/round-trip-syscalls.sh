#!/usr/bin/env bash
# Times one round trip at one call in flight system call by system call
# (docs/benchmarks.md, "Where P1's round trip goes"): runs one peers round of
# `--cell 1x64` for PEER, records every system call of both threads with the
# raw tracepoints (no sampling, nanosecond timestamps) for SECS seconds, and
# prints per thread the median user time between one system call's return and
# the next one's entry, and each kind of call's median duration.
#
# Usage: scripts/round-trip-syscalls.sh [PEER] [SECS]
#   PEER  a peers bench peer: ringrpc (default), raw-blocking, ringrpc-epoll, ...
#   SECS  how long to trace (default 0.5; ~13 k system calls a second per side)
# Needs: root (or perf_event_paranoid <= -1), `perf` with tracepoints, python3.
# The peers bench binary is built first (`cargo bench --no-run`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
PEER=${1:-ringrpc}
SECS=${2:-0.5}
BIN=$(cargo bench -p ringrpc-peers --bench peers --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="peers" and m.get("executable"):
        print(m["executable"])')
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

"$BIN" --congestion cubic --rounds 1 --secs 3 --warmup 0.5 --cell 1x64 "=$PEER" >"$OUT/run.txt" 2>&1 &
sleep 2
perf record -a -o "$OUT/perf.data" -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -- sleep "$SECS" >/dev/null 2>&1
wait
grep -E "^$PEER " "$OUT/run.txt" | head -1
perf script -i "$OUT/perf.data" --ns -F comm,tid,time,event,trace 2>/dev/null | python3 -c '
import collections, re, sys
THREADS = ("peers-rr-cli-0", "peers-rr-srv-0", "raw-cli", "raw-srv")
last_exit, entered, kind_of = {}, {}, {}
gaps, durations = collections.defaultdict(list), collections.defaultdict(list)
for line in sys.stdin:
    fields = line.split()
    if len(fields) < 3 or fields[0] not in THREADS:
        continue
    comm, tid, t = fields[0], fields[1], float(fields[2].rstrip(":"))
    if "sys_enter" in line:
        m = re.search(r"NR (\d+) \(([^)]*)\)", line)
        nr, args = int(m.group(1)), m.group(2).split(", ")
        # io_uring_enter (426): a submission (to_submit > 0) or a wait.
        kind = {44: "sendto", 45: "recvfrom"}.get(nr, str(nr))
        if nr == 426:
            kind = "io_uring_enter submit" if args[1] != "0" else "io_uring_enter wait"
        if tid in last_exit:
            gaps[(comm, kind_of.get(tid), kind)].append((t - last_exit[tid]) * 1e6)
        entered[tid], kind_of[tid] = t, kind
    elif tid in entered:
        durations[(comm, kind_of[tid])].append((t - entered[tid]) * 1e6)
        last_exit[tid] = t
def median(v):
    v = sorted(v)
    return v[len(v) // 2]
print("user time between system calls (median us, count):")
for (comm, before, after), v in sorted(gaps.items(), key=str):
    if len(v) > 10:
        print(f"  {comm:16} after {before} -> before {after}: {median(v):.2f} ({len(v)})")
print("system call durations (median us, count):")
for (comm, kind), v in sorted(durations.items(), key=str):
    if len(v) > 10:
        print(f"  {comm:16} {kind}: {median(v):.2f} ({len(v)})")
'
