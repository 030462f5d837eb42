#!/usr/bin/env python3
"""The benchmark suite's models (bench/model_suite.py) against PyTorch, as compare_ort.py times them.

For each model: its ONNX export, run by `sparrow run` on the dense executor, agrees with PyTorch's
output on the same input (largest difference at most 1e-4 of the largest output); compressed as
compare_ort.py compresses it (90% sparsity, 4-bit codes), it gives on the engine what its own
weights give on the dense executor (`sparrow --dense run`) within 1e-5 of the largest output. Two
samples along each model's batch axis. Exits 77 (skipped) without torch or torchvision.

Usage: suite_outputs.py --sparrow BIN --work DIR [NAME ...]
"""
import argparse
import os
import subprocess
import sys
import warnings

try:
    import numpy as np
    import torch
    import torchvision  # noqa: F401  (the suite's CNNs)
except ImportError as e:
    print(f"suite_outputs: skipped, {e} (needs /usr/bin/python3 with torch and python3-torchvision)")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import model_suite  # noqa: E402

TORCH_TOLERANCE = 1e-4   # of the largest |output|: float sums in another order through ~20 layers
ENGINE_TOLERANCE = 1e-5  # the engine against the same compressed weights on the dense executor


def relative_difference(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def sparrow_run(args, model, x_path, y_path, dense=False):
    cmd = [args.sparrow, "--quiet"] + (["--dense"] if dense else []) + ["run", model, "-i", x_path, "-o", y_path]
    subprocess.run(cmd, check=True)
    return np.load(y_path)


def check(args, name):
    """Returns the failures for one model (empty when it passes)."""
    _, shape, batch_axis = model_suite.SUITE[name]
    onnx_path = model_suite.export(name, args.work)["onnx"]
    shape = list(shape)
    shape[batch_axis] = 2
    torch.manual_seed(1)
    x = torch.rand(*shape)
    with torch.no_grad():
        want = model_suite.build(name)(x).numpy()
    x_path = os.path.join(args.work, name + ".x.npy")
    np.save(x_path, x.numpy())
    failures = []
    got = sparrow_run(args, onnx_path, x_path, os.path.join(args.work, name + ".y.npy"))
    torch_error = relative_difference(got, want) if got.shape == want.shape else float("inf")
    if not torch_error <= TORCH_TOLERANCE:
        failures.append(f"{name}: ONNX on Sparrow vs PyTorch {torch_error:.2e} (shapes {got.shape}, {want.shape})")
    spw = os.path.join(args.work, name + ".spw")
    subprocess.run([args.sparrow, "--quiet", "compress", onnx_path, "-o", spw, "--sparsity", "0.9", "--bits", "4"],
                   check=True)
    engine = sparrow_run(args, spw, x_path, os.path.join(args.work, name + ".engine.npy"))
    dense = sparrow_run(args, spw, x_path, os.path.join(args.work, name + ".dense.npy"), dense=True)
    engine_error = relative_difference(engine, dense)
    if not engine_error <= ENGINE_TOLERANCE:
        failures.append(f"{name}: .spw on the engine vs the dense executor {engine_error:.2e}")
    print(f"{name:14s} ONNX vs PyTorch {torch_error:.1e}   .spw engine vs dense {engine_error:.1e}", flush=True)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparrow", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("names", nargs="*", default=list(model_suite.SUITE))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)  # the exporter's notes on the LSTM and constants
    failures = [f for name in args.names for f in check(args, name)]
    for f in failures:
        print("FAILED:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
