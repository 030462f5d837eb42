#!/usr/bin/env python3
"""Whole models in one run: Sparrow's .spw (90% sparsity, 4-bit codes on every layer) and Sparrow's
dense executor against ONNX Runtime on the original ONNX, at batch 1 and 16 on 1 and 2 threads;
beside each file, the peak resident memory and wall time of `sparrow run` on one sample (load + run)
and ONNX Runtime's session load time.

Models: the architectures of bench/model_suite.py (ResNet-18, MobileNetV2, SqueezeNet 1.1, a
32x32 VGG-11-BN, a transformer encoder, an LSTM with its batch axis second, LeNet-300-100; made with
/usr/bin/python3, torch and python3-torchvision), the AlexNet-classifier-shaped MLP of
bench/load_memory.py, and the test corpus's LeNet-5, MLP and small CNN with BatchNorm
(build/tests/corpus, made by the test suite). Sparrow is timed with
`sparrow --threads T bench MODEL.spw --batch B --json` (in one process); ONNX Runtime with
bench/ort_time.js (onnxruntime-node, one session in one process). Both report the median of at least
R runs and 0.2 s of them, after at least 0.1 s of untimed runs. Each case runs in --rounds rounds of both, Sparrow first in even
rounds and ORT first in odd ones; the speedup over ORT is the median of the rounds' speedups
(printed with their range), so that the machine's drift falls on both sides. The last lines give the
geometric means of the speedups over ONNX Runtime per batch and thread count. Usage:
  bench/compare_ort.py SPARROW --ort-modules DIR/node_modules [--corpus build/tests/corpus] [--work DIR]
                       [--models resnet18,lstm,...] [--batches 1,16] [--threads 1,2] [--repeats 21]
                       [--rounds 3] [--json OUT.json] [--plot OUT.svg]
--plot draws the speed-ups with bench/plot_compare.py (which also draws them from a saved --json).
"""
import argparse
import json
import statistics
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_memory import make_model, measure  # noqa: E402
from plot_compare import speedup_svg  # noqa: E402
from ratio_plot import geomean, write_atomically  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE_NAMES = ["resnet18", "mobilenet_v2", "squeezenet1_1", "vgg11_bn_32", "transformer", "lstm", "lenet_300_100"]


def cpu_model():
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')}, " \
           f"model {fields.get('model')})"


