#!/usr/bin/env python3
"""Writes the bundled demo data: a deterministic, class-balanced subset of Fashion-MNIST.

The first 1,000 training images of each class (file order of the official training split) and the
first 200 test images of each class (official test split), kept in file order, written as IDX files
compressed with gzip (mtime 0, so the output is byte-identical on every run).

Usage: scripts/make_demo_subset.py [SOURCE_DIR] [OUT_DIR]
(defaults: /usr/share/datasets/fashion-mnist, from Debian's dataset-fashion-mnist, and data/fashion-mnist-demo)
"""
import gzip
import os
import struct
import sys

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "data", "fashion-mnist-demo")
PER_CLASS = {"train": 1000, "t10k": 200}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_idx(path, dims, body):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + body)


os.makedirs(OUT, exist_ok=True)
for split, per_class in PER_CLASS.items():
    (n, h, w), images = read_idx(os.path.join(SOURCE, f"{split}-images-idx3-ubyte.gz"))
    (n_labels,), labels = read_idx(os.path.join(SOURCE, f"{split}-labels-idx1-ubyte.gz"))
    assert n == n_labels
    taken = {c: 0 for c in range(10)}
    keep = []
    for i, label in enumerate(labels):
        if taken[label] < per_class:
            taken[label] += 1
            keep.append(i)
    assert all(v == per_class for v in taken.values())
    size = h * w
    write_idx(os.path.join(OUT, f"{split}-images-idx3-ubyte.gz"), (len(keep), h, w),
              b"".join(images[i * size:(i + 1) * size] for i in keep))
    write_idx(os.path.join(OUT, f"{split}-labels-idx1-ubyte.gz"), (len(keep),), bytes(labels[i] for i in keep))
    print(f"{split}: {len(keep)} images ({per_class} per class)")
