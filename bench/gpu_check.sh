#!/usr/bin/env bash
# The one prepared GPU run (issues #5, #7, #16, #32), in independent, time-boxed stages (one failure
# or timeout never costs the rest; each stage's log lands in $OUT as it finishes), in this order:
#   compute  the official step (bench/pytorch_reference.py) and ours, same run, same GPU, each run its
#            own process: first the headline fp16 pairs (SelfCon, then SupCon: the official step as
#            published, NCHW, against ours channels-last), then like for like (ours NCHW against the
#            official NCHW, the official step channels-last against ours channels-last), then bf16,
#            then, when the box allows, the SelfCon fp16 headline pair again (A B … A B)
#   tests    the test binaries on CUDA (SELFCON_TEST_DEVICE=cuda, deterministic kernels), each within
#            TEST_LIMIT s: stop/resume bit-exact (step_resume first), loss and gradients vs the CPU,
#            fp16/bf16 steps, fp16 skip on the device, no host waits in a step (CUDA sync debug mode),
#            NCCL collectives and buckets in device memory, a distributed step over NCCL without a
#            host wait (its process group times out after 30 s, not 300)
#   e2e      the headline pairs end to end (loader, augmentation, host-to-device copies)
#   dist1    `launch` at world size 1 over NCCL and over Gloo (CUDA tensors through host memory): the
#            c10d path's overhead against the single-process step (--dist_timeout 30)
#   recipe   Fashion-MNIST as CIFAR-10: SelfCon pretrain (EPOCHS, default 5) + linear evaluation
#            (LINEAR_EPOCHS, default 2)
# then summary.json: every key always present (null when not measured), the ratios computed here
# from this run, the stage and run records. Per step, the official step makes the host wait twice
# (loss.item(); with fp16, GradScaler's found_inf check in scaler.step), ours never (bench train
# reads the loss once, after the timed steps).
#
# Before any stage: one `import torch` (where it lives, the GPU, its versions), the libtorch guard
# (the kit's libtorch.json against this torch: a different torch version or CUDA version stops the
# run with one line, and a summary.json that says why; LIBTORCH_CHECK=sha256 also stops on a
# libtorch_cpu.so that is neither the kit's nor an official wheel's, =off checks nothing), the kit's
# executables unpacked from .xz with Python's lzma into WORK, Fashion-MNIST converted.
#
# Budget: the whole run stays within BUDGET seconds (default 540, under the device tool's 600):
# preamble (its one `import torch` ~25 s on a fresh GPU machine; 2–3 s in the CPU dry runs) + boxes 150 + 110 + 70 + 45 + 80 = 455 s + 15 s kept
# for the summary; each box is cut to what is left, a stage with under 15 s left is skipped, and
# within a stage each run (one process) gets at most RUN_LIMIT s (default 60) and what the box has
# left, so that a hang costs one run, not the stage. $OUT receives four files only (gpu_check.log
# with every stage's output, stages.jsonl, bench.jsonl, summary.json); data, the unpacked kit and
# checkpoints go to WORK (default /tmp/selfcon-gpu-work). NCCL_DEBUG=WARN and
# TORCH_CPP_LOG_LEVEL=WARNING in the tests and dist1 stages.
#
# On the development machine:   ./scripts/gpu-kit.sh          (builds target/gpu-kit/, 36.6 MiB)
# With the device tool:          run  carry=["target/gpu-kit"]  timeout_s=600
#                                     command="OUT=$OUT/gpu bash bench/gpu_check.sh"
# Dry run on a CPU (PY: a Python with torch==2.11.0, torchvision and numpy):
#   DEVICE=cpu HALF=bf16 BATCH=16 STEPS=2 WARMUP=1 PER_BATCH=40 EPOCHS=1 LINEAR_EPOCHS=1 LINEAR_DECAY=1 \
#   WORKERS=2 PY=/tmp/torchvenv/bin/python3 OUT=/tmp/dry bash bench/gpu_check.sh
# Simulated trouble (comma-separated stage names or run labels, globs allowed): SIMULATE_SLOW=tests
# makes that stage (or run) hang past its box, SIMULATE_FAIL=e2e,ref_selfcon_compute_* makes it fail.
set -uo pipefail

