"""Shared harness of the peer benchmarks (torch_lenet.py, jax_lenet.py).

The work is the one `sparsec train` does in bench/models/*.net: LeNet-300-100 or Caffe's LeNet-5,
mean softmax cross-entropy, one plain-SGD step per batch, optionally followed by a faithful
Dropback selection (docs/methods.md §1: global exact top-k of |W - W0| over all parameters, biases
|b|, everything else back to W0 / 0), on random data of the right shapes.

Each configuration runs in a fresh child process, so `peak_rss_bytes` (the process's high-water
mark, ru_maxrss) is that configuration's alone, and so that the thread limit (CPU affinity, set
before the framework is imported) holds for the whole process.
"""

import argparse
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time

# Parameter tables in the order sparsec uses (weights in PyTorch layout: dense [out, in], conv
# [out, in, kh, kw]); fan_in for the U(±1/sqrt(fan_in)) initialisation; biases start at 0.
MODELS = {
    "lenet300": [
        ("fc1.weight", (300, 784), 784),
        ("fc1.bias", (300,), None),
        ("fc2.weight", (100, 300), 300),
        ("fc2.bias", (100,), None),
        ("fc3.weight", (10, 100), 100),
        ("fc3.bias", (10,), None),
    ],
    "lenet5": [
        ("conv1.weight", (20, 1, 5, 5), 25),
        ("conv1.bias", (20,), None),
        ("conv2.weight", (50, 20, 5, 5), 500),
        ("conv2.bias", (50,), None),
        ("fc1.weight", (500, 800), 800),
        ("fc1.bias", (500,), None),
        ("fc2.weight", (10, 500), 500),
        ("fc2.bias", (10,), None),
    ],
}

DATA_SAMPLES = 8192  # the synthetic training set held in memory (as bench/models/*.net)
LR = 0.01
WARMUP_STEPS = 3
REPEATS = 3  # timed windows per configuration; the fastest is reported
CALIBRATION_STEPS = 5


def param_count(model):
    return sum(math.prod(shape) for _, shape, _ in MODELS[model])


def dropback_k(model):
    """k = N/25 (floor): 10,664 for LeNet-300-100, 17,243 for LeNet-5."""
    return param_count(model) // 25


def initial_params(model, seed=1):
    """NumPy float32 arrays: weights U(±1/sqrt(fan_in)), biases 0."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _, shape, fan_in in MODELS[model]:
        if fan_in is None:
            out.append(np.zeros(shape, np.float32))
        else:
            bound = 1.0 / math.sqrt(fan_in)
            out.append(rng.uniform(-bound, bound, size=shape).astype(np.float32))
    return out


def synthetic_data(seed=2):
    """DATA_SAMPLES random images (N, 1, 28, 28) and labels (the --check runs use these)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((DATA_SAMPLES, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=DATA_SAMPLES, dtype=np.int64)
    return x, y


def synthetic_batches(batch, seed=2):
    """DATA_SAMPLES // batch random batches, made one at a time so that the peak memory holds
    the data set once (as sparsec's 8,192-sample synthetic set), not twice."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for _ in range(DATA_SAMPLES // batch):
        x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=batch, dtype=np.int64)
        yield x, y


def csv_list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def parser(peer, modes, extra=None):
    p = argparse.ArgumentParser(description=f"{peer} peer benchmark of sparsec (see bench/README)")
    p.add_argument("--model", type=csv_list(str), default=["lenet300", "lenet5"])
    p.add_argument("--mode", type=csv_list(str), default=modes)
    p.add_argument("--batch", type=csv_list(int), default=[1, 16, 64, 256])
    p.add_argument("--threads", type=csv_list(int), default=[1, 2])
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="timed steps (all windows together) take about this long")
    p.add_argument("--min-steps", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--check", action="store_true",
                   help="run a few Dropback steps and assert faithfulness instead of timing")
    p.add_argument("--out", help="append the JSON lines to this file as well as stdout")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--busy-before", type=float, help=argparse.SUPPRESS)
    if extra:
        extra(p)
    return p


def limit_threads(threads):
    """Pin the process to `threads` CPUs (like taskset) before any framework is imported."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads > len(cpus):
        raise SystemExit(f"asked for {threads} threads but only CPUs {cpus} are available")
    os.sched_setaffinity(0, cpus[:threads])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def cpu_snapshot():
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def other_cpus(snap0, snap1, seconds, own_cpu_seconds):
    """CPUs kept busy by other processes while we ran: machine-wide busy CPU-seconds minus ours,
    per wall second (0 on a quiet machine; ~1 when something else saturates a core)."""
    busy = (snap1[0] - snap0[0]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy - own_cpu_seconds) / seconds)


def cpu_busy(seconds=0.5):
    """Fraction of all CPUs busy (any process) over `seconds`, from /proc/stat."""
    snap = cpu_snapshot
    b0, t0 = snap()
    time.sleep(seconds)
    b1, t1 = snap()
    return (b1 - b0) / max(1, t1 - t0)


