#!/usr/bin/env python3
"""Generates the test model corpus: ONNX models, inputs and reference outputs.

Usage: make_corpus.py OUT_DIR

Writes OUT_DIR/manifest.json listing cases {name, model, inputs, outputs}. Models exported from
PyTorch carry PyTorch's outputs; hand-built models (other producers: old opsets, float16 weights,
MatMul+Add, legacy attribute forms) carry outputs computed with numpy/torch functional ops.
Without torch/onnx the manifest says why and the C++ test skips.
"""
import json
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "corpus"
os.makedirs(OUT, exist_ok=True)

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"skipped": f"python modules missing: {e}", "cases": []}, f)
    print(f"corpus skipped: {e}")
    sys.exit(0)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "pytorch"))
from train_classifier import LeNet5  # noqa: E402  (the Caffe LeNet-5 of [LWC]: 20-50-500-10)

torch.manual_seed(0)
np.random.seed(0)
cases = []


def save_case(name, model_path, inputs, outputs):
    entry = {"name": name, "model": os.path.basename(model_path), "inputs": [], "outputs": []}
    for i, x in enumerate(inputs):
        p = f"{name}.in{i}.npy"
        np.save(os.path.join(OUT, p), x)
        entry["inputs"].append(p)
    for i, y in enumerate(outputs):
        p = f"{name}.out{i}.npy"
        np.save(os.path.join(OUT, p), np.asarray(y, dtype=np.float32))
        entry["outputs"].append(p)
    onnx.checker.check_model(onnx.load(model_path))
    cases.append(entry)


def randomize_bn(module):
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)


def export_torch(name, module, inputs, opset, dynamic=True):
    module.eval()
    randomize_bn(module)
    path = os.path.join(OUT, f"{name}.onnx")
    in_names = [f"input{i}" for i in range(len(inputs))]
    with torch.no_grad():
        out = module(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    out_names = [f"output{i}" for i in range(len(outs))]
    axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic else None
    torch.onnx.export(module, tuple(inputs), path, opset_version=opset, input_names=in_names,
                      output_names=out_names, dynamic_axes=axes)
    save_case(name, path, [x.numpy() for x in inputs], [o.numpy() for o in outs])


# ---------------------------------------------------------------- PyTorch models
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class CnnBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4), nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.fc, self.bn = nn.Linear(12, 6), nn.BatchNorm1d(6)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.leaky_relu(self.b2(self.c2(x)), 0.1)
        x = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        x = torch.tanh(self.dw(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.sigmoid(self.bn(self.fc(x)))


class ViewFlatten(nn.Module):  # x.view(x.size(0), -1) exports Shape/Gather/Unsqueeze/Concat/Reshape
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, stride=2), nn.Linear(4 * 13 * 13, 10)

    def forward(self, x):
        x = F.avg_pool2d(F.relu(self.conv(x)), 1)
        return F.log_softmax(self.fc(x.view(x.size(0), -1)), dim=1)


class LstmClassifier(nn.Module):  # reads an image row by row
    def __init__(self, with_state=False):
        super().__init__()
        self.lstm, self.fc, self.with_state = nn.LSTM(28, 32, batch_first=True), nn.Linear(32, 10), with_state
        self.h0, self.c0 = nn.Parameter(torch.randn(1, 1, 32) * 0.5), nn.Parameter(torch.randn(1, 1, 32) * 0.5)

    def forward(self, x):
        x = x.view(x.size(0), 28, 28)
        if self.with_state:
            n = x.size(0)
            y, (h, c) = self.lstm(x, (self.h0.expand(1, n, 32).contiguous(), self.c0.expand(1, n, 32).contiguous()))
        else:
            y, (h, c) = self.lstm(x)
        return self.fc(y[:, -1]), h.squeeze(0)


class MiscOps(nn.Module):  # many operators and several outputs
    def forward(self, x):  # x: [N, 4, 6, 6]
        a = torch.softmax(x, dim=1)
        b = torch.log_softmax(x.permute(0, 2, 3, 1), dim=-1)
        p, q = torch.split(x, [1, 3], dim=1)
        s = x[:, 1:4:2, ::2, 1:]
        r = F.pad(x, (1, 2, 0, 1), mode="reflect") + F.pad(x, (1, 2, 0, 1), mode="replicate")
        c = F.pad(x, (2, 1, 1, 0), value=0.5)
        e = torch.exp(torch.clamp(x, -1.0, 0.5)) + torch.log(x.abs() + 1) + torch.sqrt(x.abs())
        m = torch.max(p, q[:, :1]) - torch.min(q[:, 1:2], q[:, 2:3]) / (x[:, 3:4].abs() + 1)
        g = x[:, 2] * 2.0 + x.mean(dim=(2, 3), keepdim=True)[:, 1] ** 2
        u = torch.cat([p.expand(-1, 2, -1, -1), s.sum(dim=3, keepdim=True).expand(-1, -1, -1, 6)[:, :, :, :1].expand(-1, -1, -1, 6)[:, :, :3].repeat(1, 1, 2, 1)], dim=1)
        k = F.max_pool2d(x, 3, stride=2, padding=1, dilation=1, ceil_mode=True)
        t = torch.sigmoid(x).unsqueeze(1).squeeze(1).reshape(x.size(0), 2, -1).transpose(1, 2)
        return a, b, s, r, c, e, m, g, u, k, t


class BatchMatMul(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 7))

    def forward(self, x, y):  # x [N, 3, 5], y [N, 5, 4]
        return torch.matmul(x, self.w), torch.matmul(x, y), torch.matmul(x[:, 0], self.w)


