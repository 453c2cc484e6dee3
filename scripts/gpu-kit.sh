#!/usr/bin/env bash
# Builds everything bench/gpu_check.sh runs on a GPU machine (which has no Rust toolchain) into
# target/gpu-kit/ (git-ignored; 36.6 MiB measured on 2026-12-07): the release binary and the test
# binaries that switch to CUDA with SELFCON_TEST_DEVICE (integration: its device and step_resume
# modules; device_distributed), stripped (22.2 MiB) and compressed with xz -9e (7.1 MiB;
# gpu_check.sh unpacks them with Python's lzma, the GPU image may lack xz), the NCCL shim object
# (0.04 MiB; fetches the CUDA/NCCL headers once), the full Fashion-MNIST for the recipe (29.5 MiB of
# .gz, as shipped: it compresses no further) and libtorch.json, the libtorch the kit was built
# against (torch version, CUDA version, sha256 of libtorch_cpu.so), which gpu_check.sh checks the
# GPU machine's torch against. With the working tree (9.1 MiB) 45.7 MiB travel. Then, with the
# device tool:
#
#   run  carry=["target/gpu-kit"]  timeout_s=600
#        command="OUT=$OUT/gpu bash bench/gpu_check.sh"
#
# What travels (the kit plus the working tree: tracked and untracked, not ignored, files) must stay
# under the device tool's 64 MiB: the build fails above 62 MiB. `./scripts/gpu-kit.sh --size`
# measures an existing kit against the current tree only (the tree grows after a kit is built).
#
# FASHION (default /usr/share/datasets/fashion-mnist) names the IDX files to carry.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=target/gpu-kit
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
LIMIT_MIB=62

# kit + travelling tree against LIMIT_MIB; one line, non-zero above it.
check_size() {
    python3 - "$KIT" "$LIMIT_MIB" <<'PYEOF'
import os, subprocess, sys
kit, limit = sys.argv[1], float(sys.argv[2])
def size(path):
    try:
        return os.lstat(path).st_size
    except OSError:  # a tracked file deleted in the working tree
        return 0
# What the device tool copies: tracked files and untracked files git does not ignore (and shared/).
names = set(subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True).stdout.decode().split("\0")) - {""}
tree = sum(size(n) for n in names if not n.startswith(kit + "/"))
if os.path.isdir("shared"):
    tree += sum(size(os.path.join(d, f)) for d, _, fs in os.walk("shared") for f in fs
                if os.path.join(d, f) not in names)
kit_bytes = sum(size(os.path.join(d, f)) for d, _, fs in os.walk(kit) for f in fs)
mib = 1 << 20
total = (kit_bytes + tree) / mib
print(f"kit {kit_bytes / mib:.1f} MiB + tree {tree / mib:.1f} MiB = {total:.1f} MiB (limit {limit:g} MiB)")
if total > limit:
    sys.exit(f"gpu-kit: error: kit + tree = {total:.1f} MiB is over {limit:g} MiB (the device tool carries 64 MiB at most): "
             "untracked files that git does not ignore travel too (git status); the recipe needs the full Fashion-MNIST (bench/fashion_as_cifar.py)")
PYEOF
}
if [ "${1:-}" = --size ]; then
    [ -d "$KIT" ] || { echo "gpu-kit: no kit at $KIT (run ./scripts/gpu-kit.sh)" >&2; exit 2; }
    check_size
    exit
fi

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
# Beside the binary, where it looks first (gpu_check.sh unpacks the binary beside it; the test
# binaries get SELFCON_NCCL_LIB).
nccl=$(ls -t target/release/build/torch-shim-*/out/libselfcon_nccl.so 2>/dev/null | head -n 1)
[ -n "$nccl" ] || { echo "gpu-kit: the NCCL shim was not built (see crates/torch-shim/README.md)" >&2; exit 1; }
cp "$nccl" "$KIT/libselfcon_nccl.so"
while read -r name path; do cp "$path" "$KIT/tests/$name"; done <<< "$tests"
strip "$KIT/selfcon" "$KIT"/tests/* "$KIT/libselfcon_nccl.so"
# The executables shrink to about a third; the GPU machine may lack xz, so gpu_check.sh unpacks
# with Python's lzma (the .xz container, CRC64-checked).
for f in "$KIT/selfcon" "$KIT"/tests/*; do
    if command -v xz > /dev/null; then
        xz -9e -T1 "$f"
    else
        python3 -c 'import lzma, os, sys
with open(sys.argv[1], "rb") as i, lzma.open(sys.argv[1] + ".xz", "wb", preset=9 | lzma.PRESET_EXTREME) as o:
    o.write(i.read())
os.remove(sys.argv[1])' "$f"
    fi
done
cp "$FASHION"/*-ubyte* "$KIT/fashion-mnist/"
git rev-parse --short HEAD > "$KIT/commit"
# The libtorch the kit was built against, for gpu_check.sh's guard. libtorch_cpu.so differs
# between the torch==2.11.0 wheels of different Pythons (same version, same CUDA; built per
# Python), so the guard stops on the torch version and the CUDA version and reports the sha256
# (LIBTORCH_CHECK=sha256 there makes a sha256 that matches no official wheel stop too). The
# official sha256s, read from PyPI's torch==2.11.0 manylinux_2_28_x86_64 wheels on 2026-12-07:
libtorch=${LIBTORCH:-.libtorch}
python3 - "$libtorch" "$KIT/libtorch.json" <<'PYEOF'
import hashlib, json, re, sys
libtorch, out = sys.argv[1:3]
setup = open("scripts/setup.sh").read()
version = re.search(r'^TORCH_VERSION=(\S+)', setup, re.M).group(1)
cuda = re.search(r'^CUDART_WHEEL="nvidia-cuda-runtime==(\d+\.\d+)', setup, re.M).group(1)
try:
    built = open(f"{libtorch}/build-version").read().strip()
except OSError:
    built = version
h = hashlib.sha256()
with open(f"{libtorch}/lib/libtorch_cpu.so", "rb") as f:
    for chunk in iter(lambda: f.read(1 << 24), b""):
        h.update(chunk)
official = {"2.11.0": {
    "cp311": "99ea9120891528198d73d477714adf14ec662dec467aca8a3940796ccd452e91",
    "cp312": "2e1034d418c1c881c86f67fc357b8723efc3f22bdb266f06aace8e6ca9c170b3",
}}.get(built, {})
record = {"torch": built, "cuda": cuda, "libtorch_cpu_sha256": h.hexdigest(),
          "built_from": next((tag for tag, s in official.items() if s == h.hexdigest()), "unknown wheel"),
          "official_libtorch_cpu_sha256": official}
json.dump(record, open(out, "w"), indent=1)
print(f"libtorch {built}, CUDA {cuda}, libtorch_cpu.so {h.hexdigest()[:16]}… ({record['built_from']})")
PYEOF
du -ab "$KIT" | sort -k2 | awk '{ printf "%9.2f MiB  %s\n", $1 / 1048576, $2 }'
check_size
