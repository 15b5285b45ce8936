#!/usr/bin/env bash
# Wall-clock time of two training runs, alternated, on an otherwise idle machine: a paired
# dense/shrunk comparison without the noise of a sweep that shares the cores with other work.
#
#   bench/wall_pair.sh DENSE.net SHRUNK.net OUT_DIR [REPEATS=2] [DATA_DIR]
#
# Each run is `sparsec train FILE --threads 1 --set seed=1 --out OUT_DIR/<a|b>-<i>`; the script
# prints one line per run (wall seconds from its summary.json) and the ratio of the medians.
set -euo pipefail
bin=${SPARSEC:-target/release/sparsec}
a=$1; b=$2; out=$3; repeats=${4:-2}; data=${5:-/usr/share/datasets/fashion-mnist}
mkdir -p "$out"
wall() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['wall_seconds'])" "$1/summary.json"; }
for i in $(seq 1 "$repeats"); do
    for side in a b; do
        file=$a; [ "$side" = b ] && file=$b
        dir="$out/$side-$i"; rm -rf "$dir"
        "$bin" train "$file" --threads 1 --set seed=1 --data "$data" --out "$dir" >/dev/null 2>&1
        echo "$side $i $(wall "$dir")"
    done
done | tee "$out/walls.txt"
python3 - "$out/walls.txt" <<'PY'
import statistics, sys
runs = {"a": [], "b": []}
for line in open(sys.argv[1]):
    side, _, seconds = line.split()
    runs[side].append(float(seconds))
ma, mb = statistics.median(runs["a"]), statistics.median(runs["b"])
print(f"median wall: a {ma:.1f} s, b {mb:.1f} s, a / b = {ma / mb:.2f}")
PY