def wait_for_quiet(threshold=None, patience=None):
    """Wait (up to `patience` s) until other work leaves the CPUs idle, so that a timing is not
    taken while something else runs; returns the busy fraction last seen (recorded as
    `busy_before`). BENCH_QUIET_THRESHOLD (0.1 of all CPUs) and BENCH_QUIET_PATIENCE (300 s)."""
    threshold = float(os.environ.get("BENCH_QUIET_THRESHOLD", 0.1)) if threshold is None else threshold
    patience = float(os.environ.get("BENCH_QUIET_PATIENCE", 300)) if patience is None else patience
    deadline = time.monotonic() + patience
    busy = cpu_busy()
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            print(f"waiting for the CPUs to be idle ({busy:.0%} busy)...", file=sys.stderr)
            warned = True
        time.sleep(2)
        busy = cpu_busy()
    if busy > threshold:
        print(f"warning: timing with the CPUs {busy:.0%} busy with other work", file=sys.stderr)
    return busy


DISTURBED_CPUS = 0.2  # other processes' CPU use during a timing above which it is retried
RETRIES = 2


def disturbed(record):
    return record.get("other_cpus", 0) > DISTURBED_CPUS


def fan_out(args, argv_extra_keys):
    """Run each configuration in its own child process; print/append their JSON lines.

    A timing that other processes disturbed (`other_cpus` > DISTURBED_CPUS) is taken again, up
    to RETRIES more times, and the least disturbed one is kept."""
    configs = list(itertools.product(args.model, args.mode, args.batch, args.threads))
    extra = []
    for key in argv_extra_keys:
        val = getattr(args, key.replace("-", "_"))
        if isinstance(val, list):
            val = ",".join(map(str, val))
        extra += [f"--{key}", str(val)]
    failures = 0
    for model, mode, batch, threads in configs:
        cmd = [sys.executable, sys.argv[0], "--single", "--model", model, "--mode", mode,
               "--batch", str(batch), "--threads", str(threads),
               "--min-seconds", str(args.min_seconds), "--min-steps", str(args.min_steps),
               "--max-steps", str(args.max_steps)] + extra
        if args.check:
            cmd.append("--check")
        best = None
        for attempt in range(1 + (0 if args.check else RETRIES)):
            full = cmd if args.check else cmd + ["--busy-before", f"{wait_for_quiet():.3f}"]
            res = subprocess.run(full, stdout=subprocess.PIPE, text=True)
            if res.returncode != 0:
                print(f"FAILED ({res.returncode}): {' '.join(full)}", file=sys.stderr)
                best = None
                break
            lines = res.stdout.splitlines()
            recs = [json.loads(l) for l in lines if l.startswith("{")]
            score = max((r.get("other_cpus", 0) for r in recs), default=0)
            if best is None or score < best[0]:
                best = (score, lines)
            if score <= DISTURBED_CPUS:
                break
            print(f"disturbed by other work ({score:.2f} CPU): measuring again", file=sys.stderr)
        if best is None:
            failures += 1
            continue
        for line in best[1]:
            print(line, flush=True)
            if args.out and line.startswith("{"):
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    return 1 if failures else 0


def warm_up_and_calibrate(step, block):
    """Warm up, calibrate, then time a fixed number of steps.

    `step(i)` runs training step i (i indexes the batch); `block()` waits for the work queued so
    far (JAX dispatches asynchronously). Returns (next step index, seconds per step).
    """
    i = 0
    for _ in range(WARMUP_STEPS):
        step(i)
        i += 1
    block()
    t0 = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        step(i)
        i += 1
    block()
    per_step = (time.perf_counter() - t0) / CALIBRATION_STEPS
    return i, per_step


def measure(step, block, args):
    """Time REPEATS windows of a fixed number of steps each (together about args.min_seconds,
    capped) and keep the fastest window: other work on a shared machine only ever slows a
    window down.

    Returns (steps per window, seconds, cpu_seconds, other_cpus, samples/s of every window) of
    the fastest window: cpu_seconds / seconds shows the threads really used; other_cpus the CPUs
    that other processes kept busy meanwhile.
    """
    i, per_step = warm_up_and_calibrate(step, block)
    n = int(min(args.max_steps, max(args.min_steps,
                                    math.ceil(args.min_seconds / REPEATS / per_step))))
    windows = []
    for _ in range(REPEATS):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        s0 = cpu_snapshot()
        t0 = time.perf_counter()
        for _ in range(n):
            step(i)
            i += 1
        block()
        seconds = time.perf_counter() - t0
        s1 = cpu_snapshot()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        windows.append((seconds, cpu, other_cpus(s0, s1, seconds, cpu)))
    seconds, cpu, others = min(windows)
    return n, seconds, cpu, others, [n / w[0] for w in windows]


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(args, record):
    if args.busy_before is not None:
        record["busy_before"] = args.busy_before
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
