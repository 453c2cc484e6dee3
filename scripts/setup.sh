#!/usr/bin/env bash
# Installs libtorch 2.11.0 (from the PyPI wheel torch==2.11.0) into a per-user cache and points this
# checkout at it, so that plain `cargo build` / `cargo test` work afterwards.
#
#   LIBTORCH=/path/to/libtorch   use an existing libtorch 2.11 instead (nothing is downloaded)
#   SELFCON_CACHE_DIR=/path       cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/selfcon)
#   SELFCON_NCCL=1 (or --nccl)    also fetch the CUDA and NCCL headers (about 210 MB of wheels) that
#                                 `--dist_backend nccl` is built against: the next cargo build then
#                                 compiles the NCCL shim object (crates/torch-shim/README.md)
#
# The CUDA parts of the wheel (libtorch_cuda.so and the NVIDIA libraries) are not installed: the
# binary links the CPU engine only and loads libtorch_cuda.so at run time when a GPU is asked for,
# so one build runs on CPU machines and on GPU machines that have PyTorch 2.11 (LD_LIBRARY_PATH).
# libtorch_cpu.so itself needs the CUDA runtime and CUPTI stubs, which come from their own small
# wheels (the versions torch==2.11.0 pins through cuda-toolkit 13.0.2).
set -euo pipefail

TORCH_VERSION=2.11.0
CUDART_WHEEL="nvidia-cuda-runtime==13.0.96"
CUPTI_WHEEL="nvidia-cuda-cupti==13.0.85"
# The headers torch==2.11.0 was built against (its pins: nvidia-nccl-cu13==2.28.9, cuda-toolkit
# 13.0.2 → crt 13.0.88, cccl 13.0.85). ProcessGroupNCCL's layout depends on nccl.h's version.
NCCL_VERSION=2.28.9
NCCL_WHEELS=("$CUDART_WHEEL" "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85" "nvidia-nccl-cu13==$NCCL_VERSION")
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
link="$repo/.libtorch"
nccl=${SELFCON_NCCL:-0}
for arg in "$@"; do
  case "$arg" in
    --nccl) nccl=1 ;;
    *) echo "setup: error: unknown argument '$arg' (only --nccl)" >&2; exit 2 ;;
  esac
done

tmpdirs=()  # download folders, removed on exit whatever happens
trap 'rm -rf ${tmpdirs[@]+"${tmpdirs[@]}"}' EXIT

say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 2; }

check_libtorch() { # dir -> 0 when it looks like a usable libtorch 2.11
  local dir=$1
  [ -f "$dir/lib/libtorch_cpu.so" ] && [ -d "$dir/include/torch" ] || return 1
  if [ -f "$dir/build-version" ]; then
    case "$(cat "$dir/build-version")" in "$TORCH_VERSION"*) ;; *) return 1 ;; esac
  fi
  return 0
}

cache=${SELFCON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/selfcon}
if [ -n "${LIBTORCH:-}" ]; then
  check_libtorch "$LIBTORCH" || die "LIBTORCH=$LIBTORCH is not a libtorch $TORCH_VERSION (needs lib/libtorch_cpu.so, include/, build-version $TORCH_VERSION)"
  target=$LIBTORCH
  say "using LIBTORCH=$LIBTORCH"
else
  target="$cache/libtorch-$TORCH_VERSION"
  if check_libtorch "$target"; then
    say "libtorch $TORCH_VERSION found in $target"
  else
    command -v python3 >/dev/null || die "python3 is needed to fetch the torch==$TORCH_VERSION wheel"
    python3 -m pip --version >/dev/null 2>&1 || die "pip is needed (python3 -m pip) to fetch the torch==$TORCH_VERSION wheel"
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/.download.XXXXXX")
    tmpdirs+=("$work")
    say "downloading torch==$TORCH_VERSION (about 530 MB) and the CUDA runtime stubs into $cache"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheels" \
      "torch==$TORCH_VERSION" "$CUDART_WHEEL" "$CUPTI_WHEEL" \
      || die "pip could not download torch==$TORCH_VERSION"
    say "unpacking"
    python3 - "$work/wheels" "$work/libtorch" "$TORCH_VERSION" <<'PY'
