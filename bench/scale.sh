#!/usr/bin/env bash
# sparsec's memory benchmarks, run by bench/run.sh after the peers (or alone):
#
#     bench/scale.sh
#
# 1. The regenerate-versus-store curve: LeNet-300-100 and a 33.6M-parameter MLP with Dropback
#    (k = N/25, batch 64, 2 threads), once per program the compiler picks as the memory budget
#    shrinks. It starts
#    without a budget (the fastest program), then asks each time for one byte less than the
#    last program's `train_step.memory` (from `sparsec emit --stage opt`), until no program
#    fits; each program trains CURVE_STEPS steps (the MLP a tenth of them), the fastest of 3
#    runs, and reports its samples/s and peak RSS.
#    Written to bench/results/curve.jsonl.
# 2. The scale run (P8): bench/models/dropback_8g.net, an 8.65·10⁹-parameter Dropback MLP
#    (34.6 GB as dense f32), trains SCALE_STEPS steps within a 3 GB memory budget under
#    /usr/bin/time, whose "Maximum resident set size" (the kernel's peak RSS) is the number
#    reported; `sparsec report` of the run goes to bench/results/scale-report.txt. About 5
#    minutes on 2 cores. Written to bench/results/scale.jsonl.
#
# Knobs (environment): CURVE_STEPS (300), SCALE_STEPS (3), SKIP_CURVE=1 (the scale run only),
# SKIP_SCALE=1 (the curve only).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
CURVE_STEPS="${CURVE_STEPS:-300}"
SCALE_STEPS="${SCALE_STEPS:-3}"
results="$root/bench/results"
sparsec="$root/target/release/sparsec"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$results"
cargo build --release --quiet

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
# The optimised program of model $1 within budget $2 (empty: none) into $3; fails when no
# program fits.
opt_ir() {
    local budget=()
    [ -n "$2" ] && budget=(--memory-budget "$2")
    "$sparsec" emit --stage opt "${budget[@]}" "$1" > "$3" 2>/dev/null
}
# The train step's memory (bytes) that the header of an optimised program records.
step_memory() { head -1 "$1" | tr ' ' '\n' | sed -n 's/^train_step.memory=//p'; }

echo "== regenerate versus store (bench/results/curve.jsonl)"
curves=("lenet300_dropback:$CURVE_STEPS" "dropback_mlp34m:$((CURVE_STEPS / 10))")
if [ "${SKIP_CURVE:-0}" = 1 ]; then
    curves=()
else
    rm -f "$results/curve.jsonl"
fi
for spec in "${curves[@]}"; do
name="${spec%%:*}"
steps="${spec##*:}"
model="$root/bench/models/$name.net"
budget=""
while opt_ir "$model" "$budget" "$work/opt.ir"; do
    memory="$(step_memory "$work/opt.ir")"
    streamed=$(grep -c 'dropback_score_stream' "$work/opt.ir" || true)
    updates=$(grep -c 'dropback_update_sgd' "$work/opt.ir" || true)
    set_budget=()
    [ -n "$budget" ] && set_budget=(--set "memory_budget=$budget")
    run="$work/curve"
    best=0
    rss=0
    for rep in 1 2 3; do
        rm -rf "$run"
        taskset -c 0,1 "$sparsec" train "$model" --set batch=64 --set "max_steps=$steps" \
            --threads 2 "${set_budget[@]}" --out "$run" > /dev/null 2>&1
        sps="$(field "$run/summary.json" samples_per_sec)"
        rss="$(field "$run/summary.json" peak_rss_bytes)"
        best="$(python3 -c "print(max($best, $sps))")"
    done
    echo "{\"model\": \"$name\", \"budget\": ${budget:-null}, \"train_step_memory\": $memory, \"streamed_scores\": $streamed, \"sparse_updates\": $updates, \"samples_per_sec\": $best, \"peak_rss_bytes\": $rss, \"batch\": 64, \"threads\": 2, \"steps\": $steps}" |
        tee -a "$results/curve.jsonl"
    budget=$((memory - 1))
done
done

if [ "${SKIP_SCALE:-0}" = 1 ]; then
    exit 0
fi
echo "== scale (bench/results/scale.jsonl)"
model="$root/bench/models/dropback_8g.net"
run="$work/scale"
budget=3000000000
/usr/bin/time -v "$sparsec" train "$model" --set "max_steps=$SCALE_STEPS" \
    --set "memory_budget=$budget" --out "$run" > "$work/scale.out" 2> "$work/scale.time"
"$sparsec" report "$run" | tee "$results/scale-report.txt"
peak_kb="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/scale.time")"
opt_ir "$model" "$budget" "$work/opt.ir"
python3 - "$run" "$model" "$peak_kb" "$budget" "$(step_memory "$work/opt.ir")" \
    > "$results/scale.jsonl" <<'PY'
import json, sys
run, model, peak_kb, budget, memory = sys.argv[1:]
s = json.load(open(f"{run}/summary.json"))
steps = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if '"kind": "step"' in l
         or '"kind":"step"' in l]
print(json.dumps({
    "model": "dropback_8g", "params": s["params_total"],
    "dense_bytes": 4 * s["params_total"], "tracked": s["weights_stored"],
    "memory_budget": int(budget), "train_step_memory": int(memory),
    "steps": s["steps"], "wall_seconds": s["wall_seconds"],
    "train_seconds_per_step": 1 / s["samples_per_sec"] / s["batch"] if s["samples_per_sec"] else None,
    "peak_rss_bytes_os": int(peak_kb) * 1024, "peak_rss_bytes_summary": s["peak_rss_bytes"],
    "losses": [m.get("loss") for m in steps],
}))
PY
cat "$results/scale.jsonl"