PY=${PY:-/opt/torch/.venv/bin/python3}
KIT=${KIT:-target/gpu-kit}
OUT=${OUT:-bench/results/gpu-run}
FASHION=${FASHION:-$KIT/fashion-mnist}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-1024}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
WORKERS=${WORKERS:-16}
EPOCHS=${EPOCHS:-5}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-2}
LINEAR_DECAY=${LINEAR_DECAY:-1}
HALF=${HALF:-fp16}   # the 16-bit precision of the headline pairs (bf16 for CPU dry runs: fp16 convolutions there take minutes)
RUN_LIMIT=${RUN_LIMIT:-60}
TEST_LIMIT=${TEST_LIMIT:-45}
MIN_RUN=${MIN_RUN:-8}   # a run is not started with fewer seconds left in its stage
LIBTORCH_CHECK=${LIBTORCH_CHECK:-version}
WORK=${WORK:-/tmp/selfcon-gpu-work}
BIN=${BIN:-$WORK/kit/selfcon}
TBIN=${TBIN:-$WORK/kit/tests}
SIMULATE_SLOW=${SIMULATE_SLOW:-}
SIMULATE_FAIL=${SIMULATE_FAIL:-}
export PY KIT BIN TBIN OUT FASHION DEVICE BATCH STEPS WARMUP WORKERS EPOCHS LINEAR_EPOCHS LINEAR_DECAY HALF \
    RUN_LIMIT TEST_LIMIT MIN_RUN SIMULATE_SLOW SIMULATE_FAIL
BUDGET=${BUDGET:-540}
LIMITS=${LIMITS:-compute:150 tests:110 e2e:70 dist1:45 recipe:80}
RESERVE=15   # seconds kept for the summary
mkdir -p "$OUT" "$WORK"
DATA="$WORK/fashion-as-cifar10"
SAVE="$WORK/save"
BENCH="$OUT/bench.jsonl"
RUNS="$WORK/runs.jsonl"
export WORK DATA SAVE BENCH RUNS BUDGET LIMITS