class TransformerDeadHeads(nn.Module):
    """Two encoder layers (d 32, four heads of 8) whose heads 1 and 3 carry nothing: their value
    rows, value biases and output-projection columns are zero, so removing them changes nothing."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 10)
        with torch.no_grad():
            for p in self.parameters():  # the encoder's layers start as copies: make them differ
                p.copy_(torch.randn_like(p) * 0.3)
            for l in self.enc.layers:
                attn = l.self_attn
                for h in (1, 3):
                    v = slice(64 + 8 * h, 64 + 8 * (h + 1))
                    attn.in_proj_weight[v] = 0
                    attn.in_proj_bias[v] = 0
                    attn.out_proj.weight[:, 8 * h:8 * (h + 1)] = 0

    def forward(self, x):  # x [N, 6, 32]
        return self.head(self.enc(x).mean(dim=1))


img = torch.randn(3, 1, 28, 28)
export_torch("mlp_op13", MLP(), [torch.randn(3, 784)], 13)
export_torch("lenet5_op9", LeNet5(), [img], 9)
export_torch("lenet5_op13", LeNet5(), [img], 13)
export_torch("cnn_bn_op13", CnnBn(), [torch.randn(3, 3, 15, 15)], 13)
export_torch("cnn_bn_op11", CnnBn(), [torch.randn(3, 3, 15, 15)], 11)
export_torch("view_flatten_op9", ViewFlatten(), [img], 9)
export_torch("view_flatten_op13", ViewFlatten(), [img], 13)
export_torch("lstm_op13", LstmClassifier(), [img], 13)
export_torch("lstm_state_op11", LstmClassifier(with_state=True), [img], 11)
export_torch("misc_ops_op13", MiscOps(), [torch.randn(2, 4, 6, 6)], 13)
export_torch("misc_ops_op11", MiscOps(), [torch.randn(2, 4, 6, 6)], 11)
export_torch("batch_matmul_op13", BatchMatMul(), [torch.randn(2, 3, 5), torch.randn(2, 5, 4)], 13)
export_torch("transformer_dead_heads_op13", TransformerDeadHeads(), [torch.randn(3, 6, 32)], 13)
export_torch("transformer_dead_heads_op11", TransformerDeadHeads(), [torch.randn(3, 6, 32)], 11)
export_torch("mlp_fixed_batch_op13", MLP(), [torch.randn(2, 784)], 13, dynamic=False)


# ---------------------------------------------------------------- hand-built models (other producers)
def build(name, nodes, inputs, outputs, inits, opset, feeds, expected, ir=None):
    outputs = [vi(o.name, o.type.tensor_type.elem_type, list(np.shape(e))) if not o.type.tensor_type.HasField("shape")
               else o for o, e in zip(outputs, expected)]
    if ir is not None and ir < 4:  # old IR versions list every initializer among the graph inputs
        inputs = inputs + [vi(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand-built")
    if ir:
        model.ir_version = ir
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    save_case(name, path, feeds, expected)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(array, name)


rng = np.random.default_rng(1)
f32 = lambda *s: rng.standard_normal(s).astype(np.float32)

# opset 7, MatMul + Add, float16 weights (computed in float32 from the rounded values)
w1, b1, w2, b2 = (f32(784, 32) * 0.1).astype(np.float16), f32(32).astype(np.float16), \
                 (f32(32, 10) * 0.3).astype(np.float16), f32(10).astype(np.float16)
x = f32(4, 784)
h = np.maximum(x @ w1.astype(np.float32) + b1.astype(np.float32), 0)
build("mlp_matmul_add_fp16_op7",
      [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
       helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
       helper.make_node("Add", ["h3", "b2"], ["y"])],
      [vi("x", TensorProto.FLOAT, ["N", 784])], [vi("y", TensorProto.FLOAT, ["N", 10])],
      [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)], 7, [x],
      [h @ w2.astype(np.float32) + b2.astype(np.float32)], ir=3)

# opset 9, float16 input declared, Gemm transB=1 with float16 weights and float64 bias, Softmax
w, b = (f32(10, 20) * 0.3).astype(np.float16), f32(10).astype(np.float64)
x16 = f32(3, 20).astype(np.float16)
logits = x16.astype(np.float32) @ w.astype(np.float32).T + b.astype(np.float32)
sm = np.exp(logits - logits.max(1, keepdims=True))
build("fp16_input_gemm_op9",
      [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1), helper.make_node("Softmax", ["z"], ["y"])],
      [vi("x", TensorProto.FLOAT16, ["N", 20])], [vi("y", TensorProto.FLOAT16, ["N", 10])],
      [init("w", w), init("b", b)], 9, [x16], [sm / sm.sum(1, keepdims=True)])

# Conv -> BatchNormalization -> Relu (folded at import), opset 9
cw, cb = f32(6, 3, 3, 3) * 0.3, f32(6)
g, beta, mean, var = rng.uniform(0.5, 1.5, 6).astype(np.float32), f32(6), f32(6), rng.uniform(0.5, 2, 6).astype(np.float32)
x = f32(2, 3, 8, 8)
conv = F.conv2d(torch.from_numpy(x), torch.from_numpy(cw), torch.from_numpy(cb), padding=1).numpy()
bn = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3) * g[None, :, None, None] + beta[None, :, None, None]
build("conv_bn_fold_op9",
      [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
       helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"], epsilon=1e-3),
       helper.make_node("Relu", ["n"], ["y"])],
      [vi("x", TensorProto.FLOAT, ["N", 3, 8, 8])], [vi("y", TensorProto.FLOAT, ["N", 6, 8, 8])],
      [init("cw", cw), init("cb", cb), init("g", g), init("beta", beta), init("mean", mean), init("var", var)],
      9, [x], [np.maximum(bn, 0)])

# Gemm transA=1, alpha/beta, C [1, N], then BatchNormalization on [N, C] (folded), opset 11
a, wb, c = f32(6, 4), f32(6, 5), f32(1, 5)
g5, be5, mu5, var5 = rng.uniform(0.5, 1.5, 5).astype(np.float32), f32(5), f32(5), rng.uniform(0.5, 2, 5).astype(np.float32)
gemm = 0.5 * a.T @ wb + 2.0 * c
build("gemm_attrs_bn_op11",
      [helper.make_node("Gemm", ["a", "wb", "c"], ["z"], transA=1, alpha=0.5, beta=2.0),
       helper.make_node("BatchNormalization", ["z", "g", "be", "mu", "var"], ["y"])],
      [vi("a", TensorProto.FLOAT, [6, 4])], [vi("y", TensorProto.FLOAT, [4, 5])],
      [init("wb", wb), init("c", c), init("g", g5), init("be", be5), init("mu", mu5), init("var", var5)],
      11, [a], [(gemm - mu5) / np.sqrt(var5 + 1e-5) * g5 + be5])

# auto_pad SAME_UPPER / SAME_LOWER / VALID on Conv and pooling, opset 11
x = f32(2, 2, 9, 9)
k = f32(4, 2, 3, 3) * 0.3
tx = torch.from_numpy(x)
same_upper = F.conv2d(F.pad(tx, (1, 1, 1, 1)), torch.from_numpy(k), stride=2).numpy()     # total pad 2 -> 1/1
same_lower_pool = F.max_pool2d(F.pad(tx, (1, 0, 1, 0), value=-np.inf), 2, stride=2).numpy()  # total 1 -> 1/0
valid_avg = F.avg_pool2d(tx, 3, stride=3).numpy()
build("auto_pad_op11",
      [helper.make_node("Conv", ["x", "k"], ["y0"], auto_pad="SAME_UPPER", strides=[2, 2]),
       helper.make_node("MaxPool", ["x"], ["y1"], auto_pad="SAME_LOWER", kernel_shape=[2, 2], strides=[2, 2]),
       helper.make_node("AveragePool", ["x"], ["y2"], auto_pad="VALID", kernel_shape=[3, 3], strides=[3, 3])],
      [vi("x", TensorProto.FLOAT, ["N", 2, 9, 9])],
      [vi("y0", TensorProto.FLOAT, None), vi("y1", TensorProto.FLOAT, None), vi("y2", TensorProto.FLOAT, None)],
      [init("k", k)], 11, [x], [same_upper, same_lower_pool, valid_avg])

# Legacy attribute forms at opset 9: Unsqueeze/Squeeze axes, Slice starts/ends, Pad pads/value,
# Clip min/max, Softmax coerced to 2-D (axis=1 on a 4-D input), Reshape with 0 and -1, Constant.
x = f32(2, 3, 4, 5)
flat = x.reshape(2, -1)
soft = np.exp(flat - flat.max(1, keepdims=True))
soft = (soft / soft.sum(1, keepdims=True)).reshape(x.shape)
sl = x[:, 1:3, -3:, ::1]
pad = np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), constant_values=0.25)
clip = np.clip(x, -0.5, 0.7)
resh = (x.reshape(2, 3, -1) * np.float32(3.0))[:, None][:, 0]
build("legacy_attrs_op9",
      [helper.make_node("Softmax", ["x"], ["y0"], axis=1),
       helper.make_node("Slice", ["x"], ["y1"], starts=[1, -3], ends=[3, 1000], axes=[1, 2]),
       helper.make_node("Pad", ["x"], ["y2"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.25),
       helper.make_node("Clip", ["x"], ["y3"], min=-0.5, max=0.7),
       helper.make_node("Constant", [], ["three"], value=helper.make_tensor("t", TensorProto.FLOAT, [], [3.0])),
       helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [3], [0, 3, -1])),
       helper.make_node("Reshape", ["x", "shape"], ["r0"]), helper.make_node("Mul", ["r0", "three"], ["r1"]),
       helper.make_node("Unsqueeze", ["r1"], ["r2"], axes=[1]), helper.make_node("Squeeze", ["r2"], ["y4"], axes=[1])],
      [vi("x", TensorProto.FLOAT, ["N", 3, 4, 5])], [vi(f"y{i}", TensorProto.FLOAT, None) for i in range(5)],
      [], 9, [x], [soft, sl, pad, clip, resh])

# Opset 13 input forms: Slice with negative steps, Split input, Unsqueeze axes input, Pad input,
# Clip inputs, ConstantOfShape, Expand, Gather with negative indices, Cast, Pow, Identity, Dropout.
x = f32(2, 6, 5)
idx = np.array([-1, 0, 2], dtype=np.int64)
build("opset13_inputs",
      [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y0"]),
       helper.make_node("Split", ["x", "split"], ["s0", "s1"], axis=1),
       helper.make_node("Unsqueeze", ["s0", "uax"], ["y1"]),
       helper.make_node("Pad", ["s1", "pads", "pv"], ["y2"]),
       helper.make_node("Clip", ["x", "lo", ""], ["y3"]),
       helper.make_node("ConstantOfShape", ["cshape"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])),
       helper.make_node("Expand", ["ones", "eshape"], ["e0"]), helper.make_node("Add", ["e0", "x"], ["y4"]),
       helper.make_node("Gather", ["x", "idx"], ["y5"], axis=2),
       helper.make_node("Cast", ["idx"], ["idxf"], to=TensorProto.FLOAT),
       helper.make_node("Pow", ["y5", "two"], ["p0"]), helper.make_node("Add", ["p0", "idxf"], ["p1"]),
       helper.make_node("Identity", ["p1"], ["p2"]), helper.make_node("Dropout", ["p2"], ["y6"])],
      [vi("x", TensorProto.FLOAT, ["N", 6, 5])], [vi(f"y{i}", TensorProto.FLOAT, None) for i in range(7)],
      [init("st", np.array([-1, 4], np.int64)), init("en", np.array([-100, 0], np.int64)),
       init("ax", np.array([2, 1], np.int64)), init("sp", np.array([-2, -1], np.int64)),
       init("split", np.array([2, 4], np.int64)), init("uax", np.array([0, -1], np.int64)),
       init("pads", np.array([0, 1, 0, 0, 0, 2], np.int64)), init("pv", np.array(-1.0, np.float32)),
       init("lo", np.array(0.1, np.float32)), init("cshape", np.array([1, 5], np.int64)),
       init("eshape", np.array([6, 1], np.int64)), init("idx", idx), init("two", np.array(2.0, np.float32))],
      13, [x],
      [x[:, 4:0:-1, -1::-2], x[:, :2][None, ..., None],
       np.pad(x[:, 2:], ((0, 0), (1, 0), (0, 2)), constant_values=-1.0), np.maximum(x, 0.1),
       x + 1.5, x[:, :, [4, 0, 2]], x[:, :, [4, 0, 2]] ** 2 + idx.astype(np.float32)])

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump({"cases": cases}, f, indent=1)
print(f"corpus: {len(cases)} cases in {OUT}")
