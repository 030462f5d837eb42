#!/usr/bin/env python3
"""Peak resident memory and wall time of `sparrow run` on a compressed MLP shaped like AlexNet's
classifier (9216-4096-4096-1000, ReLU), beside the file's size.

Builds the model with /usr/bin/python3's torch (seeded random weights), compresses it with
`sparrow compress --sparsity 0.9 --bits 4`, then times `sparrow run` on one batch-1 input, on the
sparse engine and with --dense, several times each, alternating. Prints medians with min and max,
and a JSON line. Usage: bench/load_memory.py SPARROW [--work DIR] [--repeats N] [--baseline SPARROW_OLD]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def make_model(work):
    onnx_path = os.path.join(work, "alexnet_mlp.onnx")
    if os.path.exists(onnx_path):
        return onnx_path
    script = f"""
import torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(9216, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096),
                        torch.nn.ReLU(), torch.nn.Linear(4096, 1000)).eval()
torch.onnx.export(m, torch.randn(1, 9216), {onnx_path!r}, input_names=["x"], output_names=["y"], opset_version=13,
                  dynamic_axes={{"x": {{0: "batch"}}, "y": {{0: "batch"}}}})
import numpy as np
np.save({os.path.join(work, "x.npy")!r}, np.random.RandomState(0).rand(1, 9216).astype(np.float32))
"""
    subprocess.run(["/usr/bin/python3", "-c", script], check=True)
    return onnx_path


def measure(cmd):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, peak RSS in MiB)."""
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, rss


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sparrow")
    ap.add_argument("--work", default="out/load_memory")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", help="another sparrow binary, timed alternately on the same file")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    onnx_path = make_model(a.work)
    spw = os.path.join(a.work, "alexnet_mlp.spw")
    if not os.path.exists(spw):
        subprocess.run([a.sparrow, "--quiet", "compress", onnx_path, "-o", spw, "--sparsity", "0.9", "--bits", "4"],
                       check=True, stdout=subprocess.DEVNULL)
    x = os.path.join(a.work, "x.npy")
    out = os.path.join(a.work, "y.npy")
    configs = {"sparse": [a.sparrow, "--threads", "1", "run", spw, "-i", x, "-o", out],
               "dense": [a.sparrow, "--threads", "1", "--dense", "run", spw, "-i", x, "-o", out]}
    if a.baseline:
        configs["baseline_sparse"] = [a.baseline] + configs["sparse"][1:]
        configs["baseline_dense"] = [a.baseline] + configs["dense"][1:]
    runs = {k: ([], []) for k in configs}
    for _ in range(a.repeats):
        for k, cmd in configs.items():
            t, rss = measure(cmd)
            runs[k][0].append(t)
            runs[k][1].append(rss)
    result = {"file_bytes": os.path.getsize(spw)}
    print(f"file {spw}: {result['file_bytes'] / 1e6:.2f} MB")
    for k, (times, rss) in runs.items():
        result[k] = {"seconds": summary(times), "peak_rss_mib": summary(rss)}
        print(f"{k:>16}: {statistics.median(times):.3f} s [{min(times):.3f}, {max(times):.3f}], "
              f"peak RSS {statistics.median(rss):.1f} MiB [{min(rss):.1f}, {max(rss):.1f}]")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