def suite_models(work, names):
    """name -> (onnx path, batch axis) for the model suite; empty (with a message) without torchvision."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "model_suite.py"), work, *names],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"skipped the model suite: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        return {}
    return {name: (m["onnx"], m["batch_axis"]) for name, m in json.loads(r.stdout.splitlines()[-1]).items()}


def input_of(onnx_path):
    script = ("import onnx,json,sys; g=onnx.load(sys.argv[1]).graph; init={i.name for i in g.initializer}; "
              "i=[x for x in g.input if x.name not in init][0]; "
              "print(json.dumps([i.name,[d.dim_value or -1 for d in i.type.tensor_type.shape.dim]]))")
    out = subprocess.run(["/usr/bin/python3", "-c", script, onnx_path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def sparrow_times(sparrow, spw, batch, threads, repeats):
    r = subprocess.run([sparrow, "--threads", str(threads), "bench", spw, "--batch", str(batch), "--repeats",
                        str(repeats), "--json"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["runs"][0]


def ort_time(ort_modules, onnx_path, name, dims, threads, repeats):
    env = dict(os.environ, NODE_PATH=ort_modules)
    r = subprocess.run(["node", os.path.join(HERE, "ort_time.js"), onnx_path, name, ",".join(map(str, dims)),
                        str(threads), str(repeats)], check=True, capture_output=True, text=True, env=env)
    return json.loads(r.stdout)


def write_sample(work, name, dims):
    path = os.path.join(work, name + ".x.npy")
    script = ("import numpy as np,sys; np.save(sys.argv[1], "
              "np.random.RandomState(0).rand(*map(int, sys.argv[2:])).astype(np.float32))")
    subprocess.run(["/usr/bin/python3", "-c", script, path, *map(str, dims)], check=True)
    return path


def ints(text):
    return [int(v) for v in text.split(",")]


def summarize_rounds(rounds):
    """Medians over rounds of each side's median, and the speedups over ORT of each round (above 1:
    faster than ORT) with their median."""
    spw = [o["median_us"] / s["sparrow_us"] for s, o in rounds]
    dense = [o["median_us"] / s["dense_us"] for s, o in rounds]
    return {"sparrow_us": statistics.median([s["sparrow_us"] for s, _ in rounds]),
            "sparrow_min_us": min(s["sparrow_min_us"] for s, _ in rounds),
            "sparrow_max_us": max(s["sparrow_max_us"] for s, _ in rounds),
            "dense_us": statistics.median([s["dense_us"] for s, _ in rounds]),
            "ort_us": statistics.median([o["median_us"] for _, o in rounds]),
            "ort_min_us": min(o["min_us"] for _, o in rounds), "ort_max_us": max(o["max_us"] for _, o in rounds),
            "ort_load_us": statistics.median([o["load_us"] for _, o in rounds]),
            "spw_ratio": statistics.median(spw), "dense_ratio": statistics.median(dense),
            "spw_ratio_rounds": spw, "dense_ratio_rounds": dense,
            # Regions after which Sparrow's caller waited on a worker taken off its core (its stall
            # guard then ran the next regions on one thread), summed over the rounds' timed runs.
            "sparrow_stalls": sum(s.get("sparrow_stalls", 0) for s, _ in rounds),
            "dense_stalls": sum(s.get("dense_stalls", 0) for s, _ in rounds)}


def print_geomeans(result):
    print("geometric mean of speedups over ONNX Runtime (above 1: faster than ORT)")
    runs = [r for m in result["models"].values() for r in m["runs"]]
    for batch, threads in sorted({(r["batch"], r["threads"]) for r in runs}):
        sel = [r for r in runs if r["batch"] == batch and r["threads"] == threads]
        spw = geomean([r["spw_ratio"] for r in sel])
        dense = geomean([r["dense_ratio"] for r in sel])
        low = min(sel, key=lambda r: r["spw_ratio"])
        print(f"  batch {batch:>3}, {threads} thread(s), {len(sel)} models: .spw {spw:.2f}x, dense executor "
              f"{dense:.2f}x; slowest .spw: {low['model']} {low['spw_ratio']:.2f}x")
        result.setdefault("geomeans", []).append({"batch": batch, "threads": threads, "models": len(sel),
                                                  "sparrow": spw, "dense": dense})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sparrow")
    ap.add_argument("--ort-modules", required=True, help="node_modules holding onnxruntime-node")
    ap.add_argument("--corpus", default="build/tests/corpus")
    ap.add_argument("--work", default="out/compare_ort")
    ap.add_argument("--models", help="only these models, comma-separated")
    ap.add_argument("--batches", type=ints, default=[1, 16])
    ap.add_argument("--threads", type=ints, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=3,
                    help="Sparrow and ORT timed alternately this many times per case; ratios per round")
    ap.add_argument("--compress", default="--sparsity 0.9 --bits 4",
                    help="options of `sparrow compress` that make each .spw (e.g. add --block 4x1)")
    ap.add_argument("--json", help="also write the result (the last line printed) to this file")
    ap.add_argument("--plot", help="also draw the speed-ups over ONNX Runtime as this SVG")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    wanted = a.models.split(",") if a.models else None
    suite = [n for n in SUITE_NAMES if wanted is None or n in wanted]
    models = suite_models(a.work, suite) if suite else {}
    if wanted is None or "alexnet_mlp" in wanted:
        models["alexnet_mlp"] = (make_model(a.work), 0)
    for name in ["lenet5_op13", "mlp_op13", "cnn_bn_op13"]:
        if wanted is not None and name not in wanted:
            continue
        path = os.path.join(a.corpus, name + ".onnx")
        if os.path.exists(path):
            models[name] = (path, 0)
        else:
            print(f"skipped {name}: {path} not found (the test suite makes it)")
    print(f"CPU: {cpu_model()}")
    print(f"{'model':<14} {'batch':>5} {'thr':>3} {'spw us':>10} {'dense us':>10} {'ORT us':>10} "
          f"{'spw/ORT':>8} {'dense/ORT':>9}   spw/ORT over the rounds")
    print(f"compressed with: {a.compress}")
    result = {"cpu": cpu_model(), "compress": a.compress, "models": {},
              "suite": [name for name in suite if name in models]}
    for name, (onnx_path, batch_axis) in models.items():
        spw = os.path.join(a.work, name + ".spw")
        subprocess.run([a.sparrow, "--quiet", "compress", onnx_path, "-o", spw] + a.compress.split(),
                       check=True, stdout=subprocess.DEVNULL)
        input_name, dims = input_of(onnx_path)
        entry = {"file_bytes": os.path.getsize(spw), "onnx_bytes": os.path.getsize(onnx_path), "runs": []}
        for batch in a.batches:
            for threads in a.threads:
                shape = list(dims)
                shape[batch_axis] = batch
                # Alternate rounds, the order swapped every round, so that the machine's drift and
                # whatever one run leaves behind fall on both sides of each ratio.
                rounds = []
                for r in range(max(1, a.rounds)):
                    if r % 2 == 0:
                        s = sparrow_times(a.sparrow, spw, batch, threads, a.repeats)
                        ort = ort_time(a.ort_modules, onnx_path, input_name, shape, threads, a.repeats)
                    else:
                        ort = ort_time(a.ort_modules, onnx_path, input_name, shape, threads, a.repeats)
                        s = sparrow_times(a.sparrow, spw, batch, threads, a.repeats)
                    rounds.append((s, ort))
                run = summarize_rounds(rounds)
                run.update({"model": name, "batch": batch, "threads": threads})
                entry["runs"].append(run)
                # Ratios are speedups over ONNX Runtime: above 1 is faster than ORT.
                spread = run["spw_ratio_rounds"]
                print(f"{name:<14} {batch:>5} {threads:>3} {run['sparrow_us']:>10.1f} {run['dense_us']:>10.1f} "
                      f"{run['ort_us']:>10.1f} {run['spw_ratio']:>8.2f} {run['dense_ratio']:>9.2f}"
                      f"   [{min(spread):.2f}, {max(spread):.2f}]"
                      + (f"   stalls: {run['sparrow_stalls']} .spw, {run['dense_stalls']} dense"
                         if run["sparrow_stalls"] or run["dense_stalls"] else ""), flush=True)
        sample = list(dims)
        sample[batch_axis] = 1
        x = write_sample(a.work, name, sample)
        seconds, rss = measure([a.sparrow, "--threads", "1", "run", spw, "-i", x, "-o", os.path.join(a.work, "y.npy")])
        entry["run_seconds"], entry["run_peak_rss_mib"] = seconds, rss
        print(f"{name:<14} file {entry['file_bytes'] / 1e6:.3f} MB (ONNX {entry['onnx_bytes'] / 1e6:.3f} MB): "
              f"sparrow run {seconds:.2f} s, peak RSS {rss:.1f} MiB; ORT session load "
              f"{entry['runs'][0]['ort_load_us'] / 1e3:.0f} ms", flush=True)
        result["models"][name] = entry
    print_geomeans(result)
    print(json.dumps(result))
    if a.json:
        write_atomically(a.json, json.dumps(result) + "\n")
    if a.plot:
        if any(entry["runs"] for entry in result["models"].values()):
            write_atomically(a.plot, speedup_svg(result))
            print(f"wrote {a.plot}")
        else:
            print(f"no plot written to {a.plot}: no model was timed")


if __name__ == "__main__":
    main()
