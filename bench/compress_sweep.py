#!/usr/bin/env python3
"""Post-training compression sweep: file size and accuracy of one model at several settings.

For each setting it runs `sparrow compress`, `sparrow eval` on the .spw, and `sparrow export` +
`sparrow eval` on the dense ONNX (which must give the identical accuracy), and prints a table.

Usage: compress_sweep.py --model M.onnx --data MNIST_DIR --sparrow BIN [--work DIR] [--json OUT]
"""
import argparse
import json
import os
import subprocess
import sys

SETTINGS = [
    ("8-bit k-means, no pruning", ["--bits", "8"]),
    ("8-bit uniform (affine) baseline", ["--bits", "8", "--quantizer", "uniform"]),
    ("6-bit, no pruning", ["--bits", "6"]),
    ("50% pruned, 6-bit", ["--sparsity", "0.5", "--bits", "6"]),
    ("70% pruned, 6-bit", ["--sparsity", "0.7", "--bits", "6"]),
    ("80% pruned, 6-bit", ["--sparsity", "0.8", "--bits", "6"]),
    ("90% pruned, 6-bit", ["--sparsity", "0.9", "--bits", "6"]),
    ("90% pruned, 6-bit, Huffman off", ["--sparsity", "0.9", "--bits", "6", "--huffman", "off"]),
    ("90% pruned, 4-bit", ["--sparsity", "0.9", "--bits", "4"]),
    ("[DC] per-layer 92/91/74% pruned, 6-bit, 5-bit index",
     ["--bits", "6", "--index-bits", "5", "--layer", "fc1.weight:sparsity=0.92",
      "--layer", "fc2.weight:sparsity=0.91", "--layer", "fc3.weight:sparsity=0.74"]),
]


def sparrow(binary, *args):
    out = subprocess.run([binary, "--quiet", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"sparrow {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--sparrow", required=True)
    p.add_argument("--work", default="out/sweep")
    p.add_argument("--json")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    data = ["--images", os.path.join(a.data, "t10k-images-idx3-ubyte.gz"),
            "--labels", os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"), "--json"]
    base = json.loads(sparrow(a.sparrow, "eval", a.model, *data))
    rows = []
    for i, (name, opts) in enumerate(SETTINGS):
        spw, onnx = os.path.join(a.work, f"s{i}.spw"), os.path.join(a.work, f"s{i}.onnx")
        report = json.loads(sparrow(a.sparrow, "compress", a.model, "-o", spw, "--json", *opts))
        acc = json.loads(sparrow(a.sparrow, "eval", spw, *data))
        sparrow(a.sparrow, "export", spw, "-o", onnx)
        acc_dense = json.loads(sparrow(a.sparrow, "eval", onnx, *data))
        rows.append({"setting": name, "file_bytes": report["file_bytes"], "ratio": report["ratio"],
                     "accuracy": acc["accuracy"], "exported_accuracy": acc_dense["accuracy"],
                     "size_matches": report["file_bytes"] == os.path.getsize(spw)})
    print(f"baseline {a.model}: {os.path.getsize(a.model)} bytes ONNX, accuracy {base['accuracy']:.4f}\n")
    print("| setting | file bytes | ratio | accuracy | change | exported ONNX accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['file_bytes']} | {r['ratio']:.1f}x | {r['accuracy']:.4f} | "
              f"{100 * (r['accuracy'] - base['accuracy']):+.2f} pt | {r['exported_accuracy']:.4f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"baseline_accuracy": base["accuracy"], "rows": rows}, f, indent=1)
    bad = [r for r in rows if not r["size_matches"] or r["accuracy"] != r["exported_accuracy"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
