#!/usr/bin/env bash
# Builds everything bench/gpu_check.sh runs on a GPU machine (which has no Rust toolchain) into
# target/gpu-kit/ (git-ignored, about 50 MB): the release binary, the test binaries that switch
# to CUDA with SELFCON_TEST_DEVICE (integration: its device and step_resume modules;
# device_distributed), the NCCL shim object (fetches the CUDA/NCCL headers once) and
# Fashion-MNIST for the recipe. Then, with the device tool:
#
#   run  carry=["target/gpu-kit"]  timeout_s=600
#        command="OUT=$OUT/gpu bash bench/gpu_check.sh"
#
# FASHION (default /usr/share/datasets/fashion-mnist) names the IDX files to carry.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=target/gpu-kit
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
# The recipe needs the full Fashion-MNIST: checked before the long build (Debian's package installed
# when this machine can, as in .ci/run; otherwise say what to do).
[ "$FASHION" = /usr/share/datasets/fashion-mnist ] && ./scripts/install-fashion-mnist.sh
ls "$FASHION"/train-images-idx3-ubyte* > /dev/null 2>&1 || { echo "gpu-kit: FASHION=$FASHION holds no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz]); install Debian's dataset-fashion-mnist or set FASHION to a folder with the four files" >&2; exit 2; }
SELFCON_NCCL=1 ./scripts/setup.sh
cargo build --release --offline
tests=$(cargo test --release --offline --no-run --test integration --test device_distributed --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
rm -rf "$KIT" && mkdir -p "$KIT/tests" "$KIT/fashion-mnist"
cp target/release/selfcon "$KIT/selfcon"
# Beside the binary, where it looks first (the test binaries get SELFCON_NCCL_LIB).
nccl=$(ls -t target/release/build/torch-shim-*/out/libselfcon_nccl.so 2>/dev/null | head -n 1)
[ -n "$nccl" ] || { echo "gpu-kit: the NCCL shim was not built (see crates/torch-shim/README.md)" >&2; exit 1; }
cp "$nccl" "$KIT/libselfcon_nccl.so"
while read -r name path; do cp "$path" "$KIT/tests/$name"; done <<< "$tests"
strip "$KIT/selfcon" "$KIT"/tests/* "$KIT/libselfcon_nccl.so"
cp "$FASHION"/*-ubyte* "$KIT/fashion-mnist/"
git rev-parse --short HEAD > "$KIT/commit"
du -sh "$KIT"
ls "$KIT/tests"
