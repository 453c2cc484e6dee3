#!/usr/bin/env bash
# The long version of the SIGKILL soak test: one pre-training run (`--save_every_steps 1`) killed
# with SIGKILL at random moments (no chance to save) until KILLS kills left a mid-epoch checkpoint,
# resumed from whatever `last` holds each time, must end with exactly the weights of the
# uninterrupted run. CI runs the same test with 3 kills over 3 epochs. Each try prints its seed.
#
#   scripts/soak-sigkill.sh [KILLS] [EPOCHS] [TRIES]     defaults 30 kills, 20 epochs (60 steps), 1 try
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

kills=${1:-30}
epochs=${2:-20}
tries=${3:-1}
for v in "$kills" "$epochs" "$tries"; do
  case "$v" in '' | *[!0-9]*) echo "soak-sigkill: KILLS, EPOCHS and TRIES must be numbers, got '$v'" >&2; exit 2 ;; esac
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for try in $(seq 1 "$tries"); do
  started=$SECONDS
  if ! SELFCON_SOAK_KILLS=$kills SELFCON_SOAK_EPOCHS=$epochs cargo test --release --quiet -p selfcon \
    --test integration step_resume::sigkill_at_random_moments -- --include-ignored --nocapture >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "soak-sigkill: try $try failed" >&2
    exit 1
  fi
  grep -E "soak seed|kills,|starting over" "$log" || true
  echo "soak-sigkill: try $try/$tries: $kills kills over $epochs epochs, same weights as the uninterrupted run ($((SECONDS - started)) s)"
done