if [ "${1:-}" != "--stage" ]; then
    START=$(date +%s)
    deadline=$((START + BUDGET))
    export START
    LOG="$OUT/gpu_check.log"
    : > "$LOG"
    exec > >(tee -a "$LOG") 2>&1
    TEE=$!
    : > "$BENCH"
    : > "$RUNS"
    : > "$OUT/stages.jsonl"
    rm -rf "$SAVE" "$WORK/pretrain.out" "$WORK/linear.out" "$WORK/libtorch.json" "$WORK/kit"
    STOPPED=""
    # One import of torch: where it lives, the GPU, the versions the guard compares.
    if info=$("$PY" -c 'import os, sys, torch
print(os.path.dirname(os.path.dirname(torch.__file__)))
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
print(torch.__version__)
print(torch.version.cuda or "none")
print(f"cp{sys.version_info[0]}{sys.version_info[1]}")' 2>"$WORK/import.err"); then
        { read -r SITE; read -r GPU; read -r TORCH; read -r TORCH_CUDA; read -r PYTAG; } <<< "$info"
    else
        SITE=""; GPU="unknown"; TORCH="unknown"; TORCH_CUDA="unknown"; PYTAG="unknown"
        STOPPED="$PY could not import torch: $(tail -n 1 "$WORK/import.err")"
    fi
    export GPU TORCH
    # The libtorch guard: one line, and a record for the summary.
    if [ -z "$STOPPED" ]; then
        "$PY" - "$KIT/libtorch.json" "$SITE/torch/lib/libtorch_cpu.so" "$TORCH" "$TORCH_CUDA" "$PYTAG" \
            "$LIBTORCH_CHECK" "$WORK/libtorch.json" <<'PYEOF'
import hashlib, json, sys
kit_file, lib, torch, cuda, pytag, mode, out = sys.argv[1:8]
try:
    kit = json.load(open(kit_file))
except (OSError, ValueError):
    kit = None
try:
    h = hashlib.sha256()
    with open(lib, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    sha = h.hexdigest()
except OSError:
    sha = None
record = {"check": mode, "here": {"torch": torch, "cuda": cuda, "python": pytag, "libtorch_cpu": lib,
                                  "libtorch_cpu_sha256": sha}, "kit": kit}
problems = []
if kit is None:
    problems.append(f"{kit_file} is missing (a kit from before the guard): rebuild it with scripts/gpu-kit.sh")
else:
    official = kit.get("official_libtorch_cpu_sha256", {})
    record["sha256_same_as_kit"] = sha == kit["libtorch_cpu_sha256"]
    record["sha256_official_wheel"] = next((tag for tag, s in official.items() if s == sha), None)
    if mode != "off":
        if torch.split("+")[0] != kit["torch"]:
            problems.append(f"torch {torch} here, the kit was built against libtorch {kit['torch']}")
        if cuda != kit["cuda"]:
            problems.append(f"CUDA {cuda} here, the kit was built against CUDA {kit['cuda']}")
        if sha is None:
            problems.append(f"no {lib}")
        elif mode == "sha256" and not record["sha256_same_as_kit"] and record["sha256_official_wheel"] is None:
            problems.append(f"libtorch_cpu.so sha256 {sha[:16]}… is neither the kit's nor an official torch {kit['torch']} wheel's")
if problems:
    record["verdict"] = "stop: " + "; ".join(problems)
elif kit is not None:
    which = ("the kit's own" if record["sha256_same_as_kit"] else
             f"the official {record['sha256_official_wheel']} wheel's" if record["sha256_official_wheel"] else
             "neither the kit's nor a known official wheel's (same version and CUDA: going on)")
    record["verdict"] = f"ok: torch {torch}, CUDA {cuda}, libtorch_cpu.so sha256 {(sha or '')[:16]}… is {which}"
json.dump(record, open(out, "w"))
print("libtorch guard:", record["verdict"])
sys.exit(1 if problems else 0)
PYEOF
        [ $? = 0 ] || STOPPED=$("$PY" -c 'import json, sys; print("libtorch guard: " + json.load(open(sys.argv[1]))["verdict"])' "$WORK/libtorch.json" 2>/dev/null || echo "libtorch guard failed")
    fi
    # The kit's executables, unpacked (xz, CRC-checked) beside the NCCL shim, where the binary looks first.
    if [ -z "$STOPPED" ]; then
        "$PY" - "$KIT" "$WORK/kit" <<'PYEOF' || STOPPED="the kit at $KIT could not be unpacked"
import lzma, os, shutil, sys, time
kit, dest = sys.argv[1:3]
started, n, size = time.time(), 0, 0
for rel in ["selfcon", "selfcon.xz", "libselfcon_nccl.so"] + [os.path.join("tests", f) for f in sorted(os.listdir(os.path.join(kit, "tests")))]:
    src = os.path.join(kit, rel)
    if not os.path.isfile(src):
        continue
    target = os.path.join(dest, rel[:-3] if rel.endswith(".xz") else rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with (lzma.open(src) if rel.endswith(".xz") else open(src, "rb")) as i, open(target, "wb") as o:
        shutil.copyfileobj(i, o, 1 << 22)
    os.chmod(target, 0o755)
    n, size = n + 1, size + os.path.getsize(target)
print(f"unpacked {n} files ({size / 2**20:.1f} MiB) into {dest} in {time.time() - started:.1f} s")
PYEOF
    fi
    if [ -z "$STOPPED" ]; then
        LIBS="$SITE/torch/lib"
        for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
        export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "== $(date -u +%FT%TZ) · $GPU · torch $TORCH (CUDA $TORCH_CUDA, $PYTAG) · $("$BIN" --version) · kit $(cat "$KIT/commit" 2>/dev/null)"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
        "$PY" bench/fashion_as_cifar.py "$FASHION" "$DATA" ${PER_BATCH:-} > /dev/null || echo "no Fashion-MNIST at $FASHION: e2e and recipe will fail"
    else
        echo "== stopped: $STOPPED"
    fi
    PREAMBLE_S=$(($(date +%s) - START))
    export PREAMBLE_S STOPPED
    echo "== preamble took ${PREAMBLE_S} s"
    # name and time box (seconds) of each stage, in order.
    for stage in $LIMITS; do
        name=${stage%%:*}
        limit=${stage##*:}
        started=$(date +%s)
        if [ -n "$STOPPED" ]; then
            echo "{\"stage\": \"$name\", \"skipped\": \"stopped before the stages\"}" | tee -a "$OUT/stages.jsonl"
            continue
        fi
        # Leave RESERVE s for the summary; a stage with under 15 s left is skipped.
        left=$((deadline - started - RESERVE))
        [ "$left" -lt "$limit" ] && limit=$left
        if [ "$limit" -lt 15 ]; then
            echo "{\"stage\": \"$name\", \"skipped\": \"out of time\"}" | tee -a "$OUT/stages.jsonl"
            continue
        fi
        echo "== $name (at most ${limit} s)"
        STAGE_END=$((started + limit)) timeout --kill-after=5 "$limit" bash "$0" --stage "$name" 2>&1
        rc=$?
        timed_out=false
        if [ $rc = 124 ] || [ $rc = 137 ]; then timed_out=true; fi
        echo "{\"stage\": \"$name\", \"rc\": $rc, \"timed_out\": $timed_out, \"box_s\": $limit, \"seconds\": $(($(date +%s) - started))}" | tee -a "$OUT/stages.jsonl"
    done
    echo "== summary"
    if timeout 20 bash "$0" --stage summary > "$WORK/summary.json" && [ -s "$WORK/summary.json" ]; then
        cp "$WORK/summary.json" "$OUT/summary.json"
    else
        echo "{\"error\": \"the summary failed: see gpu_check.log, stages.jsonl and bench.jsonl\", \"stopped\": \"${STOPPED//\"/\'}\"}" > "$OUT/summary.json"
    fi
    cat "$OUT/summary.json"
    echo "== done in $(($(date +%s) - START)) s (budget $BUDGET s)"
    # Let tee write the last lines to the log before the run ends.
    exec 1>&- 2>&-
    wait "$TEE"
    exit 0
fi

STAGE=$2
model=(--model resnet18 --dataset cifar10)
selfcon_model=(--selfcon_pos "[False,True,False]" --selfcon_size fc)
# Does $2 (a stage name or run label) match one of the comma-separated globs in $1?
matches() {
    local patterns p
    IFS=, read -ra patterns <<< "$1"
    for p in "${patterns[@]}"; do
        # shellcheck disable=SC2053
        [ -n "$p" ] && [[ $2 == $p ]] && return 0
    done
    return 1
}
record() { # label, JSON members: one line of runs.jsonl
    echo "{\"stage\": \"$STAGE\", \"label\": \"$1\", $2}" >> "$RUNS"
}
# Seconds this stage has left.
left() { echo $((${STAGE_END:-$(($(date +%s) + 3600))} - $(date +%s))); }
boxed() { # label, seconds, stdout file ("-": the log only), command...: runs the command within the
          # seconds and what the stage has left (3 s kept), records it in runs.jsonl
    local label=$1 want=$2 dest=$3
    shift 3
    local limit
    limit=$(($(left) - 3))
    [ "$want" -lt "$limit" ] && limit=$want
    if [ "$limit" -lt "$MIN_RUN" ]; then
        echo "-- $label: not started (${limit} s left in $STAGE)"
        record "$label" "\"skipped\": \"out of time\""
        return 1
    fi
    local cmd=("$@")
    if matches "$SIMULATE_SLOW" "$label"; then
        cmd=(sleep 100000)
    elif matches "$SIMULATE_FAIL" "$label"; then
        cmd=(false)
    fi
    echo "-- $label (at most ${limit} s): $*"
    [ "${cmd[0]}" = sleep ] && echo "-- simulated: $label hangs"
    [ "${cmd[0]}" = false ] && echo "-- simulated: $label fails"
    record "$label" "\"interrupted\": true"   # replaced by the next line unless the stage is killed first
    local t0 rc
    t0=$(date +%s)
    if [ "$dest" = - ]; then
        timeout --kill-after=3 "$limit" "${cmd[@]}"
    else
        timeout --kill-after=3 "$limit" "${cmd[@]}" | tee "$dest"
    fi
    rc=$?
    local timed_out=false
    if [ $rc = 124 ] || [ $rc = 137 ]; then timed_out=true; fi
    record "$label" "\"rc\": $rc, \"timed_out\": $timed_out, \"seconds\": $(($(date +%s) - t0))"
    return $rc
}
fails=0
run() { # label, command...: appends the command's JSON line (tagged with the label) to bench.jsonl
    local label=$1
    shift
    local line
    if boxed "$label" "$RUN_LIMIT" "$WORK/run.out" "$@"; then
        line=$(tail -n 1 "$WORK/run.out")
        "$PY" - "$label" "$line" >> "$BENCH" <<'PYEOF' && return 0
import json, sys
record = json.loads(sys.argv[2]); record["label"] = sys.argv[1]; print(json.dumps(record))
PYEOF
    fi
    fails=$((fails + 1))
    return 1
}
ours() { run "$1" "$BIN" bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" \
    --warmup_steps "$WARMUP" --learning_rate 0.5 --temp 0.1 "${model[@]}" "${@:2}"; }
ref() { run "$1" "$PY" bench/pytorch_reference.py bench --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" \
    --warmup_steps "$WARMUP" "${@:2}"; }
data=(--data_folder "$DATA" --num_workers "$WORKERS")
H=$HALF

if [ "$STAGE" != summary ]; then
    if matches "$SIMULATE_SLOW" "$STAGE"; then echo "-- simulated: stage $STAGE hangs"; sleep 100000; fi
    if matches "$SIMULATE_FAIL" "$STAGE"; then echo "-- simulated: stage $STAGE fails"; exit 1; fi
fi

case "$STAGE" in
compute)
    # 1. The headline pairs: the official step as published (NCHW) against ours as run (channels-last).
    ref "ref_selfcon_compute_${H}_nchw" --method SelfCon --precision "$H"
    ours "ours_selfcon_compute_${H}_cl" --method SelfCon "${selfcon_model[@]}" --precision "$H" --channels_last
    ref "ref_supcon_compute_${H}_nchw" --method SupCon --precision "$H"
    ours "ours_supcon_compute_${H}_cl" --method SupCon --multiview --precision "$H" --channels_last
    # 2. Like for like: NCHW against NCHW, channels-last against channels-last.
    ours "ours_selfcon_compute_${H}_nchw" --method SelfCon "${selfcon_model[@]}" --precision "$H"
    ref "ref_selfcon_compute_${H}_cl" --method SelfCon --precision "$H" --channels_last
    # 3. bf16.
    if [ "$H" != bf16 ]; then
        ref "ref_selfcon_compute_bf16_nchw" --method SelfCon --precision bf16
        ours "ours_selfcon_compute_bf16_cl" --method SelfCon "${selfcon_model[@]}" --precision bf16 --channels_last
        ref "ref_supcon_compute_bf16_nchw" --method SupCon --precision bf16
        ours "ours_supcon_compute_bf16_cl" --method SupCon --multiview --precision bf16 --channels_last
    fi
    # 4. The SelfCon headline pair again (A B … A B), when the box allows.
    ref "ref_selfcon_compute_${H}_nchw_r2" --method SelfCon --precision "$H"
    ours "ours_selfcon_compute_${H}_cl_r2" --method SelfCon "${selfcon_model[@]}" --precision "$H" --channels_last
    exit $((fails > 0))
    ;;
tests)
    test_device=$DEVICE
    [ "$DEVICE" = cuda ] && test_device=cuda:0
    export SELFCON_TEST_DEVICE=$test_device CUBLAS_WORKSPACE_CONFIG=:4096:8 RUST_BACKTRACE=1 \
        NCCL_DEBUG=WARN TORCH_CPP_LOG_LEVEL=WARNING
    [ -f "$WORK/kit/libselfcon_nccl.so" ] && export SELFCON_NCCL_LIB=$WORK/kit/libselfcon_nccl.so
    # The library-level stop/resume tests first, CI's heavy ones included (the signal ones drive the
    # development machine's binary).
    boxed step_resume "$TEST_LIMIT" - "$TBIN/integration" step_resume:: --include-ignored --test-threads 1 --skip sig || fails=$((fails + 1))
    # --nocapture: the measured differences (CUDA vs CPU) and losses are printed.
    boxed device "$TEST_LIMIT" - "$TBIN/integration" device:: --test-threads 1 --nocapture || fails=$((fails + 1))
    # A whole distributed step over NCCL at world size 1 with no host wait.
    boxed device_distributed "$TEST_LIMIT" - "$TBIN/device_distributed" --nocapture || fails=$((fails + 1))
    exit $((fails > 0))
    ;;
e2e)
    ref "ref_selfcon_e2e_${H}_nchw" --method SelfCon --precision "$H" --end_to_end --dataset cifar10 "${data[@]}"
    ours "ours_selfcon_e2e_${H}_cl" --method SelfCon "${selfcon_model[@]}" --precision "$H" --channels_last --end_to_end "${data[@]}"
    ref "ref_supcon_e2e_${H}_nchw" --method SupCon --precision "$H" --end_to_end --dataset cifar10 "${data[@]}"
    ours "ours_supcon_e2e_${H}_cl" --method SupCon --multiview --precision "$H" --channels_last --end_to_end "${data[@]}"
    if [ "$H" != bf16 ]; then
        ours "ours_selfcon_e2e_bf16_cl" --method SelfCon "${selfcon_model[@]}" --precision bf16 --channels_last --end_to_end "${data[@]}"
    fi
    exit $((fails > 0))
    ;;
dist1)
    export NCCL_DEBUG=WARN TORCH_CPP_LOG_LEVEL=WARNING
    # What a GPU rank pays for the gradient all-reduce, over NCCL (GPU ranks only) and over Gloo.
    backends=gloo
    case "$DEVICE" in cuda*) backends="nccl gloo" ;; esac
    port=29555
    for backend in $backends; do
        run "ours_selfcon_compute_${H}_cl_dist1_$backend" "$BIN" launch --nproc_per_node 1 --master_port $((port++)) -- \
            bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" --warmup_steps "$WARMUP" \
            --learning_rate 0.5 --temp 0.1 "${model[@]}" --method SelfCon "${selfcon_model[@]}" --precision "$H" \
            --channels_last --dist_backend "$backend" --dist_timeout 30
    done
    # World size 2 where the machine has two GPUs (the device tool lends one).
    if [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
        run "ours_selfcon_compute_${H}_cl_dist2_nccl" "$BIN" launch --nproc_per_node 2 --master_port $((port++)) -- \
            bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" --warmup_steps "$WARMUP" \
            --learning_rate 0.5 --temp 0.1 "${model[@]}" --method SelfCon "${selfcon_model[@]}" --precision "$H" \
            --channels_last --dist_backend nccl --dist_timeout 30
    fi
    exit $((fails > 0))
    ;;
recipe)
    boxed pretrain 100000 "$WORK/pretrain.out" "$BIN" pretrain --method SelfCon "${model[@]}" "${selfcon_model[@]}" \
        --batch_size "$BATCH" --learning_rate 0.5 --temp 0.1 --epochs "$EPOCHS" --cosine --precision --channels_last \
        --device "$DEVICE" --print_freq 0 --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/representation" || exit 1
    CKPT=$(tail -n 1 "$WORK/pretrain.out")
    boxed linear 100000 "$WORK/linear.out" "$BIN" linear --ckpt "$CKPT" --subnet "${model[@]}" "${selfcon_model[@]}" \
        --batch_size 512 --learning_rate 3 --weight_decay 0 --epochs "$LINEAR_EPOCHS" --lr_decay_epochs "$LINEAR_DECAY" \
        --lr_decay_rate 0.1 --device "$DEVICE" --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/linear"
    ;;
summary)
    CKPT=$(tail -n 1 "$WORK/pretrain.out" 2>/dev/null)
    "$PY" - "$BENCH" "$(dirname "${CKPT:-none}")/metrics.jsonl" "$WORK/linear.out" "$OUT/stages.jsonl" "$RUNS" \
        "$WORK/libtorch.json" "$KIT/commit" <<'PYEOF'
