#!/usr/bin/env bash
# ImageNet-size JPEG input, same run, same machine: torchvision's ImageFolder + DataLoader against
# `selfcon bench loader` on the JPEG folder (reduced decoding on and off) and on packed files, then
# one-core JPEG decoding (zune-jpeg whole, libjpeg reduced/region; libjpeg-turbo with SIMD through
# Pillow). Results: bench/results/<date>-imagenet-input.md.
#   bench/imagenet_input.sh [PHOTOS_DIR] [ROUNDS]       (LARGE=DIR adds larger photographs;
#                                                        HEAVY="DIR[:QUALITY] ..." the same photographs
#                                                        at other JPEG qualities, e.g. /tmp/photos-q99:99)
# PHOTOS_DIR (and each HEAVY folder) is made by bench/make_photo_folder.py when missing. Needs a Python with torch,
# torchvision and Pillow as $PYTHON (default python3), and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=${1:-/tmp/photos}
ROUNDS=${2:-2}
PYTHON=${PYTHON:-python3}
SELFCON=target/release/selfcon
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
[ -d "$PHOTOS/train" ] || "$PYTHON" bench/make_photo_folder.py --out "$PHOTOS"
grep -o 'avx512_bf16\|amx_bf16\|avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "($(nproc) CPUs)"
uptime
for spec in "jpeg" "jpeg --max_side 320" "raw" "raw --max_side 320"; do
  name=$(echo "$spec" | tr -d ' -')
  "$SELFCON" prepare --dataset imagenet --data_folder "$PHOTOS" --out "$WORK/$name.pack" --format $spec 2>/dev/null
done
ls -l "$WORK"/*.pack | awk '{print $5, $9}'
BATCH="--batch_size 64 --batches 150 --num_workers 2 --json"
for round in $(seq "$ROUNDS"); do
  echo "# round $round"
  "$PYTHON" bench/torchvision_loader.py --dataset imagenet --data_folder "$PHOTOS" --batch_size 64 --batches 150 --num_workers 2
  "$SELFCON" bench loader --dataset imagenet --data_folder "$PHOTOS" $BATCH 2>/dev/null
  "$SELFCON" bench loader --dataset imagenet --data_folder "$PHOTOS" $BATCH --full_decode 2>/dev/null
  "$SELFCON" bench loader --dataset imagenet --data_folder "$PHOTOS" $BATCH --batch_format u8 2>/dev/null
  for pack in "$WORK"/*.pack; do
    "$SELFCON" bench loader --dataset imagenet --data_folder "$pack" $BATCH 2>/dev/null
  done
done
"$SELFCON" bench decode --data_folder "$PHOTOS" --json
"$PYTHON" bench/pil_decode.py --data_folder "$PHOTOS"
# The same photographs with more bits per pixel (quality 99 gives ImageNet's ~110 KiB per file).
for spec in ${HEAVY:-}; do
  dir=${spec%%:*}
  quality=${spec#*:}
  [ "$quality" = "$spec" ] && quality=97
  [ -d "$dir/train" ] || "$PYTHON" bench/make_photo_folder.py --out "$dir" --quality "$quality"
  du -s --apparent-size -k "$dir"
  for round in $(seq "$ROUNDS"); do
    echo "# $dir round $round"
    "$PYTHON" bench/torchvision_loader.py --dataset imagenet --data_folder "$dir" --batch_size 64 --batches 150 --num_workers 2
    "$SELFCON" bench loader --dataset imagenet --data_folder "$dir" $BATCH 2>/dev/null
    "$SELFCON" bench loader --dataset imagenet --data_folder "$dir" $BATCH --batch_format u8 2>/dev/null
  done
  "$SELFCON" bench decode --data_folder "$dir" --json
  "$PYTHON" bench/pil_decode.py --data_folder "$dir"
done
# Larger photographs, smaller crops: where reduced decoding applies.
if [ -n "${LARGE:-}" ]; then
  [ -d "$LARGE/train" ] || "$PYTHON" bench/make_photo_folder.py --out "$LARGE" --images 300 --short_side 800-1400
  for round in $(seq "$ROUNDS"); do
    for size in 224 112; do
      for flag in "" "--full_decode"; do
        "$SELFCON" bench loader --dataset folder --size $size --mean "(0.485,0.456,0.406)" --std "(0.229,0.224,0.225)" \
          --data_folder "$LARGE" --batch_size 32 --batches 60 --num_workers 2 --json $flag 2>/dev/null | sed "s/^{/{\"size\":$size,/"
      done
    done
  done
  "$SELFCON" bench decode --data_folder "$LARGE" --json
  "$PYTHON" bench/pil_decode.py --data_folder "$LARGE"
fi
uptime
