#!/usr/bin/env python3
"""Prints a `sparrow bench --eie --json` result as markdown tables (for docs and notes)."""
import json
import sys

r = json.load(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin)
print(f"sparse kernels: {r['isa']}, median of at least {r['repeats']} runs and 0.2 s each, microseconds; x = peer time / Sparrow time\n")
configs = sorted({(l["batch"], l["threads"]) for l in r["layers"]})
for batch, threads in configs:
    print(f"**batch {batch}, {threads} thread{'s' if threads > 1 else ''}**\n")
    print("| layer | Sparrow | OpenBLAS dense | Eigen | plain fp32 | x dense | x Eigen | x plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for l in r["layers"]:
        if (l["batch"], l["threads"]) != (batch, threads):
            continue
        s = l["sparrow_us"]
        print(f"| {l['name']} | {s:.0f} | {l['dense_us']:.0f} | {l['eigen_us']:.0f} | {l['plain_us']:.0f} | "
              f"{l['dense_us'] / s:.2f} | {l['eigen_us'] / s:.2f} | {l['plain_us'] / s:.2f} |")
    g = r["geomean"][f"batch {batch}, {threads} thread{'s' if threads > 1 else ''}"]
    print(f"| geomean | | | | | {g['speedup_vs_dense']:.2f} | {g['speedup_vs_eigen']:.2f} | {g['speedup_vs_plain']:.2f} |\n")
one = {(l["name"], l["batch"]): l["sparrow_us"] for l in r["layers"] if l["threads"] == 1}
two = {(l["name"], l["batch"]): l["sparrow_us"] for l in r["layers"] if l["threads"] == 2}
if two:
    print("| layer | batch | 2 threads vs 1 |")
    print("|---|---:|---:|")
    for k in sorted(two):
        if k in one:
            print(f"| {k[0]} | {k[1]} | {one[k] / two[k]:.2f}x |")
