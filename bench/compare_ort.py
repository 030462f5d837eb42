#!/usr/bin/env python3
"""Whole models in one run: Sparrow's .spw (90% sparsity, 4-bit codes on every layer) and Sparrow's
dense executor against ONNX Runtime on the original ONNX, at batch 1 and 16 on 1 and 2 threads;
beside each file, the peak resident memory and wall time of `sparrow run` on one sample (load + run)
and ONNX Runtime's session load time.

Models: the AlexNet-classifier-shaped MLP of bench/load_memory.py and the test corpus's LeNet-5,
MLP and small CNN with BatchNorm (build/tests/corpus, made by the test suite). Sparrow is timed with
`sparrow --threads T bench MODEL.spw --batch B --json` (median of 21 runs after 2 untimed);
ONNX Runtime with bench/ort_time.js (onnxruntime-node, in one process, median of 21 calls after 2
untimed). Usage:
  bench/compare_ort.py SPARROW --ort-modules DIR/node_modules [--corpus build/tests/corpus] [--work DIR]
"""
import argparse
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_memory import make_model, measure  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_model():
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')}, " \
           f"model {fields.get('model')})"


def input_of(onnx_path):
    script = ("import onnx,json,sys; g=onnx.load(sys.argv[1]).graph; init={i.name for i in g.initializer}; "
              "i=[x for x in g.input if x.name not in init][0]; "
              "print(json.dumps([i.name,[d.dim_value or -1 for d in i.type.tensor_type.shape.dim]]))")
    out = subprocess.run(["/usr/bin/python3", "-c", script, onnx_path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def sparrow_times(sparrow, spw, batch, threads):
    r = subprocess.run([sparrow, "--threads", str(threads), "bench", spw, "--batch", str(batch), "--json"],
                       check=True, capture_output=True, text=True)
    run = json.loads(r.stdout)["runs"][0]
    return run["sparrow_us"], run["dense_us"]


def ort_time(ort_modules, onnx_path, name, dims, threads):
    env = dict(os.environ, NODE_PATH=ort_modules)
    r = subprocess.run(["node", os.path.join(HERE, "ort_time.js"), onnx_path, name, ",".join(map(str, dims)),
                        str(threads), "21"], check=True, capture_output=True, text=True, env=env)
    return json.loads(r.stdout)


def write_sample(work, name, dims):
    path = os.path.join(work, name + ".x.npy")
    script = ("import numpy as np,sys; np.save(sys.argv[1], "
              "np.random.RandomState(0).rand(*map(int, sys.argv[2:])).astype(np.float32))")
    subprocess.run(["/usr/bin/python3", "-c", script, path, *map(str, dims)], check=True)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sparrow")
    ap.add_argument("--ort-modules", required=True, help="node_modules holding onnxruntime-node")
    ap.add_argument("--corpus", default="build/tests/corpus")
    ap.add_argument("--work", default="out/compare_ort")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    models = {"alexnet_mlp": make_model(a.work)}
    for name in ["lenet5_op13", "mlp_op13", "cnn_bn_op13"]:
        path = os.path.join(a.corpus, name + ".onnx")
        if os.path.exists(path):
            models[name] = path
        else:
            print(f"skipped {name}: {path} not found (the test suite makes it)")
    print(f"CPU: {cpu_model()}")
    print(f"{'model':<12} {'batch':>5} {'thr':>3} {'spw us':>9} {'dense us':>9} {'ORT us':>9} "
          f"{'spw/ORT':>8} {'dense/ORT':>9}")
    result = {"cpu": cpu_model(), "models": {}}
    for name, onnx_path in models.items():
        spw = os.path.join(a.work, name + ".spw")
        subprocess.run([a.sparrow, "--quiet", "compress", onnx_path, "-o", spw, "--sparsity", "0.9", "--bits", "4"],
                       check=True, stdout=subprocess.DEVNULL)
        input_name, dims = input_of(onnx_path)
        entry = {"file_bytes": os.path.getsize(spw), "onnx_bytes": os.path.getsize(onnx_path), "runs": []}
        for batch in (1, 16):
            for threads in (1, 2):
                shape = [batch] + [d for d in dims[1:]]
                spw_us, dense_us = sparrow_times(a.sparrow, spw, batch, threads)
                ort = ort_time(a.ort_modules, onnx_path, input_name, shape, threads)
                entry["runs"].append({"batch": batch, "threads": threads, "sparrow_us": spw_us, "dense_us": dense_us,
                                      "ort_us": ort["median_us"], "ort_load_us": ort["load_us"]})
                # Ratios are speedups over ONNX Runtime: above 1 is faster than ORT.
                print(f"{name:<12} {batch:>5} {threads:>3} {spw_us:>9.1f} {dense_us:>9.1f} {ort['median_us']:>9.1f} "
                      f"{ort['median_us'] / spw_us:>8.2f} {ort['median_us'] / dense_us:>9.2f}")
        x = write_sample(a.work, name, [1] + dims[1:])
        seconds, rss = measure([a.sparrow, "--threads", "1", "run", spw, "-i", x, "-o", os.path.join(a.work, "y.npy")])
        entry["run_seconds"], entry["run_peak_rss_mib"] = seconds, rss
        print(f"{name:<12} file {entry['file_bytes'] / 1e6:.3f} MB (ONNX {entry['onnx_bytes'] / 1e6:.3f} MB): "
              f"sparrow run {seconds:.2f} s, peak RSS {rss:.1f} MiB; ORT session load "
              f"{entry['runs'][0]['ort_load_us'] / 1e3:.0f} ms")
        result["models"][name] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
