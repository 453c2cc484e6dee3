#!/usr/bin/env python3
"""Reference outputs of torchvision's PIL transforms, for crates/selfcon/tests/integration/augment.rs.

Run once with torchvision and Pillow installed (outputs committed):
  python scripts/make_augment_references.py crates/selfcon/tests/data/augment/torchvision_reference.json

Every deterministic operation of the pre-training and evaluation pipelines is applied with fixed
parameters to fixed inputs through torchvision.transforms.functional on PIL images; pixels are
stored base64-encoded (H x W x 3, uint8), normalised tensors as float lists.
"""
import base64
import json
import sys

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

rng = np.random.default_rng(2023)


def encode(img):
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return {"h": a.shape[0], "w": a.shape[1], "pixels": base64.b64encode(a.tobytes()).decode()}


def smooth(h, w):
    """A smooth colour image plus noise: resampling errors show on both."""
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 128 + 90 * np.cos((x + y) / 6.0)
    b = 255 * x / max(w - 1, 1)
    a = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


inputs = {
    "noise32": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB"),
    "smooth32": smooth(32, 32),
    "smooth_40x28": smooth(28, 40),
    "smooth_37x29": smooth(29, 37),
    "grey32": Image.fromarray(np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, -1), "RGB"),
    "flat": Image.fromarray(np.full((8, 8, 3), 77, dtype=np.uint8), "RGB"),
}

cases = []


def case(op, name, params, out):
    cases.append({"op": op, "input": name, "params": params, "output": out})


