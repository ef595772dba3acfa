#!/usr/bin/env python3
"""Medians of P1's path, step by step (docs/benchmarks.md, "P1's path step by step").

Apply p1-path-stamps-d015552.patch (a throwaway instrumentation: TSC stamps at
eleven points of each core thread), run
    cargo bench -p ringrpc-peers --bench peers -- --congestion cubic \
        --rounds 1 --secs 4 --warmup 0.5 --cell 1x64 =ringrpc
and run this script: it reads /tmp/stamps-peers-rr-{srv,cli}-0.txt (one
"stamp ns" line per event) and prints each step's median over the round trips
that follow the most common sequence.
"""
import statistics as st

for side in ("srv", "cli"):
    events = [(int(a), float(b)) for a, b in (l.split() for l in open(f"/tmp/stamps-peers-rr-{side}-0.txt"))]
    rows, cur = [], None
    for i, t in events:
        if i == 0:
            if cur:
                rows.append(cur)
            cur = [(0, t)]
        elif cur is not None:
            cur.append((i, t))
    data = [r for r in rows if any(i == 3 for i, _ in r) and any(i == 11 for i, _ in r)]
    patterns, total = {}, []
    for r in data:
        seq = []
        for k in range(1, len(r)):
            seq.append((r[k - 1][0], r[k][0], r[k][1] - r[k - 1][1]))
            if r[k][0] == 11:
                total.append(r[k][1] - r[0][1])
                break
        patterns.setdefault(tuple((a, b) for a, b, _ in seq), []).append([d for _, _, d in seq])
    print(f"{side}: {len(data)} round trips, wake -> send median {st.median(total):.0f} ns")
    key, rows_ = max(patterns.items(), key=lambda kv: len(kv[1]))
    print(f"  most common sequence ({len(rows_)} round trips):")
    for j, (a, b) in enumerate(key):
        print(f"    {a:>2} -> {b:<2} {st.median(x[j] for x in rows_):6.0f} ns")
