#!/usr/bin/env python3
"""Two dense ONNX models of one task, e.g. an original and its structured-pruned or factorized
export, timed in one run by Sparrow's dense executor (`sparrow --threads T bench MODEL.onnx --batch B
--json`) and by ONNX Runtime (bench/ort_time.js, onnxruntime-node). Each case runs in --rounds
rounds, the original first in even rounds and the smaller model first in odd ones; per runtime the
speed-up is the median of the rounds' ratios (original time / smaller time), printed with their
range, beside the medians of each model's times. Usage:
  bench/compare_onnx.py SPARROW ORIGINAL.onnx SMALLER.onnx --ort-modules DIR/node_modules
                        [--batches 1,16] [--threads 1] [--repeats 21] [--rounds 3] [--json OUT.json]
"""
import argparse
import json
import statistics
import subprocess
import sys

from compare_ort import cpu_model, input_of, ints, ort_time


def sparrow_dense_us(sparrow, onnx_path, batch, threads, repeats):
    r = subprocess.run([sparrow, "--threads", str(threads), "bench", onnx_path, "--batch", str(batch), "--repeats",
                        str(repeats), "--json"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["runs"][0]["dense_us"]


def time_both(args, path, batch, threads):
    name, dims = input_of(path)
    dims = [batch if d < 0 else d for d in dims]
    return {"sparrow": sparrow_dense_us(args.sparrow, path, batch, threads, args.repeats),
            "ort": ort_time(args.ort_modules, path, name, dims, threads, args.repeats)["median_us"]}


def compare(args, batch, threads):
    rounds = []
    for k in range(args.rounds):
        order = [args.original, args.smaller] if k % 2 == 0 else [args.smaller, args.original]
        times = {path: time_both(args, path, batch, threads) for path in order}
        rounds.append((times[args.original], times[args.smaller]))
    row = {"batch": batch, "threads": threads}
    for runtime in ("sparrow", "ort"):
        ratios = [o[runtime] / s[runtime] for o, s in rounds]
        row[runtime] = {"original_us": statistics.median(o[runtime] for o, _ in rounds),
                        "smaller_us": statistics.median(s[runtime] for _, s in rounds),
                        "speedup": statistics.median(ratios), "speedup_rounds": ratios}
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sparrow")
    ap.add_argument("original")
    ap.add_argument("smaller")
    ap.add_argument("--ort-modules", required=True, help="node_modules holding onnxruntime-node")
    ap.add_argument("--batches", type=ints, default=[1, 16])
    ap.add_argument("--threads", type=ints, default=[1])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    result = {"machine": cpu_model(), "original": args.original, "smaller": args.smaller, "runs": []}
    print(f"{args.original} against {args.smaller} on {result['machine']}")
    print(f"{'runtime':<24} {'batch':>5} {'threads':>7} {'original':>12} {'smaller':>12} {'speed-up':>9} range")
    for batch in args.batches:
        for threads in args.threads:
            row = compare(args, batch, threads)
            result["runs"].append(row)
            for runtime, label in (("sparrow", "Sparrow dense executor"), ("ort", "ONNX Runtime")):
                r = row[runtime]
                print(f"{label:<24} {batch:>5} {threads:>7} {r['original_us']:>10.1f}us {r['smaller_us']:>10.1f}us "
                      f"{r['speedup']:>8.2f}x {min(r['speedup_rounds']):.2f}-{max(r['speedup_rounds']):.2f}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
