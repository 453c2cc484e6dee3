#!/usr/bin/env bash
# The one prepared GPU run (issues #5 and #7): the official training step (bench/pytorch_reference.py)
# and selfcon-rs in the same run on the same GPU — compute only and end to end, SelfCon and SupCon,
# fp16 and bf16 —, then the Fashion-MNIST-as-CIFAR-10 recipe (pretrain 20 epochs, linear 10 epochs).
# Writes every log, bench.jsonl and the summary JSON (ratios computed here, from this run) to $OUT.
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#
# Expects: target/release/selfcon built on the development machine, Fashion-MNIST IDX files in
# $FASHION (default data/fashion-mnist-full, git-ignored: copy /usr/share/datasets/fashion-mnist
# there and carry it with the binary), PyTorch with CUDA at $PY. The knobs below shrink the
# run for a dry run on CPU (DEVICE=cpu BATCH=16 STEPS=2 PER_BATCH=40 ...).
set -uo pipefail

PY=${PY:-/opt/torch/.venv/bin/python}
BIN=${BIN:-./target/release/selfcon}
OUT=${OUT:-bench/results/gpu-run}
FASHION=${FASHION:-data/fashion-mnist-full}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-1024}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
WORKERS=${WORKERS:-16}
EPOCHS=${EPOCHS:-20}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-10}
LINEAR_DECAY=${LINEAR_DECAY:-6,8}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1

SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
LIBS="$SITE/torch/lib"
for d in "$SITE"/nvidia/*/lib; do LIBS="$LIBS:$d"; done
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')
echo "== $(date -u +%FT%TZ) · $GPU · torch $("$PY" -c 'import torch; print(torch.__version__)') · $("$BIN" --version)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true

DATA="$OUT/fashion-as-cifar10"
"$PY" bench/fashion_as_cifar.py "$FASHION" "$DATA" ${PER_BATCH:-} || { echo "no Fashion-MNIST at $FASHION"; exit 2; }

BENCH="$OUT/bench.jsonl"
: > "$BENCH"
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

echo "== compute only"
for p in fp16 bf16; do
    ref "ref_selfcon_compute_$p" --method SelfCon --precision "$p"
    ref "ref_supcon_compute_$p" --method SupCon --precision "$p"
    ours "ours_selfcon_compute_$p" --method SelfCon "${selfcon_model[@]}" --precision "$p" --channels_last
    ours "ours_supcon_compute_$p" --method SupCon --multiview --precision "$p" --channels_last
done
ours "ours_selfcon_compute_fp16_nchw" --method SelfCon "${selfcon_model[@]}" --precision fp16

echo "== end to end (loader included, $WORKERS workers)"
data=(--data_folder "$DATA" --num_workers "$WORKERS")
ref "ref_selfcon_e2e_fp16" --method SelfCon --precision fp16 --end_to_end --dataset cifar10 "${data[@]}"
ref "ref_supcon_e2e_fp16" --method SupCon --precision fp16 --end_to_end --dataset cifar10 "${data[@]}"
ours "ours_selfcon_e2e_fp16" --method SelfCon "${selfcon_model[@]}" --precision fp16 --channels_last --end_to_end "${data[@]}"
ours "ours_supcon_e2e_fp16" --method SupCon --multiview --precision fp16 --channels_last --end_to_end "${data[@]}"
ours "ours_selfcon_e2e_bf16" --method SelfCon "${selfcon_model[@]}" --precision bf16 --channels_last --end_to_end "${data[@]}"

echo "== distributed at world size 1 (issue #7: the c10d path's overhead; Gloo, CUDA tensors through host memory)"
# NCCL is not built yet; this measures what a GPU rank pays today for gradient all-reduce.
run "ours_selfcon_compute_fp16_dist1" "$BIN" launch --nproc_per_node 1 --master_port 29555 -- bench train --json \
    --device "$DEVICE" --batch_size "$BATCH" --steps "$STEPS" --warmup_steps "$WARMUP" --learning_rate 0.5 --temp 0.1 \
    "${model[@]}" --method SelfCon "${selfcon_model[@]}" --precision fp16 --channels_last

echo "== recipe: Fashion-MNIST as CIFAR-10, SelfCon pretrain $EPOCHS epochs + linear $LINEAR_EPOCHS epochs"
SAVE="$OUT/save"
"$BIN" pretrain --method SelfCon "${model[@]}" "${selfcon_model[@]}" --batch_size "$BATCH" --learning_rate 0.5 \
    --temp 0.1 --epochs "$EPOCHS" --cosine --precision --channels_last --device "$DEVICE" --print_freq 0 \
    --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/representation" > "$OUT/pretrain.out"
CKPT=$(tail -n 1 "$OUT/pretrain.out")
"$BIN" linear --ckpt "$CKPT" --subnet "${model[@]}" "${selfcon_model[@]}" --batch_size 512 --learning_rate 3 \
    --weight_decay 0 --epochs "$LINEAR_EPOCHS" --lr_decay_epochs "$LINEAR_DECAY" --lr_decay_rate 0.1 \
    --device "$DEVICE" --data_folder "$DATA" --num_workers "$WORKERS" --save_dir "$SAVE/linear" > "$OUT/linear.out"
cat "$OUT/linear.out"

echo "== summary"
"$PY" - "$BENCH" "$GPU" "$(dirname "$CKPT")/metrics.jsonl" "$OUT/linear.out" > "$OUT/summary.json" <<'PYEOF'
import json, sys
bench = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
def ratio(ours, ref, key="images_per_s"):
    return bench[ours][key] / bench[ref][key] if ours in bench and ref in bench else None
pretrain = [json.loads(l) for l in open(sys.argv[3]) if '"epoch"' in l and '"kind":"epoch"' in l.replace(" ", "")]
summary = {
    "gpu": sys.argv[2],
    "selfcon_end_to_end_ratio": ratio("ours_selfcon_e2e_fp16", "ref_selfcon_e2e_fp16"),
    "selfcon_compute_ratio": ratio("ours_selfcon_compute_fp16", "ref_selfcon_compute_fp16"),
    "supcon_end_to_end_ratio": ratio("ours_supcon_e2e_fp16", "ref_supcon_e2e_fp16"),
    "supcon_compute_ratio": ratio("ours_supcon_compute_fp16", "ref_supcon_compute_fp16"),
    "peak_memory_ratio": ratio("ours_selfcon_compute_fp16", "ref_selfcon_compute_fp16", "peak_memory_bytes"),
    "supcon_peak_memory_ratio": ratio("ours_supcon_compute_fp16", "ref_supcon_compute_fp16", "peak_memory_bytes"),
    "selfcon_over_supcon_time_ours": ratio("ours_supcon_compute_fp16", "ours_selfcon_compute_fp16"),
    "selfcon_over_supcon_time_ref": ratio("ref_supcon_compute_fp16", "ref_selfcon_compute_fp16"),
    "distributed_world1_over_single_time": ratio("ours_selfcon_compute_fp16", "ours_selfcon_compute_fp16_dist1"),
    "pretrain_epoch_seconds": [round(r.get("seconds", 0.0), 2) for r in pretrain],
    "linear": json.loads(open(sys.argv[4]).read().strip().splitlines()[-1]),
    "bench": bench,
}
print(json.dumps(summary, indent=2))
PYEOF
cat "$OUT/summary.json" | head -20
