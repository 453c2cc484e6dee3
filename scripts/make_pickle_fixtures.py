#!/usr/bin/env python3
"""Writes the tiny CIFAR pickle fixtures of crates/selfcon/tests/data/cifar/ (run once; outputs committed).

Each fixture is a CIFAR folder with 2 images per batch file, in one pickle dialect:
  py2      protocol 2 as Python 2's cPickle writes the official archives (byte strings,
           numpy.core.multiarray._reconstruct), assembled opcode by opcode (no Python 2 here)
  np1_p2   Python 3 + numpy 1.x, protocol 2, bytes keys (data loaded with encoding='bytes', re-pickled)
  np1_p4   Python 3 + numpy 1.x, protocol 4 (Python's default), str keys
  np2_p2   Python 3 + numpy 2.x, protocol 2 (numpy._core, _codecs.encode for bytes)
  np2_p5   Python 3 + numpy 2.x, protocol 5 (in-band buffers through _frombuffer)
Pixel k of image i (flattened CHW, as CIFAR stores it) is (7*i + 13*k) % 256; label of image i
(numbered across the whole split) is (3*i + 1) % n_classes. CIFAR-100 also has coarse labels.

Usage: VARIANT needs numpy of the right major version:
  python make_pickle_fixtures.py py2|np1_p2|np1_p4|np2_p2|np2_p5 OUT_DIR
"""
import os
import pickle
import struct
import sys

PER_BATCH = 2
PIXELS = 3072


def pixels(i):
    return bytes((7 * i + 13 * k) % 256 for k in range(PIXELS))


def label(i, n_classes):
    return (3 * i + 1) % n_classes


def splits(variant_classes):
    if variant_classes == 10:
        return "cifar-10-batches-py", [(f"data_batch_{b}", True) for b in range(1, 6)] + [("test_batch", False)]
    return "cifar-100-python", [("train", True), ("test", False)]


class Py2Writer:
    """Emits what Python 2.7's cPickle.dump(obj, f, 2) writes for a CIFAR batch dict."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self):
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def string(self, s):
        s = s if isinstance(s, bytes) else s.encode("latin1")
        if len(s) < 256:
            self.out += b"U" + bytes([len(s)]) + s
        else:
            self.out += b"T" + struct.pack("<I", len(s)) + s
        self.put()

    def int(self, v):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        else:
            self.out += b"J" + struct.pack("<i", v)

    def global_(self, module, name):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        self.put()

    def ndarray_u8(self, shape, raw):
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.int(0)
        self.out += b"\x85"
        self.put()
        self.string(b"b")
        self.out += b"\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"("
        self.int(1)
        for d in shape:
            self.int(d)
        self.out += b"\x86" if len(shape) == 2 else b"\x85"
        self.put()
        self.global_("numpy", "dtype")
        self.string(b"u1")
        self.int(0)
        self.int(1)
        self.out += b"\x87"
        self.put()
        self.out += b"R"
        self.put()
        self.out += b"("
        self.int(3)
        self.string(b"|")
        self.out += b"NNN" + b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1)
        self.int(0)
        self.out += b"t"
        self.put()
        self.out += b"b"
        self.out += b"\x89"
        self.string(raw)
        self.out += b"t"
        self.put()
        self.out += b"b"

    def int_list(self, values):
        self.out += b"]"
        self.put()
        self.out += b"("
        for v in values:
            self.int(v)
        self.out += b"e"

    def batch(self, entries):
        self.out += b"}"
        self.put()
        self.out += b"("
        for key, value in entries:
            self.string(key)
            kind, payload = value
            if kind == "array":
                self.ndarray_u8(*payload)
            elif kind == "ints":
                self.int_list(payload)
            elif kind == "str":
                self.string(payload)
            elif kind == "strs":
                self.out += b"]"
                self.put()
                self.out += b"("
                for s in payload:
                    self.string(s)
                self.out += b"e"
        self.out += b"u."
        return bytes(self.out)


def entries(first, n_classes, train, name):
    idx = list(range(first, first + PER_BATCH))
    raw = b"".join(pixels(i) for i in idx)
    out = [("data", ("array", ((PER_BATCH, PIXELS), raw)))]
    if n_classes == 10:
        out.append(("labels", ("ints", [label(i, 10) for i in idx])))
    else:
        out.append(("fine_labels", ("ints", [label(i, 100) for i in idx])))
        out.append(("coarse_labels", ("ints", [label(i, 20) for i in idx])))
    out.append(("batch_label", ("str", f"{name} of fixture")))
    out.append(("filenames", ("strs", [f"img_{i}.png" for i in idx])))
    return out


def to_python(entries, bytes_keys):
    import numpy as np

    obj = {}
    for key, (kind, payload) in entries:
        if kind == "array":
            shape, raw = payload
            value = np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
        elif kind == "ints":
            value = list(payload)
        elif kind == "str":
            value = payload.encode() if bytes_keys else payload
        else:
            value = [s.encode() if bytes_keys else s for s in payload]
        obj[key.encode() if bytes_keys else key] = value
    return obj


def main():
    variant, out_dir = sys.argv[1], sys.argv[2]
    for n_classes in (10, 100):
        folder, files = splits(n_classes)
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
        first = {True: 0, False: 0}
        for name, train in files:
            e = entries(first[train], n_classes, train, name)
            first[train] += PER_BATCH
            if variant == "py2":
                data = Py2Writer().batch(e)
            else:
                protocol = int(variant.split("_p")[1])
                data = pickle.dumps(to_python(e, bytes_keys=(variant == "np1_p2")), protocol=protocol)
            with open(os.path.join(out_dir, folder, name), "wb") as f:
                f.write(data)


main()
