#!/usr/bin/env python3
"""Writes the architectures Sparrow is timed on as ONNX files, with seeded random weights, for
bench/compare_ort.py. Needs /usr/bin/python3 with torch and Debian's python3-torchvision.

Models (batch axis dynamic in every one; the LSTM's batch axis is its second):
  resnet18        torchvision ResNet-18, 224x224
  mobilenet_v2    torchvision MobileNetV2, 224x224
  squeezenet1_1   torchvision SqueezeNet 1.1, 224x224
  vgg11_bn_32     VGG-11 with BatchNorm for 32x32 inputs (CIFAR-style: 512-512-10 classifier)
  transformer     torch.nn.TransformerEncoder, d=256, 4 heads, 4 layers, 32 tokens, [batch, 32, 256]
  lstm            two-layer LSTM, 256 inputs, 512 hidden, [seq=32, batch, 256], then a 10-way FC
  lenet_300_100   the fully connected LeNet-300-100 of [DC]

BatchNorm statistics are randomized so folding them is not a no-op. Usage:
  model_suite.py OUT_DIR [NAME ...]      (prints one JSON line: name -> {onnx, input, dims})
"""
import json
import os
import sys

import torch
import torch.nn as nn


class VGG11BN32(nn.Module):
    def __init__(self):
        super().__init__()
        layers, channels = [], 3
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


class LstmClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(256, 512, num_layers=2)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[-1])


def lenet_300_100():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def torchvision_model(name):
    import torchvision
    return getattr(torchvision.models, name)()


# name -> (constructor, example input shape, index of the batch axis)
SUITE = {
    "resnet18": (lambda: torchvision_model("resnet18"), [1, 3, 224, 224], 0),
    "mobilenet_v2": (lambda: torchvision_model("mobilenet_v2"), [1, 3, 224, 224], 0),
    "squeezenet1_1": (lambda: torchvision_model("squeezenet1_1"), [1, 3, 224, 224], 0),
    "vgg11_bn_32": (VGG11BN32, [1, 3, 32, 32], 0),
    "transformer": (Transformer, [1, 32, 256], 0),
    "lstm": (LstmClassifier, [32, 1, 256], 1),
    "lenet_300_100": (lenet_300_100, [1, 1, 28, 28], 0),
}


def randomize_batchnorm(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def build(name):
    """The model `name` in eval mode with its seeded weights: the same on every call."""
    torch.manual_seed(0)
    model = SUITE[name][0]().eval()
    randomize_batchnorm(model)
    return model


def export(name, out_dir):
    _, shape, batch_axis = SUITE[name]
    path = os.path.join(out_dir, name + ".onnx")
    if not os.path.exists(path):
        model = build(name)
        x = torch.rand(*shape)
        tmp = path + ".tmp"
        # Exported with gradients on: torch's fused inference path for the transformer encoder
        # (taken under no_grad) has no ONNX form.
        torch.onnx.export(model, x, tmp, input_names=["x"], output_names=["y"], opset_version=13,
                          dynamic_axes={"x": {batch_axis: "batch"}, "y": {0: "batch"}})
        os.replace(tmp, path)
    return {"onnx": path, "input": "x", "dims": shape, "batch_axis": batch_axis}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    names = sys.argv[2:] or list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        sys.exit(f"model_suite: unknown model(s) {unknown}; known: {list(SUITE)}")
    torch.set_num_threads(1)
    print(json.dumps({name: export(name, out_dir) for name in names}))


if __name__ == "__main__":
    main()
