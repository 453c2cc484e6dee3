#!/usr/bin/env python3
"""A folder of ImageNet-sized JPEGs made from real photographs, for `bench loader` on photographs
rather than synthetic noise (which compresses and decodes unlike photographs).

  python bench/make_photo_folder.py --out /tmp/photos            # 1,000 images, 10 classes
  python bench/make_photo_folder.py --out /tmp/photos-large --images 300 --short_side 1000-1500

The photographs are the colour pictures bundled with scikit-image (its wheel's skimage/data/, fetched
with `pip download scikit-image --no-deps` unless --skimage_data names the folder), all public
domain or CC0 according to scikit-image's documentation: astronaut.png (NASA, public domain),
chelsea.png (Stefan van der Walt, CC0), coffee.png (Rachel Michetti, CC0), rocket.jpg (SpaceX,
public domain), hubble_deep_field.jpg (NASA, public domain), retina.jpg (Mikael Häggström, CC0),
ihc.png (CMMI, no known copyright restrictions).

Each image is a random crop of a photograph (aspect 3:4 to 4:3, mirrored half the time) with a
shorter side of 333–500 px (--short_side) as ImageNet's, shrunk or kept at 1:1 but never enlarged
(photographs smaller than that are used whole), saved as a JPEG of quality 90 with 4:2:0 chroma
(Pillow's default) under OUT/train/c{k}/ (ImageFolder layout).
Needs Pillow.
"""
import argparse
import glob
import os
import random
import subprocess
import sys
import tempfile
import zipfile

from PIL import Image

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]


def skimage_data(folder):
    if folder:
        return folder
    tmp = tempfile.mkdtemp(prefix="skimage-wheel-")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "scikit-image"], check=True)
    wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        for name in PHOTOS:
            z.extract("skimage/data/" + name, tmp)
    return os.path.join(tmp, "skimage", "data")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--skimage_data", default=None, help="a folder holding scikit-image's data files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short_side", default="333-500", help="range of the shorter side, e.g. 333-500 (ImageNet's)")
    args = p.parse_args()
    data = skimage_data(args.skimage_data)
    photos = [Image.open(os.path.join(data, n)).convert("RGB") for n in PHOTOS]
    rng = random.Random(args.seed)
    sizes = []
    lo, hi = map(int, args.short_side.split("-"))
    for i in range(args.images):
        photo = photos[i % len(photos)]
        w, h = photo.size
        # The shorter side wanted, never above the photograph's own: crops are shrunk or kept at
        # 1:1, never enlarged, so the pictures keep a camera's fine detail (what the decoder and
        # the resize pay for); only photographs smaller than the range are used whole.
        short = min(rng.randint(lo, hi), min(w, h))
        aspect = rng.uniform(3 / 4, 4 / 3)
        crop_short = rng.randint(short, min(w, h))
        cw, ch = (round(crop_short * aspect), crop_short) if aspect >= 1 else (crop_short, round(crop_short / aspect))
        cw, ch = min(cw, w), min(ch, h)
        left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = photo.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        scale = short / min(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        image = crop.resize(size, Image.BICUBIC) if size != crop.size else crop
        folder = os.path.join(args.out, "train", f"c{i % args.classes:02d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"img{i:05d}.jpg")
        image.save(path, quality=args.quality)
        sizes.append(os.path.getsize(path))
    print(f"{args.images} JPEGs in {args.out}/train, {args.classes} classes, "
          f"mean {sum(sizes) / len(sizes) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
