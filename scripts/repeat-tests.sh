#!/usr/bin/env bash
# Runs the tests that use threads, processes or c10d again and again, so that a crash or hang that
# happens one run in several cannot pass by luck (CI calls this after the README's test command and the extended set).
#
#   scripts/repeat-tests.sh [ROUNDS]    default 5 rounds; SELFCON_REPEAT_ROUNDS works too
#
# Each round runs, with the default parallel test threads:
#   - torch-shim's tests (c10d collectives between threads, several process groups at once: the
#     ten-round race included),
#   - selfcon's loader tests (worker threads, prefetch, shutdown),
#   - selfcon's unit tests and the device tests (parallel test threads drawing from one random
#     generator), and the distributed step at world size 1 (its own binary),
#   - selfcon's distributed tests, CI's heavy ones included (ranks as processes: launch,
#     SIGKILL/SIGSTOP of a rank, resume) in odd rounds, since they take about four minutes,
#   - selfcon's step-resume tests, heavy ones included (SIGTERM/SIGINT/SIGKILL at random moments,
#     resume) in even rounds.
# The integration tests are one binary (tests/integration/): a round picks its modules by name.
# Stops at the first failure, naming the suite and the round.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

rounds=${1:-${SELFCON_REPEAT_ROUNDS:-5}}
case "$rounds" in '' | *[!0-9]*) echo "repeat-tests: ROUNDS must be a number, got '$rounds'" >&2; exit 2 ;; esac

run() { # round, label, cargo test arguments...
  local round=$1 label=$2
  shift 2
  local started=$SECONDS
  if ! cargo test --quiet "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "repeat-tests: $label failed in round $round of $rounds" >&2
    exit 1
  fi
  echo "repeat-tests: round $round/$rounds: $label ok ($((SECONDS - started)) s)"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for round in $(seq 1 "$rounds"); do
  run "$round" "torch-shim" -p torch-shim -- --include-ignored
  run "$round" "loader" -p selfcon --test integration -- loader::
  run "$round" "unit" -p selfcon --lib --test device_distributed
  run "$round" "device" -p selfcon --test integration -- device::
  if [ $((round % 2)) = 1 ]; then
    run "$round" "distributed" -p selfcon --test integration -- distributed:: --include-ignored
  else
    run "$round" "step-resume" -p selfcon --test integration -- step_resume:: --include-ignored
  fi
done
echo "repeat-tests: $rounds rounds, no failure"
