#!/usr/bin/env bash
# The weights five reference runs end with, as SHA-256 of each run's model.safetensors.
# A refactoring that claims "no behaviour change" must leave all five unchanged on the same
# machine (the products use the CPU's FMA kernels, so the hashes are per instruction set).
#
#   scripts/invariant_hashes.sh [SPARSEC_BINARY]   (default target/release/sparsec)
#
# scripts/invariant_hashes.expected holds the hashes recorded before the redesign of the method
# homes, pass pipeline and op table: `diff <(scripts/invariant_hashes.sh) <(grep -v '^#'
# scripts/invariant_hashes.expected)` on the same kind of CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/sparsec}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
subset=(--data data/fashion-mnist-subset)
for model in lenet300 lenet300_dropback lenet300_dropback_freeze lenet5 resnet_tiny; do
    data=("${subset[@]}")
    extra=()
    # Its own synthetic data; and the learning rate it had when the hashes were recorded (its
    # first two epochs are otherwise the same under the later schedule).
    [ "$model" = resnet_tiny ] && data=() && extra=(--set lr=0.05)
    "$bin" train "examples/$model.net" "${data[@]}" "${extra[@]}" --set epochs=2 --out "$out/$model" \
        >/dev/null 2>&1 || { echo "$model: training failed" >&2; exit 1; }
    echo "$(sha256sum "$out/$model/model.safetensors" | cut -d' ' -f1)  $model"
done
