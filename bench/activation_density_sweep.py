#!/usr/bin/env python3
"""The activation-density reproduction (AD-1, docs/methods.md §2): paired runs, resumable.

From a model file with a `method activation_density { ... }` block, it trains, for every seed:
  - the paired dense baseline: the same file without its method block (same data, data order,
    schedule and initial weights, which come from the same seeded streams);
  - activation density with the file's own `resize_at`, and with every schedule of `--resize`
    (default `1`, `2`, `1,2,3`, `2,4`: early resizing is where the training compute is saved).
Each run is `sparsec train VARIANT.net --out OUT/<name>-seed<S> --set seed=S [--data DIR]
[--threads T]`, its model file written to OUT/models/. The plan and what every finished run
reports go to OUT/sweep.json: summary.json, the widths and densities of metrics.jsonl's `method`
lines, and the test accuracy after each epoch.

`--peer torch` adds bench/peers/torch_activation_density.py (PyTorch, its own code) for the dense
baseline and the file's own schedule, into OUT/peer-torch/<name>-seed<S>/.

Resuming: a completed run (its summary.json says so) is skipped, a run with a checkpoint is
continued with `sparsec train --resume` (exact), anything else starts afresh; so the same command
finishes an interrupted sweep. Standard library only.

    python3 bench/activation_density_sweep.py examples/lenet300_activation_density.net \\
        --data /usr/share/datasets/fashion-mnist --out runs/ad-lenet300 [--peer torch]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = re.compile(r"^method\s+activation_density\s*\{(?P<body>.*?)^\}", re.S | re.M)
PEER_SCRIPT = os.path.join(ROOT, "bench", "peers", "torch_activation_density.py")


def variant(source, resize_at=None, dense=False):
    """`source` without its method block (dense), or with `resize_at` replaced."""
    m = METHOD.search(source)
    if not m:
        raise SystemExit("the model file has no `method activation_density { ... }` block")
    if dense:
        return source[: m.start()] + "# (dense baseline: the method block removed)\n" + \
            source[m.end():]
    if resize_at is None:
        return source
    body = re.sub(r"resize_at\s*:\s*\[[^\]]*\]", f"resize_at: [{resize_at}]", m.group("body"))
    return source[: m.start()] + "method activation_density {" + body + "}" + source[m.end():]


def file_resize_at(source):
    m = re.search(r"resize_at\s*:\s*\[([^\]]*)\]", METHOD.search(source).group("body"))
    return ",".join(x.strip() for x in m.group(1).split(",") if x.strip())


def summary_of(run_dir):
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return None
    return s if s.get("status") == "completed" else None


# What the methods' `method` lines say that a report uses (activation density, PruneTrain, ADMM).
METHOD_KEYS = ("epoch", "density", "widths", "lambda", "ce", "group_lasso", "probe",
               "phase", "rho", "stage_start", "keep", "round_end", "z_update", "hard_prune",
               "stage_end", "nnz", "distance_squared")


def metrics_of(run_dir):
    """(per-epoch test accuracy, the `method` lines) of metrics.jsonl."""
    acc, method = [], []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind") == "epoch":
                acc.append(rec["test_accuracy"])
            elif rec.get("kind") == "method":
                method.append({k: rec[k] for k in METHOD_KEYS if k in rec})
    return acc, method


def train(args, model_file, run_dir, seed):
    cmd = [args.binary, "train", model_file, "--set", f"seed={seed}"]
    if args.data:
        cmd += ["--data", args.data]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if summary_of(run_dir) is not None:
        return
    if os.path.exists(os.path.join(run_dir, "latest")):
        cmd = [args.binary, "train", "--resume", run_dir]
        if args.data:
            cmd += ["--data", args.data]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd += ["--out", run_dir]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def train_peer(args, model_file, run_dir, seed):
    if summary_of(run_dir) is not None:
        return
    cmd = [args.python, getattr(args, "peer_script", PEER_SCRIPT), model_file, "--out", run_dir, "--seed", str(seed),
           "--threads", str(args.threads or 2)]
    if args.data:
        cmd += ["--data", args.data]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def record(run_dir, name, desc, seed):
    s = summary_of(run_dir)
    if s is None:
        return None
    acc, method = metrics_of(run_dir)
    return {"name": name, "seed": seed, **desc, "run_dir": os.path.relpath(run_dir, ROOT),
            "summary": s, "test_accuracy_by_epoch": acc, "method": method}


def common_args(ap):
    """The options every method's sweep takes besides its own."""
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    ap.add_argument("--peer", choices=["torch"])
    ap.add_argument("--peer-only", action="store_true",
                    help="train only the peer's runs (sparsec's finished ones are recorded)")
    ap.add_argument("--record-only", action="store_true",
                    help="train nothing: write sweep.json from the finished runs (every "
                    "configuration, the peer's too)")
    ap.add_argument("--python", default=os.path.join(ROOT, "bench", ".venv", "bin", "python"))


def run_sweep(args, configs, order):
    """Train and record a sweep. `configs`: name → (model text, description), the description's
    `file_schedule` marking the model file's own setting; `order`: the (name, seed) of sparsec's
    runs, in training order. The peer trains the dense and the file's configurations."""
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    files = {}
    for name, (text, _) in configs.items():
        files[name] = os.path.join(args.out, "models", f"{name}.net")
        with open(files[name], "w") as f:
            f.write(text)
    seeds = sorted({seed for _, seed in order})
    runs, peer_runs = {}, {}
    out_json = os.path.join(args.out, "sweep.json")

    def save():
        with open(out_json + ".tmp", "w") as f:
            json.dump({"model": os.path.relpath(os.path.abspath(args.model), ROOT),
                       "seeds": seeds, "configs": list(configs),
                       "runs": [r for r in runs.values() if r],
                       "peer_runs": [r for r in peer_runs.values() if r]}, f, indent=1)
        os.replace(out_json + ".tmp", out_json)

    for name, seed in order:
        run_dir = os.path.join(args.out, f"{name}-seed{seed}")
        if not (args.peer_only or args.record_only):
            train(args, files[name], run_dir, seed)
        runs[(name, seed)] = record(run_dir, name, configs[name][1], seed)
        save()
    peer_configs = [n for n, (_, d) in configs.items()
                    if args.record_only or d["mode"] == "dense" or d.get("file_schedule")]
    if args.peer or args.record_only:
        for name, seed in [(n, s) for s in seeds for n in peer_configs]:
            run_dir = os.path.join(args.out, "peer-torch", f"{name}-seed{seed}")
            if not args.record_only:
                train_peer(args, files[name], run_dir, seed)
            peer_runs[(name, seed)] = record(run_dir, name, configs[name][1], seed)
            save()
    save()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap)
    ap.add_argument("--resize", default="1;2;1,2,3;2,4",
                    help="schedules besides the file's, `;`-separated (e.g. `1;2,4`)")
    args = ap.parse_args()
    source = open(args.model).read()
    own = file_resize_at(source)
    configs = {"dense": (variant(source, dense=True), {"mode": "dense", "resize_at": None})}
    for r in [own] + [r for r in args.resize.split(";") if r and r != own]:
        configs[f"ad-r{r.replace(',', '')}"] = (
            variant(source, r),
            {"mode": "activation_density", "resize_at": [int(x) for x in r.split(",")],
             "file_schedule": r == own})
    seeds = [int(s) for s in args.seeds.split(",")]
    run_sweep(args, configs, [(name, seed) for seed in seeds for name in configs])


if __name__ == "__main__":
    main()