BILINEAR = InterpolationMode.BILINEAR
for name in ["noise32", "smooth32", "smooth_40x28"]:
    img = inputs[name]
    w, h = img.size
    for top, left, ch, cw, size in [(0, 0, h, w, 32), (3, 5, 20, 17, 32), (0, 0, h, w, 16), (10, 2, 9, 30, 32),
                                    (1, 1, h - 2, w - 3, 24), (h // 4, w // 4, h // 2, w // 2, 32), (5, 0, 7, 7, 32)]:
        out = F.resized_crop(img, top, left, ch, cw, [size, size], interpolation=BILINEAR, antialias=True)
        case("resized_crop", name, {"top": top, "left": left, "height": ch, "width": cw, "size": size}, encode(out))
    case("hflip", name, {}, encode(F.hflip(img)))
    case("grayscale", name, {}, encode(F.to_grayscale(img, num_output_channels=3)))
    for f in [0.6, 0.83, 1.0, 1.17, 1.4, 2.5]:
        case("brightness", name, {"factor": f}, encode(F.adjust_brightness(img, f)))
        case("contrast", name, {"factor": f}, encode(F.adjust_contrast(img, f)))
        case("saturation", name, {"factor": f}, encode(F.adjust_saturation(img, f)))
    for f in [-0.1, -0.0731, -0.02, 0.0, 0.013, 0.05, 0.0999, 0.5]:
        case("hue", name, {"factor": f}, encode(F.adjust_hue(img, f)))

for name in ["grey32", "flat"]:
    img = inputs[name]
    case("hue", name, {"factor": 0.07}, encode(F.adjust_hue(img, 0.07)))
    case("contrast", name, {"factor": 1.3}, encode(F.adjust_contrast(img, 1.3)))
    case("saturation", name, {"factor": 0.7}, encode(F.adjust_saturation(img, 0.7)))

# Evaluation transform of ImageNet at a small scale: Resize(shorter side) + CenterCrop.
for name, (short, crop) in [("smooth_37x29", (20, 16)), ("smooth_40x28", (32, 28)), ("smooth32", (48, 45))]:
    out = F.center_crop(F.resize(inputs[name], short, interpolation=BILINEAR, antialias=True), crop)
    case("resize_center_crop", name, {"resize": short, "crop": crop}, encode(out))

# One composed pre-training chain with fixed parameters (order brightness, contrast, saturation, hue permuted).
img = inputs["smooth_40x28"]
x = F.resized_crop(img, 2, 3, 20, 25, [32, 32], interpolation=BILINEAR, antialias=True)
x = F.hflip(x)
x = F.adjust_saturation(x, 1.21)
x = F.adjust_hue(x, -0.047)
x = F.adjust_brightness(x, 0.77)
x = F.adjust_contrast(x, 1.33)
case("chain", "smooth_40x28", {"crop": [2, 3, 20, 25, 32], "flip": True,
                                "jitter": [["saturation", 1.21], ["hue", -0.047], ["brightness", 0.77], ["contrast", 1.33]],
                                "grayscale": False}, encode(x))
gray = F.to_grayscale(x, num_output_channels=3)
case("chain", "smooth_40x28", {"crop": [2, 3, 20, 25, 32], "flip": True,
                                "jitter": [["saturation", 1.21], ["hue", -0.047], ["brightness", 0.77], ["contrast", 1.33]],
                                "grayscale": True}, encode(gray))

# RandAugment(2, 9) operations (ildoonet/pytorch-randaugment, as the official --randaug uses), at the
# m = 9 values, with the random sign fixed; the same Pillow calls the package makes.
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps


def solarize_add(img, addition, threshold=128):
    a = np.clip(np.array(img).astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return PIL.ImageOps.solarize(Image.fromarray(a), threshold)


def cutout_abs(img, v, x0, y0):
    w, h = img.size
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    x1 = min(w, x0 + v)
    y1 = min(h, y0 + v)
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (125, 123, 114))
    return img


m = 9 / 30
RANDAUG = [
    ("AutoContrast", 0, lambda im, v: PIL.ImageOps.autocontrast(im)),
    ("Equalize", 0, lambda im, v: PIL.ImageOps.equalize(im)),
    ("Invert", 0, lambda im, v: PIL.ImageOps.invert(im)),
    ("Rotate", m * 30, lambda im, v: im.rotate(v)),
    ("Rotate", -m * 30, lambda im, v: im.rotate(v)),
    ("Rotate", 17.3, lambda im, v: im.rotate(v)),
    ("Posterize", int(m * 4), lambda im, v: PIL.ImageOps.posterize(im, int(v))),
    ("Posterize", 3, lambda im, v: PIL.ImageOps.posterize(im, int(v))),
    ("Solarize", m * 256, lambda im, v: PIL.ImageOps.solarize(im, v)),
    ("SolarizeAdd", int(m * 110), lambda im, v: solarize_add(im, v)),
    ("Color", m * 1.8 + 0.1, lambda im, v: PIL.ImageEnhance.Color(im).enhance(v)),
    ("Contrast", m * 1.8 + 0.1, lambda im, v: PIL.ImageEnhance.Contrast(im).enhance(v)),
    ("Brightness", m * 1.8 + 0.1, lambda im, v: PIL.ImageEnhance.Brightness(im).enhance(v)),
    ("Sharpness", m * 1.8 + 0.1, lambda im, v: PIL.ImageEnhance.Sharpness(im).enhance(v)),
    ("Sharpness", 1.7, lambda im, v: PIL.ImageEnhance.Sharpness(im).enhance(v)),
    ("ShearX", m * 0.3, lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0))),
    ("ShearX", -m * 0.3, lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0))),
    ("ShearY", m * 0.3, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0))),
    ("TranslateX", m * 100, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0))),
    ("TranslateX", -7.5, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, v, 0, 1, 0))),
    ("TranslateY", -m * 100, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v))),
    ("TranslateY", 4.25, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, v))),
]
for name in ["noise32", "smooth32", "smooth_40x28"]:
    for op, v, fn in RANDAUG:
        case("randaug", name, {"name": op, "value": v}, encode(fn(inputs[name], v)))
    for cx, cy in [(3.7, 30.2), (16.0, 16.0), (31.9, 0.4)]:
        case("randaug", name, {"name": "Cutout", "value": m * 40, "cx": cx, "cy": cy},
             encode(cutout_abs(inputs[name], m * 40, cx, cy)))

# ToTensor + Normalize (CIFAR-100 statistics).
mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
t = F.normalize(F.to_tensor(inputs["noise32"]), mean, std)
normalize = {"input": "noise32", "mean": mean, "std": std, "output": [round(float(v), 7) for v in t.flatten().tolist()]}

json.dump({
    "description": "torchvision.transforms.functional on PIL images; pixels base64 of HxWx3 uint8; normalize output is CHW float32",
    "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__},
    "inputs": {k: encode(v) for k, v in inputs.items()},
    "cases": cases,
    "normalize": normalize,
}, open(sys.argv[1], "w"))
print(len(cases), "cases")
