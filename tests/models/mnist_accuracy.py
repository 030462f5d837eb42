#!/usr/bin/env python3
"""MNIST accuracy of Sparrow versus the producing framework, for several producers.

Trains LeNet-5 and LeNet-300-100 with PyTorch, then writes each as:
  - PyTorch exports at opsets 9 and 13;
  - hand-built graphs as other producers write them: opset 9 with float16 weights (LeNet-5),
    opset 7 / IR 3 with MatMul+Add and float16 weights (LeNet-300-100).
Each is evaluated by `sparrow eval` and by a reference computed in PyTorch/numpy on exactly the
same (rounded) weights. Fails if any correct-count differs by more than one image.

Usage: mnist_accuracy.py --data DIR --sparrow BIN --work DIR [--epochs E]
Exit 77 (CTest skip) when the MNIST files are absent.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pytorch"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--sparrow", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    images = os.path.join(a.data, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")
    if not os.path.exists(images):
        print(f"SKIP: MNIST not found at {a.data}")
        return 77
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import TensorProto, helper, numpy_helper
    from train_classifier import accuracy, export, load_split, train

    os.makedirs(a.work, exist_ok=True)
    x_test, y_test = load_split(a.data, "t10k")
    rows = []

    def check(name, path, reference_correct):
        out = subprocess.run([a.sparrow, "--quiet", "eval", path, "--images", images, "--labels", labels, "--json"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{name}: sparrow eval failed: {out.stderr}")
        got = json.loads(out.stdout)
        rows.append({"model": name, "reference_correct": reference_correct, "sparrow_correct": got["correct"],
                     "total": got["total"], "sparrow_seconds": got["seconds"]})

    def save(name, nodes, inputs, outputs, inits, opset, ir=None):
        if ir is not None and ir < 4:
            inputs = inputs + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
        model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, initializer=inits),
                                  opset_imports=[helper.make_opsetid("", opset)], producer_name="hand-built")
        if ir is not None:
            model.ir_version = ir
        path = os.path.join(a.work, name + ".onnx")
        onnx.save(model, path)
        return path

    half = lambda t: t.detach().numpy().astype(np.float16)

    # LeNet-5: PyTorch exports, then a float16 opset-9 graph.
    lenet5 = train("lenet5", a.data, a.epochs, quiet=True)
    ref = accuracy(lenet5, x_test, y_test)
    for opset in (9, 13):
        path = os.path.join(a.work, f"lenet5_op{opset}.onnx")
        export(lenet5, path, opset)
        check(f"lenet5 pytorch opset {opset}", path, ref)
    w = {k: half(v) for k, v in lenet5.state_dict().items()}
    with torch.no_grad():
        t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items()}
        logits = []
        for i in range(0, len(x_test), 1000):
            x = F.max_pool2d(F.conv2d(x_test[i:i + 1000], t["conv1.weight"], t["conv1.bias"]), 2)
            x = F.max_pool2d(F.conv2d(x, t["conv2.weight"], t["conv2.bias"]), 2)
            x = F.relu(F.linear(x.flatten(1), t["fc1.weight"], t["fc1.bias"]))
            logits.append(F.linear(x, t["fc2.weight"], t["fc2.bias"]))
        ref16 = (torch.cat(logits).argmax(1) == y_test).sum().item()
    inits = [numpy_helper.from_array(v, k.replace(".", "_")) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 800], np.int64), "flat_shape"))
    n = lambda k: k.replace(".", "_")
    path = save("lenet5_fp16_op9", [
        helper.make_node("Conv", ["image", n("conv1.weight"), n("conv1.bias")], ["c1"], kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["c1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", n("conv2.weight"), n("conv2.bias")], ["c2"], kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["c2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p2", "flat_shape"], ["f"]),
        helper.make_node("Gemm", ["f", n("fc1.weight"), n("fc1.bias")], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", n("fc2.weight"), n("fc2.bias")], ["logits"], transB=1)],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, 9)
    check("lenet5 hand-built opset 9, float16 weights", path, ref16)

    # LeNet-300-100: PyTorch export, then MatMul+Add with float16 weights at opset 7 / IR 3.
    lenet300 = train("lenet300", a.data, a.epochs, quiet=True)
    path = os.path.join(a.work, "lenet300_op13.onnx")
    export(lenet300, path, 13)
    check("lenet300 pytorch opset 13", path, accuracy(lenet300, x_test, y_test))
    w = {k: half(v) for k, v in lenet300.state_dict().items()}
    x = x_test.flatten(1).numpy()
    for i in (1, 2, 3):
        x = x @ w[f"fc{i}.weight"].astype(np.float32).T + w[f"fc{i}.bias"].astype(np.float32)
        if i < 3:
            x = np.maximum(x, 0)
    ref16 = int((x.argmax(1) == y_test.numpy()).sum())
    nodes, inits, prev = [helper.make_node("Reshape", ["image", "flat_shape"], ["h0"])], [], "h0"
    inits.append(numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"))
    for i in (1, 2, 3):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w[f"fc{i}.weight"].T), f"w{i}"),
                  numpy_helper.from_array(w[f"fc{i}.bias"], f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], ["logits" if i == 3 else f"a{i}"])]
        if i < 3:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            prev = f"h{i}"
    path = save("lenet300_matmul_add_fp16_op7", nodes,
                [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits, 7, ir=3)
    check("lenet300 hand-built opset 7 MatMul+Add, float16 weights", path, ref16)

    # Compressed models: the sparse engine must predict exactly what the decompressed weights predict.
    engine_rows = []
    for name, onnx_path, options in (
            ("lenet300, 90% pruned, 6-bit", os.path.join(a.work, "lenet300_op13.onnx"), ["--sparsity", "0.9", "--bits", "6"]),
            ("lenet5, 70% pruned (conv1 30%), 8/5-bit", os.path.join(a.work, "lenet5_op13.onnx"),
             ["--sparsity", "0.7", "--layer", "conv1.weight:sparsity=0.3"])):
        spw = onnx_path.replace(".onnx", ".spw")
        subprocess.run([a.sparrow, "--quiet", "compress", onnx_path, "-o", spw, *options], check=True)
        preds = []
        for mode in ([], ["--dense"]):
            out = os.path.join(a.work, f"pred{len(preds)}.npy")
            r = subprocess.run([a.sparrow, "--quiet", *mode, "eval", spw, "--images", images, "--labels", labels,
                                "--json", "--predictions", out], capture_output=True, text=True, check=True)
            preds.append((np.load(out), json.loads(r.stdout)))
        same = int((preds[0][0] == preds[1][0]).sum())
        engine_rows.append((name, preds[0][1]["accuracy"], preds[1][1]["accuracy"], same, len(preds[0][0])))

    print(f"{'model':<58} {'reference':>10} {'sparrow':>10}")
    failed = False
    for r in rows:
        ok = abs(r["reference_correct"] - r["sparrow_correct"]) <= 1
        failed |= not ok
        print(f"{r['model']:<58} {r['reference_correct'] / r['total']:>10.4f} {r['sparrow_correct'] / r['total']:>10.4f}"
              f"{'' if ok else '  MISMATCH'}")
    print(f"\n{'compressed model':<44} {'engine':>8} {'dense':>8} {'same predictions':>18}")
    for name, acc_engine, acc_dense, same, total in engine_rows:
        print(f"{name:<44} {acc_engine:>8.4f} {acc_dense:>8.4f} {same:>12}/{total}")
        failed |= same != total
    with open(os.path.join(a.work, "mnist_accuracy.json"), "w") as f:
        json.dump({"producers": rows, "engine": engine_rows}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
