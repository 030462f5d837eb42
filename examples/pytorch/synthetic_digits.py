#!/usr/bin/env python3
"""Writes a small MNIST-like dataset in IDX format (gzip), for machines without MNIST.

Each of the 10 classes is a fixed random stroke pattern on a 28x28 canvas; samples are shifted by
up to 3 pixels, scaled in intensity and noised. File names follow MNIST's, so every tool that
reads MNIST reads this.

Usage: synthetic_digits.py OUT_DIR [--train N] [--test N] [--seed S]
"""
import argparse
import gzip
import os
import struct

import numpy as np


def class_templates(rng):
    templates = np.zeros((10, 28, 28), np.float32)
    for k in range(10):
        for _ in range(3):  # three strokes per class
            (r0, c0), (r1, c1) = rng.integers(5, 23, size=(2, 2))
            for t in np.linspace(0, 1, 40):
                r, c = int(round(r0 + t * (r1 - r0))), int(round(c0 + t * (c1 - c0)))
                templates[k, r - 1:r + 2, c - 1:c + 2] = 1.0
    return templates


def make_split(templates, count, rng):
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = np.zeros((count, 28, 28), np.float32)
    for i, k in enumerate(labels):
        dr, dc = rng.integers(-3, 4, size=2)
        images[i] = np.roll(np.roll(templates[k], dr, axis=0), dc, axis=1) * rng.uniform(0.6, 1.0)
    images += rng.normal(0, 0.15, images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    templates = class_templates(rng)
    os.makedirs(a.out, exist_ok=True)
    for split, count in (("train", a.train), ("t10k", a.test)):
        images, labels = make_split(templates, count, rng)
        write_idx(os.path.join(a.out, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(a.out, f"{split}-labels-idx1-ubyte.gz"), labels)
    print(f"synthetic digits: {a.train} train and {a.test} test images in {a.out}")


if __name__ == "__main__":
    main()
