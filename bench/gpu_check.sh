#!/usr/bin/env bash
# The one prepared GPU run (issues #5, #7, #16), in independent, time-boxed stages (one failure or
# timeout never costs the rest; each stage's log lands in $OUT as it finishes):
#   tests    the test binaries on CUDA (SELFCON_TEST_DEVICE=cuda, deterministic kernels): loss and
#            gradients vs the CPU, fp16/bf16 steps, fp16 skip on the device, no host waits in a step
#            (CUDA sync debug mode), stop/resume bit-exact, NCCL collectives and buckets in device memory,
#            a distributed step over NCCL without a host wait
#   compute  the official step (bench/pytorch_reference.py) and ours, same run, same GPU: SelfCon and
#            SupCon, fp16 and bf16, channels-last and NCHW
#   e2e      the same end to end (loader, augmentation, host-to-device copies)
#   dist1    `launch` at world size 1 over NCCL and over Gloo (CUDA tensors through host memory): the
#            c10d path's overhead against the single-process step
#   recipe   Fashion-MNIST as CIFAR-10: SelfCon pretrain + linear evaluation
# then summary.json with the ratios, computed here from this run. The whole run stays within BUDGET
# seconds (default 540: each stage's box is cut to what is left); $OUT receives four files only
# (gpu_check.log with every stage's output, stages.jsonl, bench.jsonl, summary.json); data and
# checkpoints go to WORK (default /tmp/selfcon-gpu-work).
#
# On the development machine:   ./scripts/gpu-kit.sh          (builds target/gpu-kit/, ~50 MB)
# With the device tool:          run  carry=["target/gpu-kit"]  timeout_s=600
#                                     command="OUT=$OUT/gpu bash bench/gpu_check.sh"
# Dry run on a CPU:              DEVICE=cpu BATCH=16 STEPS=2 WARMUP=1 PER_BATCH=40 EPOCHS=1 \
#                                LINEAR_EPOCHS=1 LINEAR_DECAY=1 WORKERS=2 PY=python3 OUT=/tmp/dry bash bench/gpu_check.sh
set -uo pipefail

PY=${PY:-/opt/torch/.venv/bin/python3}
KIT=${KIT:-target/gpu-kit}
BIN=${BIN:-$KIT/selfcon}
OUT=${OUT:-bench/results/gpu-run}
FASHION=${FASHION:-$KIT/fashion-mnist}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-1024}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
WORKERS=${WORKERS:-16}
EPOCHS=${EPOCHS:-10}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-5}
LINEAR_DECAY=${LINEAR_DECAY:-3,4}
HALF=${HALF:-fp16}   # the 16-bit precision of the comparisons (bf16 for CPU dry runs: fp16 convolutions there take minutes)
export PY KIT BIN OUT FASHION DEVICE BATCH STEPS WARMUP WORKERS EPOCHS LINEAR_EPOCHS LINEAR_DECAY HALF
WORK=${WORK:-/tmp/selfcon-gpu-work}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT" "$WORK"
DATA="$WORK/fashion-as-cifar10"
SAVE="$WORK/save"
BENCH="$OUT/bench.jsonl"
export WORK DATA SAVE BENCH

