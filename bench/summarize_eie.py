#!/usr/bin/env python3
"""Prints `sparrow bench --eie --json` results as markdown tables (for docs and notes).

One file: its tables. Several files (runs of the same benchmark): first a table of each run's
geometric means and two-thread speedups with their medians, then the full tables of the median run
(by the batch-1, one-thread geomean over the dense peer). The machine's noise moves single runs; the
spread across runs shows by how much. `--plot OUT.svg` draws that run's speed-ups per layer over the
plain float32 sparse kernel and over oneDNN's dense product (bench/ratio_plot.py). Usage:
  bench/summarize_eie.py RUN.json [RUN.json ...] [--plot OUT.svg]    (no file: one run on stdin)
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ratio_plot import Panel, Row, Series, mean_row, ratio_bars_svg, write_atomically  # noqa: E402

PLOT_SERIES = (Series("plain", "over the plain fp32 sparse kernel", "#1f5fa8"),
               Series("dense", "over oneDNN's dense product", "#9bbce0"))

SCALING_LAYERS = ["Alex-6", "Alex-7", "VGG-6", "VGG-7"]


def config_name(batch, threads):
    return f"batch {batch}, {threads} thread{'s' if threads != 1 else ''}"


def two_thread_speedups(r):
    """Two threads over one per (layer, batch): from the one-thread time measured alternately in the
    same window when the run has it, else from the one-thread configuration's time."""
    one = {(l["name"], l["batch"]): l["sparrow_us"] for l in r["layers"] if l["threads"] == 1}
    speedups = {}
    for l in r["layers"]:
        k = (l["name"], l["batch"])
        if l["threads"] != 2:
            continue
        if "speedup_vs_one_thread" in l:
            speedups[k] = l["speedup_vs_one_thread"]
        elif k in one:
            speedups[k] = one[k] / l["sparrow_us"]
    return speedups


def machine_scalings(r):
    """Throughput of two independent one-thread products at once over one alone, per (layer, batch),
    for runs that measured it: what the machine let two threads gain without splitting work, in the
    same window as the two-thread speedup."""
    return {(l["name"], l["batch"]): l["machine_scaling"] for l in r["layers"]
            if l["threads"] == 2 and "machine_scaling" in l}


def print_tables(r):
    print(f"sparse kernels: {r['isa']}, median of at least {r['repeats']} runs and 0.2 s each, microseconds; "
          "x = peer time / Sparrow time\n")
    configs = sorted({(l["batch"], l["threads"]) for l in r["layers"]})
    for batch, threads in configs:
        print(f"**{config_name(batch, threads)}**\n")
        listed = batch == 1 and all("plain_listed_us" in l for l in r["layers"] if l["batch"] == 1)
        print("| layer | layout | Sparrow | dense (oneDNN) | Eigen | plain fp32 | x dense | x Eigen | x plain |"
              + (" x plain, listed |" if listed else ""))
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if listed else ""))
        for l in r["layers"]:
            if (l["batch"], l["threads"]) != (batch, threads):
                continue
            s = l["sparrow_us"]
            layout = l.get("layout", "csr") if batch == 1 else "csr"
            print(f"| {l['name']} | {layout} | {s:.0f} | {l['dense_us']:.0f} | {l['eigen_us']:.0f} | {l['plain_us']:.0f} | "
                  f"{l['dense_us'] / s:.2f} | {l['eigen_us'] / s:.2f} | {l['plain_us'] / s:.2f} |"
                  + (f" {l['plain_listed_us'] / s:.2f} |" if listed else ""))
        g = r["geomean"][config_name(batch, threads)]
        print(f"| geomean | | | | | | {g['speedup_vs_dense']:.2f} | {g['speedup_vs_eigen']:.2f} | {g['speedup_vs_plain']:.2f} |"
              + (f" {g['speedup_vs_plain_listed']:.2f} |" if listed else "") + "\n")
    speedups = two_thread_speedups(r)
    machine = machine_scalings(r)
    if speedups:
        print("| layer | batch | 2 threads vs 1 |" + (" machine: 2 copies vs 1 |" if machine else ""))
        print("|---|---:|---:|" + ("---:|" if machine else ""))
        for k in sorted(speedups):
            print(f"| {k[0]} | {k[1]} | {speedups[k]:.2f}x |" + (f" {machine[k]:.2f}x |" if k in machine else ""))


