#!/usr/bin/env python3
"""Writes Fashion-MNIST in CIFAR-10's python layout (issue #5's GPU recipe): the first 50,000
training images as data_batch_1..5, the 10,000 test images as test_batch, 28x28 zero-padded to
32x32, grey copied to 3 channels, plus batches.meta, so `--dataset cifar10` reads it unchanged.

  python bench/fashion_as_cifar.py IDX_FOLDER OUT_ROOT [PER_BATCH]   # creates OUT_ROOT/cifar-10-batches-py/

PER_BATCH (default 10000) shrinks every batch, for dry runs of bench/gpu_check.sh.

Needs numpy.
"""
import gzip
import os
import pickle
import sys

import numpy as np


def read_idx(folder, name):
    path = os.path.join(folder, name)
    opener = open if os.path.exists(path) else gzip.open
    with opener(path if os.path.exists(path) else path + ".gz", "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def as_cifar_rows(images):
    padded = np.zeros((len(images), 32, 32), dtype=np.uint8)
    padded[:, 2:30, 2:30] = images
    # CIFAR rows: 1024 red, 1024 green, 1024 blue values, row-major.
    return np.repeat(padded.reshape(len(images), 1, 1024), 3, axis=1).reshape(len(images), 3072)


def main():
    src, root = sys.argv[1], sys.argv[2]
    per_batch = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    out = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(out, exist_ok=True)
    train_x, train_y = read_idx(src, "train-images-idx3-ubyte"), read_idx(src, "train-labels-idx1-ubyte")
    test_x, test_y = read_idx(src, "t10k-images-idx3-ubyte"), read_idx(src, "t10k-labels-idx1-ubyte")
    if len(train_x) < 50000 or len(test_x) < 10000:
        sys.exit(f"{src}: needs the full Fashion-MNIST (60,000 + 10,000 images)")
    batches = [(f"data_batch_{i + 1}", train_x[i * 10000:i * 10000 + per_batch], train_y[i * 10000:i * 10000 + per_batch])
               for i in range(5)] + [("test_batch", test_x[:per_batch], test_y[:per_batch])]
    for name, x, y in batches:
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": [int(v) for v in y], "data": as_cifar_rows(x),
                         "filenames": [f"{name}_{i}.png" for i in range(len(y))]}, f, protocol=2)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    with open(os.path.join(out, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}, f, protocol=2)
    print(out)


if __name__ == "__main__":
    main()