import os, sys, zipfile, glob, stat
wheels, out, version = sys.argv[1:4]
# CUDA-only libraries stay out: linking them would make every binary need the full NVIDIA stack.
skip = {"libtorch_cuda.so", "libtorch_cuda_linalg.so", "libc10_cuda.so", "libcaffe2_nvrtc.so",
        "libtorch_nvshmem.so", "libtorch_python.so"}
want_nvidia = {"libcudart.so.13", "libcupti.so.13"}
os.makedirs(os.path.join(out, "lib"))
for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            base = os.path.basename(name)
            if name.startswith("torch/include/") or name.startswith("torch/share/cmake/"):
                dest = os.path.join(out, name[len("torch/"):])
            elif name.startswith("torch/lib/") and ".so" in base and base not in skip and name.count("/") == 2:
                dest = os.path.join(out, "lib", base)
            elif base in want_nvidia:
                dest = os.path.join(out, "lib", base)
            else:
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    dst.write(chunk)
            if base.endswith(".so") or ".so." in base:
                os.chmod(dest, 0o755)
for need in ["libtorch_cpu.so", "libc10.so", "libtorch.so", "libgomp.so.1"] + sorted(want_nvidia):
    if not os.path.exists(os.path.join(out, "lib", need)):
        sys.exit(f"setup: error: {need} missing from the downloaded wheels")
with open(os.path.join(out, "build-version"), "w") as f:
    f.write(version + "\n")
PY
    rm -rf "$target.old"
    [ -e "$target" ] && mv "$target" "$target.old"
    mv "$work/libtorch" "$target"   # atomic: a half-unpacked cache is never seen as installed
    rm -rf "$target.old"
    say "libtorch $TORCH_VERSION installed in $target"
  fi
fi

# .cargo/config.toml points LIBTORCH at this link (unless LIBTORCH is already set).
ln -sfn "$target" "$link"
say "ready: $link -> $target"

# Optional: the headers of the NCCL shim object (.cargo/config.toml points SELFCON_CUDA_INCLUDE at
# .cuda-include; torch-shim's build.rs compiles src/nccl.cpp when nccl.h is there).
if [ "$nccl" = 1 ]; then
  headers="$cache/cuda-headers-13.0-nccl-$NCCL_VERSION"
  if [ -f "$headers/include/nccl.h" ]; then
    say "CUDA/NCCL headers found in $headers"
  else
    command -v python3 >/dev/null || die "python3 is needed to fetch the CUDA/NCCL header wheels"
    mkdir -p "$cache"
    hwork=$(mktemp -d "$cache/.download.XXXXXX")
    tmpdirs+=("$hwork")
    say "downloading the CUDA runtime and NCCL $NCCL_VERSION headers (about 210 MB of wheels) into $cache"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$hwork/wheels" "${NCCL_WHEELS[@]}" \
      || die "pip could not download ${NCCL_WHEELS[*]}"
    python3 - "$hwork/wheels" "$hwork/headers/include" <<'PY'
import os, sys, zipfile, glob
wheels, out = sys.argv[1:3]
for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if "/include/" not in name or name.endswith("/"):
                continue
            dest = os.path.join(out, name.split("/include/", 1)[1])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                dst.write(src.read())
for need in ["nccl.h", "cuda_runtime.h", "crt/host_config.h", "nv/target"]:
    if not os.path.exists(os.path.join(out, need)):
        sys.exit(f"setup: error: {need} missing from the downloaded header wheels")
PY
    rm -rf "$headers"
    mv "$hwork/headers" "$headers"
    say "CUDA/NCCL headers installed in $headers"
  fi
  if [ "$(readlink "$repo/.cuda-include" 2>/dev/null)" != "$headers/include" ]; then
    ln -sfn "$headers/include" "$repo/.cuda-include"
    # torch-shim's build script watches src/nccl.cpp; a new link alone would not make cargo rerun it.
    touch "$repo/crates/torch-shim/src/nccl.cpp"
  fi
  say "ready: $repo/.cuda-include -> $headers/include (run cargo build to compile the NCCL shim)"
fi
