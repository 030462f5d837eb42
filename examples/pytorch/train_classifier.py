#!/usr/bin/env python3
"""Trains LeNet-300-100, LeNet-5 or a small transformer with PyTorch on IDX data and exports it to ONNX.

Inputs are raw pixels / 255 (Sparrow's default `eval --scale`). Prints PyTorch's own test
accuracy as `pytorch accuracy: 0.9912 (9912/10000)` and, with --json, writes a summary.

Usage: train_classifier.py --data DIR --arch lenet5|lenet300|transformer [--epochs E] -o MODEL.onnx
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    _, _, kind, ndim = struct.unpack(">BBBB", data[:4])
    if kind != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX files are supported")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(data_dir, split):
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class LeNet300(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):  # the Caffe LeNet-5 used in [LWC] and [DC]: 20-50-500-10, 431K weights
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class RowTransformer(nn.Module):
    """Each image's 28 rows as 28 tokens: a linear embedding with learnt positions, two encoder
    layers (d 64, 8 heads of 8, feed-forward 128), the tokens averaged, a linear classifier."""

    def __init__(self, d=64, heads=8, layers=2):
        super().__init__()
        self.embed = nn.Linear(28, d)
        self.position = nn.Parameter(torch.randn(28, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.classify = nn.Linear(d, 10)

    def forward(self, x):
        tokens = self.embed(x.reshape(-1, 28, 28)) + self.position
        return self.classify(self.encoder(tokens).mean(dim=1))


ARCHS = {"lenet300": LeNet300, "lenet5": LeNet5, "transformer": RowTransformer}


def accuracy(model, images, labels, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            correct += (model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
    return correct


def train(arch, data_dir, epochs, seed=0, quiet=False):
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x_train, y_train = load_split(data_dir, "train")
    model = ARCHS[arch]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(x_train) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        start, perm, total = time.time(), torch.randperm(len(x_train)), 0.0
        for i in range(0, len(x_train), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if not quiet:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x_train):.4f} ({time.time() - start:.1f} s)",
                  file=sys.stderr)
    return model.eval()


def export(model, path, opset=13):
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), path, opset_version=opset, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arch", choices=sorted(ARCHS), default="lenet5")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", help="write a summary JSON here")
    a = p.parse_args()
    start = time.time()
    model = train(a.arch, a.data, a.epochs, a.seed)
    x_test, y_test = load_split(a.data, "t10k")
    correct = accuracy(model, x_test, y_test)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    export(model, a.output)
    print(f"pytorch accuracy: {correct / len(y_test):.4f} ({correct}/{len(y_test)})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"arch": a.arch, "epochs": a.epochs, "correct": correct, "total": len(y_test),
                       "accuracy": correct / len(y_test), "seconds": time.time() - start}, f)


if __name__ == "__main__":
    main()
