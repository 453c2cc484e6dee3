#!/usr/bin/env python3
"""torchvision's DataLoader with the official SelfCon pre-training transforms, on the same data that
`selfcon bench loader` reads, for a side-by-side images/s comparison on the same machine.

  python bench/torchvision_loader.py --dataset fashionmnist --data_folder /usr/share/datasets/fashion-mnist \
      --num_workers 2 --batch_size 256

Datasets: fashionmnist/mnist (IDX files, padded to 32x32 RGB exactly as selfcon does),
cifar10/cifar100 (torchvision's CIFAR classes), and imagenet/folder (ImageFolder over
DATA_FOLDER/train, the official transform at --size, ImageNet's mean and std):

  python bench/torchvision_loader.py --dataset imagenet --data_folder /tmp/photos --size 224

Needs torch, torchvision, numpy, Pillow.
"""
import argparse
import gzip
import json
import os
import pickle
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms


class PaddedIdx(Dataset):
    """MNIST-style IDX images, zero-padded 28->32 and repeated to RGB, as PIL images."""

    def __init__(self, folder, transform):
        def read(name):
            path = os.path.join(folder, name)
            opener = gzip.open if not os.path.exists(path) else open
            path = path if os.path.exists(path) else path + ".gz"
            with opener(path, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

        images = read("train-images-idx3-ubyte")
        self.labels = read("train-labels-idx1-ubyte").astype(np.int64)
        padded = np.zeros((len(images), 32, 32), dtype=np.uint8)
        padded[:, 2:30, 2:30] = images
        self.images = np.repeat(padded[..., None], 3, axis=-1)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], "RGB")), int(self.labels[i])


MEANS_STDS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "folder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def pretrain_transform(dataset, weakaug=False, size=32):
    """The official pre-training augmentation (SPEC §3.1) at `size`."""
    mean, std = MEANS_STDS.get(dataset, ((0.2194,) * 3, (0.3361,) * 3))
    ops = [transforms.RandomResizedCrop(size=size, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip()]
    if not weakaug:
        ops += [transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2)]
    ops += [transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)]
    return transforms.Compose(ops)


def open_train_set(dataset, data_folder, transform):
    if dataset in ("imagenet", "folder"):
        return datasets.ImageFolder(os.path.join(data_folder, "train"), transform=transform)
    if dataset in ("cifar10", "cifar100"):
        base = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100

        class Cifar(base):
            # torchvision checks the files against the official MD5s; CIFAR-layout data made by
            # bench/fashion_as_cifar.py is read by the same code path without that check.
            def _check_integrity(self):
                return True

            def _load_meta(self):
                path = os.path.join(self.root, self.base_folder, self.meta["filename"])
                with open(path, "rb") as f:
                    self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        return Cifar(root=data_folder, train=True, transform=transform, download=False)
    return PaddedIdx(data_folder, transform)


def process_cpu_seconds(pids):
    """CPU time (user + system) of these processes so far, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="fashionmnist")
    p.add_argument("--data_folder", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=0, help="batches to time after one warm-up batch; 0 = one epoch")
    p.add_argument("--weakaug", action="store_true")
    p.add_argument("--size", type=int, default=None, help="crop size (default 32; 224 for imagenet/folder)")
    args = p.parse_args()
    torch.manual_seed(0)
    size = args.size or (224 if args.dataset in ("imagenet", "folder") else 32)
    data = open_train_set(args.dataset, args.data_folder, pretrain_transform(args.dataset, args.weakaug, size))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                        pin_memory=False, drop_last=False, persistent_workers=args.num_workers > 0)
    per_epoch = len(loader)
    timed = args.batches or per_epoch - 1
    done = images = 0
    start = None
    pids = [os.getpid()]
    while done < timed:
        for x, y in loader:
            if start is None:
                # The workers exist once the first batch is in: count the CPU of all of them.
                it = loader._iterator
                pids += [w.pid for w in getattr(it, "_workers", [])]
                cpu_start = process_cpu_seconds(pids)
                start = time.perf_counter()
                continue
            images += len(y)
            done += 1
            if done == timed:
                break
    seconds = time.perf_counter() - start
    cpu = process_cpu_seconds(pids) - cpu_start
    print(json.dumps({"bench": "torchvision_loader", "dataset": args.dataset, "batch_size": args.batch_size,
                      "num_workers": args.num_workers, "batches": done, "images": images, "seconds": seconds,
                      "images_per_s": images / seconds, "size": size,
                      "cpu_seconds": cpu, "cpu_ms_per_image": 1000 * cpu / images, "cores_busy": cpu / seconds,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
