#!/usr/bin/env python3
"""sparsec's side of the peer benchmark: `sparsec train` on bench/models/*.net, one JSON line per
configuration in the peers' format (standard library only).

For each model, mode and batch: two calibration runs (--set max_steps=n and 4n, n = 20, or 5
from batch 64) give the time per step (their difference, without the start-up), then a run of
enough steps for about --min-seconds (capped) is measured. Throughput, compile time
and peak memory are sparsec's own numbers from the run's summary.json (`samples_per_sec` over the
training loop of the session, `compile_ms`, `peak_rss_bytes` = VmHWM). The model files hold
8,192 synthetic samples, so runs longer than one epoch also pay, at each epoch end, a test pass
over 256 samples and a checkpoint write (measured to cost a few percent at most; see RESULTS.md).
Threads: a run with T threads is pinned to the first T usable CPUs (taskset) with
SPARSEC_THREADS=T, as the peers are; the interpreter is single-threaded, so it runs with T = 1
only.

    bench/sparsec_bench.py --backend jit --threads 1,2 --out bench/results/sparsec-jit.jsonl
"""

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
import common  # noqa: E402  (standard library only: wait_for_quiet)


def csv_list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def train(binary, model_file, backend, batch, steps, workdir, threads, budget=None):
    out = os.path.join(workdir, "run")
    shutil.rmtree(out, ignore_errors=True)
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads])
    cmd = ["taskset", "-c", cpus, binary, "train", model_file,
           "--backend", backend, "--out", out, "--set", f"batch={batch}",
           "--set", f"max_steps={steps}"]
    if budget is not None:
        cmd += ["--set", f"memory_budget={budget}"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = common.cpu_snapshot()
    t0 = time.perf_counter()
    env = dict(os.environ, SPARSEC_THREADS=str(threads))
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - t0
    s1 = common.cpu_snapshot()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    summary["_other_cpus"] = common.other_cpus(s0, s1, seconds, own)
    return summary, cmd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="interp")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    p.add_argument("--model", type=csv_list(str), default=["lenet300", "lenet5"])
    p.add_argument("--mode", type=csv_list(str), default=["dense", "dropback"])
    p.add_argument("--batch", type=csv_list(int), default=[1, 16, 64, 256])
    p.add_argument("--threads", type=csv_list(int), default=[1])
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="the timed runs together take about this long")
    p.add_argument("--min-steps", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--memory-budget", type=int,
                   help="compile within this many bytes (--set memory_budget); the results are "
                   "recorded under mode `<mode>_lean`")
    p.add_argument("--out")
    args = p.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="sparsec-bench-") as workdir:
        for model in args.model:
            for mode in args.mode:
                model_file = os.path.join(ROOT, "bench", "models", f"{model}_{mode}.net")
                for batch, threads in [(b, t) for b in args.batch for t in args.threads]:
                    if args.backend == "interp" and threads != 1:
                        continue
                    try:
                        # Two calibration runs, n and 4n steps: the time per step is their
                        # difference over 3n steps, without the first steps' start-up (a
                        # Dropback step has no floor for its candidates until the second).
                        n = 20 if batch <= 16 else 5
                        seconds = []
                        for steps in (n, 4 * n):
                            cal, _ = train(args.binary, model_file, args.backend, batch,
                                           steps, workdir, threads, args.memory_budget)
                            seconds.append(steps * batch / cal["samples_per_sec"])
                        per_step = (seconds[1] - seconds[0]) / (3 * n)
                        if per_step <= 0:
                            per_step = seconds[1] / (4 * n)
                        steps = int(min(args.max_steps, max(args.min_steps, math.ceil(
                            args.min_seconds / common.REPEATS / per_step))))
                        # As the peers: the fastest of REPEATS runs, all taken again (up to
                        # RETRIES times) if other work disturbed the fastest.
                        for _ in range(1 + common.RETRIES):
                            busy = common.wait_for_quiet()
                            runs = [train(args.binary, model_file, args.backend, batch, steps,
                                          workdir, threads, args.memory_budget)
                                    for _ in range(common.REPEATS)]
                            s, cmd = max(runs, key=lambda r: r[0]["samples_per_sec"])
                            if s["_other_cpus"] <= common.DISTURBED_CPUS:
                                break
                            print(f"disturbed by other work ({s['_other_cpus']:.2f} CPU): "
                                  "measuring again", file=sys.stderr)
                    except RuntimeError as e:
                        failures += 1
                        print(e, file=sys.stderr)
                        continue
                    sps = s["samples_per_sec"]
                    rec = {
                        "peer": f"sparsec-{args.backend}", "model": model,
                        "mode": mode if args.memory_budget is None else f"{mode}_lean",
                        "memory_budget": args.memory_budget,
                        "batch": batch, "threads": s.get("threads", threads),
                        "samples_per_sec": sps,
                        "step_ms": batch / sps * 1e3, "peak_rss_bytes": s["peak_rss_bytes"],
                        "compile_ms": s["compile_ms"], "steps": s["steps"],
                        "windows_samples_per_sec": [round(r[0]["samples_per_sec"], 1)
                                                    for r in runs],
                        "select": "sparsec" if mode == "dropback" else None,
                        "k": s.get("tracked", {}).get("total") if mode == "dropback" else None,
                        "params": s.get("params_total"),
                        "weight_state_bytes": s.get("weight_state_bytes"),
                        "wall_seconds": s.get("wall_seconds"), "busy_before": round(busy, 3),
                        "other_cpus": round(s["_other_cpus"], 3),
                        "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT)
                                            else c for c in cmd[3:]),
                    }
                    line = json.dumps(rec)
                    print(line, flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(line + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
