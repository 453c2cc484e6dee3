#!/usr/bin/env bash
# Coverage-guided fuzzing of every reader of untrusted input (fuzz/): runs each target for
# SECONDS (default 600) with libFuzzer, seeded from the project's real fixtures.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs nightly Rust (installs cargo-fuzz if missing) and libtorch (scripts/setup.sh).
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test under
# crates/selfcon/tests/ (tests/integration/fuzz_regressions.rs replays tests/data/fuzz/<target>/*).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-600}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pickle pth cifar idx checkpoint image cli_parsers)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
[ -e .libtorch ] || ./scripts/setup.sh
LIBTORCH=$(readlink -f .libtorch)
export LIBTORCH LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Seeds: the real fixtures (small ones), plus a few made here.
seed() { # seed TARGET FILE...
  mkdir -p "fuzz/corpus/$1"
  local t=$1; shift
  for f in "$@"; do [ -f "$f" ] && cp "$f" "fuzz/corpus/$t/$(echo "$f" | tr '/' '_')"; done
}
DATA=crates/selfcon/tests/data
seed cifar $(find $DATA/cifar -type f -size -200k)
seed pickle $(find $DATA/cifar -type f -name 'data_batch_1' -size -200k)
seed idx $(find data crates/selfcon/tests -name '*ubyte*' -size -200k 2>/dev/null)
python3 - "$ROOT/fuzz/corpus" "$DATA/official" <<'PY'
import gzip, io, json, os, struct, sys, zipfile
corpus, official = sys.argv[1], sys.argv[2]
def put(target, name, data):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    open(os.path.join(corpus, target, name), "wb").write(data)
# Official fixtures under 1 MB once unpacked; their data.pkl for the pickle target.
for f in sorted(os.listdir(official)):
    if not f.endswith(".gz.gz"):
        continue
    raw = gzip.decompress(gzip.decompress(open(os.path.join(official, f), "rb").read()))
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        for n in z.namelist():
            if n.endswith("data.pkl"):
                put("pickle", f + ".data.pkl", z.read(n))
    if len(raw) < 1 << 20:
        put("pth", f[:-6], raw)
# Our checkpoint layout: safetensors with stage/epoch/config metadata and two small weights.
def safetensors(meta, tensors):
    header, body = {"__metadata__": meta}, b""
    for name, shape in tensors:
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(body), len(body) + n]}
        body += bytes(n)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body
put("checkpoint", "pretrain", safetensors({"format": "selfcon-checkpoint-1", "stage": "pretrain", "epoch": "3",
    "config": "{}", "history": "[1.0, 2.0]"}, [("head.0.weight", [4, 3]), ("head.0.bias", [4]),
    ("optimizer.head.0.weight", [4, 3])]))
put("checkpoint", "export", safetensors({"model": "{}"}, [("encoder.conv1.weight", [2, 3, 1, 1])]))
# Images: a tiny PPM, PGM and BMP (other formats come from mutation).
put("image", "a.ppm", b"P6\n3 2\n255\n" + bytes(range(18)))
put("image", "a.pgm", b"P5\n2 2\n255\n\x00\x40\x80\xff")
bmp_pixels = bytes(range(12)) + b"\x00\x00\x00\x00"  # 2x2, rows padded to 4 bytes... 6+2 each
put("image", "a.bmp", b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, 16, 0, 0, 0, 0)
    + bytes(range(6)) + b"\x00\x00" + bytes(range(6, 12)) + b"\x00\x00")
for i, t in enumerate(["[False,True,False]", "[True, True, True, True]", "(0.5, 0.25, 0.125)", "resnet18",
                       "fc", "same", "cifar100", "[False]", "0.4914,0.4822,0.4465"]):
    put("cli_parsers", f"s{i}", t.encode())
PY

mkdir -p fuzz/logs
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t for ${SECONDS_EACH}s"
  # A hang is what -timeout is for. Decoding and augmenting an image near the 64-megapixel cap
  # takes a few seconds on one core (linear in its pixels; ~3 s for 19 MP measured), more when
  # several fuzzers share the CPU, so the image target gets more time per input.
  timeout=10; [ "$t" = image ] && timeout=60
  (cd fuzz && cargo +nightly fuzz run -s none --release "$t" "corpus/$t" -- \
     -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=262144 -timeout=$timeout -print_final_stats=1) \
     > "fuzz/logs/$t.log" 2>&1 || { echo "   FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/"; tail -20 "fuzz/logs/$t.log"; exit 1; }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "fuzz/logs/$t.log" | tail -3
done
echo "all fuzz targets ran clean"