if [ "${1:-}" != "--stage" ]; then
    deadline=$(($(date +%s) + BUDGET))
    LOG="$OUT/gpu_check.log"
    exec > >(tee -a "$LOG") 2>&1
    TEE=$!
    SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
    LIBS="$SITE/torch/lib"
    for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
    export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')
    export GPU
    echo "== $(date -u +%FT%TZ) · $GPU · torch $("$PY" -c 'import torch; print(torch.__version__)') · $("$BIN" --version) · kit $(cat "$KIT/commit" 2>/dev/null)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
    "$PY" bench/fashion_as_cifar.py "$FASHION" "$DATA" ${PER_BATCH:-} > /dev/null || echo "no Fashion-MNIST at $FASHION: e2e and recipe will fail"
    : > "$BENCH"
    : > "$OUT/stages.jsonl"
    rm -rf "$SAVE"
    # name and time box (seconds) of each stage, in order.
    for stage in ${LIMITS:-tests:120 compute:150 e2e:90 dist1:60 recipe:100}; do
        name=${stage%%:*}
        limit=${stage##*:}
        started=$(date +%s)
        # Leave 30 s for the summary; a stage with under 15 s left is skipped.
        left=$((deadline - started - 30))
        [ "$left" -lt "$limit" ] && limit=$left
        if [ "$limit" -lt 15 ]; then
            echo "{\"stage\": \"$name\", \"skipped\": \"out of time\"}" | tee -a "$OUT/stages.jsonl"
            continue
        fi
        echo "== $name (at most ${limit} s)"
        timeout --kill-after=5 "$limit" bash "$0" --stage "$name" 2>&1
        rc=$?
        timed_out=false
        [ $rc = 124 ] || [ $rc = 137 ] && timed_out=true
        echo "{\"stage\": \"$name\", \"rc\": $rc, \"timed_out\": $timed_out, \"seconds\": $(($(date +%s) - started))}" | tee -a "$OUT/stages.jsonl"
    done
    echo "== summary"
    bash "$0" --stage summary > "$OUT/summary.json"
    cat "$OUT/summary.json"
    # Let tee write the last lines to the log before the run ends.
    exec 1>&- 2>&-
    wait "$TEE"
    exit 0
fi

model=(--model resnet18 --dataset cifar10)
selfcon_model=(--selfcon_pos "[False,True,False]" --selfcon_size fc)
run() { # label, command...: appends the command's JSON line (tagged with the label) to bench.jsonl
    local label=$1; shift
    echo "-- $label: $*"
    local line
    line=$("$@" | tail -n 1) && echo "$line" && "$PY" - "$label" "$line" >> "$BENCH" <<'PYEOF'
import json, sys
record = json.loads(sys.argv[2]); record["label"] = sys.argv[1]; print(json.dumps(record))
PYEOF
}
ours() { run "$1" "$BIN" bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" \
    --warmup_steps "$WARMUP" --learning_rate 0.5 --temp 0.1 "${model[@]}" "${@:2}"; }
ref() { run "$1" "$PY" bench/pytorch_reference.py bench --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" \
    --warmup_steps "$WARMUP" "${@:2}"; }
data=(--data_folder "$DATA" --num_workers "$WORKERS")

case "$2" in
tests)
    test_device=$DEVICE
    [ "$DEVICE" = cuda ] && test_device=cuda:0
    export SELFCON_TEST_DEVICE=$test_device CUBLAS_WORKSPACE_CONFIG=:4096:8 RUST_BACKTRACE=1
    [ -f "$KIT/libselfcon_nccl.so" ] && export SELFCON_NCCL_LIB=$KIT/libselfcon_nccl.so
    # --nocapture: the measured differences (CUDA vs CPU) and losses are printed.
    "$KIT/tests/integration" device:: --test-threads 1 --nocapture; a=$?
    # A whole distributed step over NCCL at world size 1 with no host wait.
    "$KIT/tests/device_distributed" --nocapture; c=$?
    # The library-level stop/resume tests, CI's heavy ones included (the signal ones drive the
    # development machine's binary).
    "$KIT/tests/integration" step_resume:: --include-ignored --test-threads 1 --skip sig; b=$?
    exit $((a || b || c))
    ;;
compute)
    for p in $(echo "$HALF bf16" | tr " " "\n" | sort -u); do
        ref "ref_selfcon_compute_$p" --method SelfCon --precision "$p"
        ref "ref_supcon_compute_$p" --method SupCon --precision "$p"
        ours "ours_selfcon_compute_$p" --method SelfCon "${selfcon_model[@]}" --precision "$p" --channels_last
        ours "ours_supcon_compute_$p" --method SupCon --multiview --precision "$p" --channels_last
    done
    ours "ours_selfcon_compute_${HALF}_nchw" --method SelfCon "${selfcon_model[@]}" --precision "$HALF"
    ;;
e2e)
    ref "ref_selfcon_e2e_$HALF" --method SelfCon --precision "$HALF" --end_to_end --dataset cifar10 "${data[@]}"
    ref "ref_supcon_e2e_$HALF" --method SupCon --precision "$HALF" --end_to_end --dataset cifar10 "${data[@]}"
    ours "ours_selfcon_e2e_$HALF" --method SelfCon "${selfcon_model[@]}" --precision "$HALF" --channels_last --end_to_end "${data[@]}"
    ours "ours_supcon_e2e_$HALF" --method SupCon --multiview --precision "$HALF" --channels_last --end_to_end "${data[@]}"
    ours "ours_selfcon_e2e_bf16" --method SelfCon "${selfcon_model[@]}" --precision bf16 --channels_last --end_to_end "${data[@]}"
    ;;
