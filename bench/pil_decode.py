#!/usr/bin/env python3
"""libjpeg-turbo's JPEG decoding (through Pillow, as torchvision's ImageFolder decodes) on one core,
whole and DCT-scaled (Pillow's `draft`: libjpeg's scale_denom 2, 4, 8), on the same files that
`selfcon bench decode --data_folder DIR` times, held in memory, best of --repeats passes.

  python bench/pil_decode.py --data_folder /tmp/photos
"""
import argparse
import io
import json
import os
import time

from PIL import Image, features


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_folder", required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(args.data_folder) for f in fs)
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\xff\xd8":
            blobs.append(data)
        if len(blobs) == args.images:
            break

    def best(decode):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for data in blobs:
                decode(data)
            times.append((time.perf_counter() - start) * 1000 / len(blobs))
        return min(times)

    def whole(data):
        Image.open(io.BytesIO(data)).convert("RGB")

    def scaled(d):
        def run(data):
            im = Image.open(io.BytesIO(data))
            im.draft("RGB", (im.width // d, im.height // d))
            im.convert("RGB")
        return run

    record = {"bench": "pil_decode", "images": len(blobs), "whole_ms_per_image": best(whole),
              "libjpeg_turbo": features.check_feature("libjpeg_turbo"), "pillow": Image.__version__}
    for d in (2, 4, 8):
        record[f"draft_1_{d}_ms_per_image"] = best(scaled(d))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
