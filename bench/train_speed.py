#!/usr/bin/env python3
"""Training speed: an epoch of Sparrow's LibTorch training against the same network trained by
PyTorch in Python, on the same MNIST data, threads, batch size and optimizer.

usage: /usr/bin/python3 bench/train_speed.py SPARROW_BINARY MNIST_DIR [--threads 1,2] [--epochs 3]

Both sides train with OpenBLAS single-threaded, on the first 55,000 training images (the last 5,000 are the validation split that
Sparrow scores after each epoch, and so does the PyTorch loop), SGD with momentum 0.9, weight decay
5e-4, batch 64, a new shuffle per epoch. The first epoch is a warm-up; the median of the others is
reported, with their spread, per network and thread count. Prints a table and one JSON line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# OpenBLAS's own threads oversubscribe the cores that LibTorch's use (Sparrow's trainer keeps
# OpenBLAS single-threaded too); it reads this when it loads, so before torch is imported.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# The same networks and IDX reading as the PyTorch example trainer.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "pytorch"))
from train_classifier import ARCHS, load_split  # noqa: E402


def torch_epochs(net, x, y, vx, vy, epochs, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            (net(vx).argmax(1) == vy).float().mean().item()
        seconds.append(time.perf_counter() - start)
    return seconds


def sparrow_epochs(binary, data, arch, epochs, threads):
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [binary, "--quiet", "--threads", str(threads), "train", "--arch", arch, "--data", data,
             "-o", os.path.join(tmp, "m.onnx"), "--epochs", str(epochs), "--json"],
            check=True, capture_output=True, text=True,
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
        )
    return json.loads(out.stdout)["epoch_seconds"]


def summary(seconds):
    timed = seconds[1:] or seconds
    return {"median": statistics.median(timed), "min": min(timed), "max": max(timed), "all": seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sparrow")
    ap.add_argument("mnist")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.mnist, "train-images-idx3-ubyte.gz")):
        print(f"train_speed: no MNIST in {a.mnist}; skipped")
        return 0
    x, y = load_split(a.mnist, "train")
    x, y, vx, vy = x[:55000], y[:55000], x[55000:], y[55000:]
    rows = []
    for arch, make in ARCHS.items():
        for threads in (int(t) for t in a.threads.split(",")):
            mine = summary(sparrow_epochs(a.sparrow, a.mnist, arch, a.epochs, threads))
            peer = summary(torch_epochs(make(), x, y, vx, vy, a.epochs, threads))
            rows.append({"arch": arch, "threads": threads, "sparrow_s": mine, "pytorch_s": peer,
                         "ratio": peer["median"] / mine["median"]})
    print(f"{'network':<10} {'threads':>7} {'Sparrow s/epoch [min, max]':>28} {'PyTorch s/epoch [min, max]':>28} "
          f"{'PyTorch/Sparrow':>15}")
    for r in rows:
        s, p = r["sparrow_s"], r["pytorch_s"]
        print(f"{r['arch']:<10} {r['threads']:>7} {s['median']:>10.2f} [{s['min']:.2f}, {s['max']:.2f}]{'':>8} "
              f"{p['median']:>10.2f} [{p['min']:.2f}, {p['max']:.2f}]{'':>8} {r['ratio']:>15.2f}")
    print(json.dumps({"torch": torch.__version__, "epochs": a.epochs, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