def print_runs(runs):
    """One row per measure, one column per run, then the median."""
    configs = sorted({(l["batch"], l["threads"]) for l in runs[0]["layers"]})
    batches = sorted({b for b, _ in configs})
    measures = []
    for b, t in configs:
        peers = ["dense", "plain"] + (["plain_listed"] if "speedup_vs_plain_listed" in runs[0]["geomean"][config_name(b, t)] else [])
        for peer in peers:
            label = f"{config_name(b, t)}: geomean x " + {"dense": "dense (oneDNN)", "plain": "plain fp32",
                                                         "plain_listed": "plain fp32, listed inputs"}[peer]
            measures.append((label, lambda r, b=b, t=t, peer=peer: r["geomean"][config_name(b, t)][f"speedup_vs_{peer}"]))
    for b in batches:
        for name in SCALING_LAYERS:
            measures.append((f"{name}, batch {b}: 2 threads vs 1",
                             lambda r, b=b, name=name: two_thread_speedups(r).get((name, b), float("nan"))))
            if any(machine_scalings(r) for r in runs):
                measures.append((f"{name}, batch {b}: machine, 2 copies vs 1",
                                 lambda r, b=b, name=name: machine_scalings(r).get((name, b), float("nan"))))
    print("| measure | " + " | ".join(f"run {i}" for i in range(1, len(runs) + 1)) + " | median |")
    print("|---|" + "---:|" * (len(runs) + 1))
    for label, f in measures:
        values = [f(r) for r in runs]
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {statistics.median(values):.2f} |")
    print()


def plot_panels(r):
    """A Panel per batch and thread count, a Row per layer (Sparrow's speed-up over each peer), then
    their geometric mean."""
    out = []
    for batch, threads in sorted({(l["batch"], l["threads"]) for l in r["layers"]}):
        rows = [Row(l["name"], {"plain": l["plain_us"] / l["sparrow_us"], "dense": l["dense_us"] / l["sparrow_us"]},
                    {}, False)
                for l in r["layers"] if (l["batch"], l["threads"]) == (batch, threads)]
        peer = "plain: CSC loop skipping zero inputs" if batch == 1 else "plain: CSR product in column panels"
        out.append(Panel(f"{config_name(batch, threads)} ({peer})",
                         rows + [mean_row(f"geometric mean ({len(rows)})", rows, PLOT_SERIES)]))
    return out


def plot(r, path):
    subtitle = (f"{r.get('machine', 'machine not recorded')}; weights: {r.get('weights', '?')}; sparse kernels: "
                f"{r.get('isa', '?')}; medians of at least {r.get('repeats', '?')} runs")
    write_atomically(path, ratio_bars_svg("Sparrow on the nine EIE layers against float32 peers (right of 1x: faster)",
                                          subtitle, PLOT_SERIES, plot_panels(r),
                                          "Sparrow's speed-up over the peer (log scale)"))
    print(f"wrote {path}", file=sys.stderr)


LAYER_TIMES = ("sparrow_us", "plain_us", "dense_us", "eigen_us")


def load_run(path, f):
    """A `sparrow bench --eie --json` run, checked for what the tables and the plot read: SystemExit
    with the file, layer and field named otherwise."""
    try:
        r = json.load(f)
        if not isinstance(r.get("layers"), list) or not r["layers"] or not isinstance(r.get("geomean"), dict):
            raise ValueError("no 'layers' list or no 'geomean' object")
        for i, l in enumerate(r["layers"]):
            for key in ("batch", "threads") + LAYER_TIMES:
                value = l.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ValueError(f"layer {i + 1} ({l.get('name', '?')}): field '{key}' is {value!r}, "
                                     "not a positive number")
        return r
    except (ValueError, AttributeError) as e:
        sys.exit(f"summarize_eie.py: error: {path}: not a `sparrow bench --eie --json` run: {e}")


def main():
    ap = argparse.ArgumentParser(description="Tables (and a plot) of `sparrow bench --eie --json` runs")
    ap.add_argument("runs", nargs="*", help="JSON files of runs (none: one run on stdin)")
    ap.add_argument("--plot", help="draw the (median) run's speed-ups as this SVG")
    a = ap.parse_args()
    runs = []
    for path in a.runs:
        try:
            with open(path) as f:
                runs.append(load_run(path, f))
        except OSError as e:
            sys.exit(f"summarize_eie.py: error: {path}: {e.strerror}")
    runs = runs or [load_run("standard input", sys.stdin)]
    if len(runs) == 1:
        print_tables(runs[0])
        median_run = 0
    else:
        print_runs(runs)
        key = config_name(1, 1)
        order = sorted(range(len(runs)), key=lambda i: runs[i]["geomean"][key]["speedup_vs_dense"])
        median_run = order[len(order) // 2]
        print(f"Tables of run {median_run + 1} (the median by the batch-1, one-thread geomean over the dense peer):\n")
        print_tables(runs[median_run])
    if a.plot:
        try:
            plot(runs[median_run], a.plot)
        except OSError as e:
            sys.exit(f"summarize_eie.py: error: {a.plot}: {e.strerror}")


if __name__ == "__main__":
    main()