import json, os, sys, time
E = os.environ
H = E["HALF"]
def lines(path):
    try:
        return open(path).read().strip().splitlines()
    except OSError:
        return []
def records(path):
    out = []
    for l in lines(path):
        try:
            out.append(json.loads(l))
        except ValueError:
            pass
    return out
bench = {r["label"]: r for r in records(sys.argv[1]) if isinstance(r, dict) and "label" in r}
def ratio(a, b, key="images_per_s"):
    """bench[a][key] / bench[b][key]; None unless both were measured."""
    try:
        return bench[a][key] / bench[b][key]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
def ours(rest): return "ours_" + rest
def ref(rest): return "ref_" + rest
runs = {}
for r in records(sys.argv[5]):
    runs[r.get("label")] = r   # a run's last record wins ("interrupted" until it ends)
pretrain = [r for r in records(sys.argv[2]) if r.get("kind") == "epoch"]
linear = lines(sys.argv[3])
try:
    libtorch = json.load(open(sys.argv[6]))
except (OSError, ValueError):
    libtorch = None
S, SU = f"selfcon_compute_{H}", f"supcon_compute_{H}"
summary = {
    "gpu": E.get("GPU"),
    "torch": E.get("TORCH"),
    "kit": (lines(sys.argv[7]) or [None])[0],
    "half": H,
    "stopped": E.get("STOPPED") or None,
    "libtorch": libtorch,
    "budget_s": int(E["BUDGET"]),
    "preamble_s": int(E.get("PREAMBLE_S", 0)),
    "elapsed_s": int(time.time()) - int(E["START"]),
    "host_syncs_per_step": {
        "ref": "loss.item() every step; with fp16 also GradScaler's found_inf check in scaler.step (bf16: loss.item() only)",
        "ours": "none: the loss stays on the device (read once, after the timed steps); fp16 overflow is decided on the device",
    },
    # images/s ours over the official step's (above 1: ours is faster); peak memory ours over theirs.
    # Headline: ours as run (channels-last) against the official step as published (NCHW).
    "selfcon_compute_ratio": ratio(ours(f"{S}_cl"), ref(f"{S}_nchw")),
    "supcon_compute_ratio": ratio(ours(f"{SU}_cl"), ref(f"{SU}_nchw")),
    # Like for like.
    "selfcon_compute_ratio_nchw": ratio(ours(f"{S}_nchw"), ref(f"{S}_nchw")),
    "selfcon_compute_ratio_channels_last": ratio(ours(f"{S}_cl"), ref(f"{S}_cl")),
    # The headline pair measured again later in the same run (A B … A B).
    "selfcon_compute_ratio_repeat": ratio(ours(f"{S}_cl_r2"), ref(f"{S}_nchw_r2")),
    "ours_repeat_over_first": ratio(ours(f"{S}_cl_r2"), ours(f"{S}_cl")),
    "ref_repeat_over_first": ratio(ref(f"{S}_nchw_r2"), ref(f"{S}_nchw")),
    "ours_channels_last_over_nchw": ratio(ours(f"{S}_cl"), ours(f"{S}_nchw")),
    "ref_channels_last_over_nchw": ratio(ref(f"{S}_cl"), ref(f"{S}_nchw")),
    "selfcon_compute_ratio_bf16": ratio(ours("selfcon_compute_bf16_cl"), ref("selfcon_compute_bf16_nchw")),
    "supcon_compute_ratio_bf16": ratio(ours("supcon_compute_bf16_cl"), ref("supcon_compute_bf16_nchw")),
    "peak_memory_ratio": ratio(ours(f"{S}_cl"), ref(f"{S}_nchw"), "peak_memory_bytes"),
    "supcon_peak_memory_ratio": ratio(ours(f"{SU}_cl"), ref(f"{SU}_nchw"), "peak_memory_bytes"),
    "peak_memory_ratio_nchw": ratio(ours(f"{S}_nchw"), ref(f"{S}_nchw"), "peak_memory_bytes"),
    "peak_memory_ratio_channels_last": ratio(ours(f"{S}_cl"), ref(f"{S}_cl"), "peak_memory_bytes"),
    "selfcon_over_supcon_time_ours": ratio(ours(f"{SU}_cl"), ours(f"{S}_cl")),
    "selfcon_over_supcon_time_ref": ratio(ref(f"{SU}_nchw"), ref(f"{S}_nchw")),
    "selfcon_end_to_end_ratio": ratio(ours(f"selfcon_e2e_{H}_cl"), ref(f"selfcon_e2e_{H}_nchw")),
    "supcon_end_to_end_ratio": ratio(ours(f"supcon_e2e_{H}_cl"), ref(f"supcon_e2e_{H}_nchw")),
    "selfcon_end_to_end_over_compute": ratio(ours(f"selfcon_e2e_{H}_cl"), ours(f"{S}_cl")),
    "ref_selfcon_end_to_end_over_compute": ratio(ref(f"selfcon_e2e_{H}_nchw"), ref(f"{S}_nchw")),
    "ours_selfcon_end_to_end_bf16_over_half": ratio(ours("selfcon_e2e_bf16_cl"), ours(f"selfcon_e2e_{H}_cl")) if H != "bf16" else None,
    "distributed_world1_nccl_over_single_time": ratio(ours(f"{S}_cl"), ours(f"{S}_cl_dist1_nccl")),
    "distributed_world1_gloo_over_single_time": ratio(ours(f"{S}_cl"), ours(f"{S}_cl_dist1_gloo")),
    # Every ours_X / ref_X pair of the same label X (images/s).
    "ratios": {l[5:]: ratio(l, "ref_" + l[5:]) for l in bench if l.startswith("ours_") and "ref_" + l[5:] in bench},
    "pretrain_epoch_seconds": [round(r.get("seconds", 0.0), 2) for r in pretrain],
    "linear": json.loads(linear[-1]) if linear and linear[-1].startswith("{") else None,
    "stages": records(sys.argv[4]),
    "runs": list(runs.values()),
    "bench": bench,
}
print(json.dumps(summary, indent=2))
PYEOF
    ;;
*)
    echo "gpu_check: unknown stage '$STAGE'" >&2
    exit 2
    ;;
esac