dist1)
    # What a GPU rank pays for the gradient all-reduce, over NCCL (GPU ranks only) and over Gloo.
    backends=gloo
    case "$DEVICE" in cuda*) backends="nccl gloo" ;; esac
    port=29555
    for backend in $backends; do
        run "ours_selfcon_compute_${HALF}_dist1_$backend" "$BIN" launch --nproc_per_node 1 --master_port $((port++)) -- \
            bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" --warmup_steps "$WARMUP" \
            --learning_rate 0.5 --temp 0.1 "${model[@]}" --method SelfCon "${selfcon_model[@]}" --precision "$HALF" \
            --channels_last --dist_backend "$backend"
    done
    # World size 2 where the machine has two GPUs (the device tool lends one).
    if [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 2 ]; then
        run "ours_selfcon_compute_${HALF}_dist2_nccl" "$BIN" launch --nproc_per_node 2 --master_port $((port++)) -- \
            bench train --json --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" --warmup_steps "$WARMUP" \
            --learning_rate 0.5 --temp 0.1 "${model[@]}" --method SelfCon "${selfcon_model[@]}" --precision "$HALF" \
            --channels_last --dist_backend nccl
    fi
    ;;
recipe)
    "$BIN" pretrain --method SelfCon "${model[@]}" "${selfcon_model[@]}" --batch_size "$BATCH" --learning_rate 0.5 \
        --temp 0.1 --epochs "$EPOCHS" --cosine --precision --channels_last --device "$DEVICE" --print_freq 0 \
        --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/representation" > "$WORK/pretrain.out"
    CKPT=$(tail -n 1 "$WORK/pretrain.out")
    "$BIN" linear --ckpt "$CKPT" --subnet "${model[@]}" "${selfcon_model[@]}" --batch_size 512 --learning_rate 3 \
        --weight_decay 0 --epochs "$LINEAR_EPOCHS" --lr_decay_epochs "$LINEAR_DECAY" --lr_decay_rate 0.1 \
        --device "$DEVICE" --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/linear" > "$WORK/linear.out"
    cat "$WORK/linear.out"
    ;;
summary)
    CKPT=$(tail -n 1 "$WORK/pretrain.out" 2>/dev/null)
    "$PY" - "$BENCH" "$GPU" "$(dirname "${CKPT:-none}")/metrics.jsonl" "$WORK/linear.out" "$OUT/stages.jsonl" <<'PYEOF'
import json, os, sys
H = os.environ["HALF"]
bench = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
def ratio(ours, ref, key="images_per_s"):
    return bench[ours][key] / bench[ref][key] if ours in bench and ref in bench else None
def lines(path):
    try:
        return open(path).read().strip().splitlines()
    except OSError:
        return []
pretrain = [json.loads(l) for l in lines(sys.argv[3]) if '"kind":"epoch"' in l.replace(" ", "")]
linear = lines(sys.argv[4])
summary = {
    "gpu": sys.argv[2],
    "selfcon_end_to_end_ratio": ratio(f"ours_selfcon_e2e_{H}", f"ref_selfcon_e2e_{H}"),
    "selfcon_compute_ratio": ratio(f"ours_selfcon_compute_{H}", f"ref_selfcon_compute_{H}"),
    "selfcon_end_to_end_over_compute": ratio(f"ours_selfcon_e2e_{H}", f"ours_selfcon_compute_{H}"),
    "supcon_end_to_end_ratio": ratio(f"ours_supcon_e2e_{H}", f"ref_supcon_e2e_{H}"),
    "supcon_compute_ratio": ratio(f"ours_supcon_compute_{H}", f"ref_supcon_compute_{H}"),
    "peak_memory_ratio": ratio(f"ours_selfcon_compute_{H}", f"ref_selfcon_compute_{H}", "peak_memory_bytes"),
    "supcon_peak_memory_ratio": ratio(f"ours_supcon_compute_{H}", f"ref_supcon_compute_{H}", "peak_memory_bytes"),
    "selfcon_over_supcon_time_ours": ratio(f"ours_supcon_compute_{H}", f"ours_selfcon_compute_{H}"),
    "selfcon_over_supcon_time_ref": ratio(f"ref_supcon_compute_{H}", f"ref_selfcon_compute_{H}"),
    "distributed_world1_nccl_over_single_time": ratio(f"ours_selfcon_compute_{H}", f"ours_selfcon_compute_{H}_dist1_nccl"),
    "distributed_world1_gloo_over_single_time": ratio(f"ours_selfcon_compute_{H}", f"ours_selfcon_compute_{H}_dist1_gloo"),
    "pretrain_epoch_seconds": [round(r.get("seconds", 0.0), 2) for r in pretrain],
    "linear": json.loads(linear[-1]) if linear and linear[-1].startswith("{") else None,
    "stages": [json.loads(l) for l in lines(sys.argv[5])],
    "bench": bench,
}
print(json.dumps(summary, indent=2))
PYEOF
    ;;
esac
