#!/usr/bin/env bash
# The peer benchmark of sparsec, in one command:
#
#     bench/run.sh
#
# builds sparsec (release), creates bench/.venv if needed (bench/setup.sh), checks that the peers'
# Dropback is faithful, times PyTorch, JAX and sparsec on LeNet-300-100 and LeNet-5 (dense and
# Dropback; batch 1, 16, 64, 256; 1 and 2 threads), runs sparsec's memory benchmarks
# (bench/scale.sh: the regenerate-versus-store curve and the 8.65·10⁹-parameter Dropback run),
# writes bench/results/*.jsonl and regenerates bench/RESULTS.md. About 20 minutes on 2 cores.
# Knobs (environment): MIN_SECONDS (timed seconds per configuration, 3), MAX_STEPS (3000),
# BATCHES, THREADS, MODELS (comma lists), LEAN_BUDGET (bytes for P3's memory-budget row,
# 800000), and bench/scale.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
MIN_SECONDS="${MIN_SECONDS:-3}"
MAX_STEPS="${MAX_STEPS:-3000}"
BATCHES="${BATCHES:-1,16,64,256}"
THREADS="${THREADS:-1,2}"
MODELS="${MODELS:-lenet300,lenet5}"

# sparsec's backends, one column each in RESULTS.md: the reference interpreter (one thread) and
# the Cranelift JIT (the default backend; 1 and 2 threads).
SPARSEC_BACKENDS=(interp jit)

results="$root/bench/results"
py="$root/bench/.venv/bin/python"
common=(--model "$MODELS" --batch "$BATCHES" --min-seconds "$MIN_SECONDS" --max-steps "$MAX_STEPS")

echo "== building sparsec (release)"
cargo build --release --quiet
echo "== peers (bench/setup.sh)"
bash "$root/bench/setup.sh"

mkdir -p "$results"
# The peers' and sparsec's results; bench/scale.sh replaces its own (and keeps them when told
# to skip them: SKIP_CURVE=1 SKIP_SCALE=1).
rm -f "$results"/torch.jsonl "$results"/jax.jsonl "$results"/sparsec-*.jsonl "$results"/check.txt \
    "$results"/machine.json
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before="$(load)"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
    echo "warning: load average $load_before: other work is running; timings will be noisy" >&2
fi

echo "== faithfulness checks (bench/results/check.txt)"
{
    "$py" bench/peers/torch_lenet.py --check --model "$MODELS"
    "$py" bench/peers/jax_lenet.py --check --model "$MODELS"
} 2>&1 | tee "$results/check.txt"
if grep -q FAILED "$results/check.txt"; then
    echo "a faithfulness check failed" >&2
    exit 1
fi

echo "== PyTorch"
"$py" bench/peers/torch_lenet.py "${common[@]}" --threads "$THREADS" --out "$results/torch.jsonl"
echo "== JAX"
"$py" bench/peers/jax_lenet.py "${common[@]}" --threads "$THREADS" --select bisect,top_k \
    --out "$results/jax.jsonl"
for backend in "${SPARSEC_BACKENDS[@]}"; do
    echo "== sparsec --backend $backend"
    python3 bench/sparsec_bench.py "${common[@]}" --backend "$backend" --threads "$THREADS" \
        --out "$results/sparsec-$backend.jsonl"
done
# P3's second row: the Dropback step compiled within a memory budget too small for its scores
# (the O(k)-working-memory program: scores streamed, weights regenerated panel by panel).
echo "== sparsec --backend jit, Dropback within a small memory budget"
python3 bench/sparsec_bench.py --model lenet300 --mode dropback --batch 64 \
    --min-seconds "$MIN_SECONDS" --max-steps "$MAX_STEPS" --backend jit --threads "$THREADS" \
    --memory-budget "${LEAN_BUDGET:-800000}" --out "$results/sparsec-jit.jsonl"

echo "== sparsec's memory benchmarks (bench/scale.sh)"
bash "$root/bench/scale.sh"

# The machine and versions, for RESULTS.md.
LOAD_BEFORE="$load_before" LOAD_AFTER="$(load)" "$py" - "$results/machine.json" <<'PY'
import json, os, platform, subprocess, sys, datetime
from importlib.metadata import version

def sh(*cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip()
    except OSError:
        return "?"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo")
              if l.startswith("flags")), [])
simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
commit = sh("git", "rev-parse", "--short", "HEAD")
# The results this run rewrites do not count as changes to what was measured.
dirty = (" (with uncommitted changes)"
         if sh("git", "status", "--porcelain", "--", ".", ":!bench/results", ":!bench/RESULTS.md")
         else "")
json.dump({
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    "command": "bench/run.sh",
    "cpu_model": f"{cpu} ({', '.join(simd) or 'no AVX2'})",
    "nproc": sh("nproc"),
    "memory": f"{int(mem) / 2**20:.1f} GiB",
    "kernel": platform.release(),
    "load_before": os.environ["LOAD_BEFORE"], "load_after": os.environ["LOAD_AFTER"],
    "python": platform.python_version(),
    "torch": version("torch"),
    "jax": f"{version('jax')} / {version('jaxlib')}",
    "numpy": version("numpy"),
    "rustc": sh("rustc", "-V"),
    "sparsec": f"{sh('target/release/sparsec', '--version') or 'sparsec'} at {commit}{dirty}",
}, open(sys.argv[1], "w"), indent=1)
PY
python3 bench/report.py
