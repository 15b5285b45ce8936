#!/usr/bin/env python3
"""The Dropback sweep of issue 6: paired runs of one model file, resumable.

From a model file with a `method dropback { ... }` block, it trains, for every seed:
  - the paired dense baseline (the same file without its method block: same data, data order,
    schedule and initial weights, since every run's weights come from the same seeded streams);
  - Dropback at k = floor(N / r) for every ratio r (default 5, 13, 25, 50);
  - at one ratio (default 25), the `freeze_after` and `decay_init` variants (METHODS.md DB-2).
Each run is `sparsec train VARIANT.net --out RUN --set seed=S [--data DIR] [--set epochs=E]` into
OUT/<name>-seed<S>/, with the variant model file written beside it (OUT/models/). The plan and every
finished run's summary go to OUT/sweep.json.

Resuming: a run whose summary.json says it completed is skipped; a run directory with a checkpoint
but no final summary is continued with `sparsec train --resume`, which is exact (same bits as an
uninterrupted run); anything else is started afresh. So the same command, run again after an
interruption, finishes the sweep. Standard library only.

    python3 bench/dropback_sweep.py examples/lenet300_dropback.net --out runs/dropback-sweep
    python3 bench/dropback_sweep.py MODEL --seeds 1 --ratios 25 --epochs 1 --dry-run
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def csv_list(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


METHOD = re.compile(r"^method\s+dropback\s*\{(?P<body>.*?)^\}", re.S | re.M)


def method_lines(source):
    m = METHOD.search(source)
    if not m:
        raise SystemExit("the model file has no `method dropback { ... }` block")
    return m, [l for l in m.group("body").splitlines() if l.strip()]


def variant(source, k=None, extra=()):
    """`source` with its Dropback block rewritten (k replaced, `extra` options added), or without
    it (k = None: the dense baseline)."""
    m, lines = method_lines(source)
    if k is None:
        return source[: m.start()] + "# (dense baseline: the method block removed)\n" + \
            source[m.end():]
    keep = [l for l in lines
            if not re.match(r"\s*(k|freeze_after|decay_init)\s*:", l)]
    body = [f"    k: {k}"] + keep + [f"    {name}: {value}" for name, value in extra]
    return source[: m.start()] + "method dropback {\n" + "\n".join(body) + "\n}" + \
        source[m.end():]


def run_sparsec(args, cmd):
    res = subprocess.run([args.binary] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"sparsec {' '.join(cmd)} failed ({res.returncode}):\n"
                           f"{res.stderr[-3000:]}")
    return res


def total_params(args, dense_file):
    """N, from a zero-step run of the dense variant (writes nothing that stays)."""
    with tempfile.TemporaryDirectory(prefix="sparsec-sweep-") as tmp:
        out = os.path.join(tmp, "run")
        cmd = ["train", dense_file, "--out", out, "--set", "max_steps=0"] + data_args(args)
        run_sparsec(args, cmd)
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)["params_total"]


def data_args(args):
    return ["--data", args.data] if args.data else []


def plan(args, source, n):
    """(name, model text, description) per configuration."""
    configs = [("dense", variant(source), {"mode": "dense", "k": n, "ratio": 1.0})]
    for r in args.ratios:
        k = n // r
        configs.append((f"dropback-x{r}", variant(source, k),
                        {"mode": "dropback", "k": k, "ratio": r}))
    k = n // args.variants_ratio
    configs.append((f"dropback-x{args.variants_ratio}-freeze{args.freeze_after}",
                    variant(source, k, [("freeze_after", args.freeze_after)]),
                    {"mode": "dropback", "k": k, "ratio": args.variants_ratio,
                     "freeze_after": args.freeze_after}))
    configs.append((f"dropback-x{args.variants_ratio}-decay{args.decay_init}",
                    variant(source, k, [("decay_init", args.decay_init)]),
                    {"mode": "dropback", "k": k, "ratio": args.variants_ratio,
                     "decay_init": args.decay_init}))
    return configs


def state_of(run_dir):
    """'done', 'partial' (a checkpoint to resume from) or 'none'."""
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        try:
            with open(summary) as f:
                if json.load(f).get("status") == "completed":
                    return "done"
        except (OSError, ValueError):
            pass
    if os.path.exists(os.path.join(run_dir, "checkpoints", "latest")):
        return "partial"
    return "none"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a model file with a `method dropback` block")
    p.add_argument("--out", default=os.path.join("runs", "dropback-sweep"))
    p.add_argument("--seeds", type=csv_list(int), default=[1, 2, 3])
    p.add_argument("--ratios", type=csv_list(int), default=[5, 13, 25, 50])
    p.add_argument("--variants-ratio", type=int, default=25)
    p.add_argument("--freeze-after", type=int, default=5)
    p.add_argument("--decay-init", type=float, default=0.9)
    p.add_argument("--epochs", type=int, help="override the model file's epochs")
    p.add_argument("--data", help="IDX data directory (else the model file's search order)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    args = p.parse_args()
    if not os.path.exists(args.binary):
        raise SystemExit(f"no sparsec binary at {args.binary}: run `cargo build --release`")
    with open(args.model) as f:
        source = f.read()
    method_lines(source)
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    dense_file = os.path.join(args.out, "models", "dense.net")
    with open(dense_file, "w") as f:
        f.write(variant(source))
    n = total_params(args, dense_file)
    configs = plan(args, source, n)
    index = {"model": os.path.abspath(args.model), "params_total": n,
             "seeds": args.seeds, "epochs": args.epochs, "runs": []}
    failures = 0
    for name, text, desc in configs:
        model_file = os.path.join(args.out, "models", f"{name}.net")
        with open(model_file, "w") as f:
            f.write(text)
        for seed in args.seeds:
            run_dir = os.path.join(args.out, f"{name}-seed{seed}")
            state = state_of(run_dir)
            entry = dict(desc, name=name, seed=seed, run_dir=os.path.abspath(run_dir),
                         model_file=os.path.abspath(model_file))
            sets = ["--set", f"seed={seed}"]
            if args.epochs is not None:
                sets += ["--set", f"epochs={args.epochs}"]
            if state == "done":
                print(f"{name} seed {seed}: done", flush=True)
            elif args.dry_run:
                print(f"{name} seed {seed}: would {'resume' if state == 'partial' else 'train'}"
                      f" (k = {desc['k']})", flush=True)
                index["runs"].append(entry)
                continue
            else:
                if state == "partial":
                    cmd = ["train", "--resume", run_dir] + data_args(args)
                else:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    cmd = ["train", model_file, "--out", run_dir] + sets + data_args(args)
                print(f"{name} seed {seed}: {'resuming' if state == 'partial' else 'training'}"
                      f" (k = {desc['k']})", flush=True)
                try:
                    run_sparsec(args, cmd)
                except RuntimeError as e:
                    failures += 1
                    print(e, file=sys.stderr)
                    continue
            with open(os.path.join(run_dir, "summary.json")) as f:
                entry["summary"] = json.load(f)
            index["runs"].append(entry)
    tmp = os.path.join(args.out, "sweep.json.tmp")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "sweep.json"))
    print(f"wrote {os.path.join(args.out, 'sweep.json')} ({len(index['runs'])} runs, "
          f"{failures} failed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
