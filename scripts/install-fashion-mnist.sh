#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the full set, /usr/share/datasets/fashion-mnist) when it is
# missing and this machine can (root with apt-get); otherwise leaves things as they are. Used by .ci/run
# (dataset tests also check the real files) and scripts/gpu-kit.sh (the recipe needs them).
set -uo pipefail
[ -d /usr/share/datasets/fashion-mnist ] && exit 0
if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist > /dev/null) || echo "warning: dataset-fashion-mnist not installed" >&2
fi
exit 0
