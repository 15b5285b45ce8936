#!/usr/bin/env python3
"""ADMM's training step at each phase against the dense step of the same run (issue: masked
weights compiled as sparse products).

It trains examples/lenet5_admm.net (or MODEL) once on the bundled Fashion-MNIST subset (the data
changes nothing in a step's cost), then resumes copies of that run from checkpoints in each phase
and times `--max-steps`-bounded sessions that stay inside one epoch (no evaluation, no phase
change): the dense step (pretraining), each stage's ADMM rounds and each stage's masked
retraining. Sessions are interleaved over `--repeats` rounds; a phase's figure is the median
samples/s, reported as a ratio to the dense step's. Each phase's optimised step is also described
by the products it runs (from `sparsec emit --stage opt` of the checkpoint's program).

    python3 bench/admm_step.py --out bench/results/admm_step.json [--threads 2]

Writes the JSON (a list of phases with samples/s per repeat, the median, the ratio) and prints a
table. Timing is wall-clock of the training loop as summary.json reports it (`samples_per_sec`).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA_KEY = "sparsec"
sys.path.insert(0, os.path.join(ROOT, "bench"))
from admm_sweep import METHOD, parse_keep, stage_list  # noqa: E402


def run(cmd, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return res.stdout


def train_meta(path):
    """The training metadata a checkpoint's train_state.safetensors carries (its header's
    `__metadata__`, key `sparsec`)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "{}"))


def layout(source, epochs):
    """(name, 0-based epoch) of the phases to time: pretraining, each stage's rounds (its second
    round) and retraining (its second epoch)."""
    body = METHOD.search(source).group("body")
    num = lambda k: int(re.search(rf"{k}\s*:\s*(\d+)", body).group(1))  # noqa: E731
    rounds, per, retrain = num("rounds"), num("epochs_per_round"), num("retrain_epochs")
    stages = max(1, len(stage_list(body)))
    per_stage = rounds * per + retrain
    start = epochs - stages * per_stage
    out = []
    if start > 1:
        out.append(("dense (pretraining)", 1))
    for s in range(stages):
        base = start + s * per_stage
        out.append((f"stage {s + 1} rounds", base + min(per, rounds * per - 1)))
        if retrain:
            out.append((f"stage {s + 1} retraining", base + rounds * per + min(1, retrain - 1)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=os.path.join(ROOT, "examples", "lenet5_admm.net"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist-subset"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=80, help="steps per timed session")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    source = open(args.model).read()
    epochs = int(re.search(r"epochs\s*:\s*(\d+)", source).group(1))
    work = tempfile.mkdtemp(prefix="admm-step-")
    try:
        base = os.path.join(work, "run")
        run([args.binary, "train", args.model, "--data", args.data, "--out", base,
             "--threads", str(args.threads)], cwd=ROOT)
        ckpts = sorted(os.listdir(os.path.join(base, "checkpoints")))
        steps = sorted(int(c.split("-")[1]) for c in ckpts)
        per_epoch = steps[1] - steps[0]
        if args.steps >= per_epoch:
            raise SystemExit(f"--steps must stay inside an epoch ({per_epoch} steps)")
        phases = []
        for name, epoch in layout(source, epochs):
            step = epoch * per_epoch
            ck = f"step-{step:08d}"
            if ck not in ckpts:
                raise SystemExit(f"no checkpoint {ck} for {name}")
            program = train_meta(os.path.join(base, "checkpoints", ck,
                                              "train_state.safetensors")).get("program")
            products = []
            if program:
                ir = os.path.join(work, f"{ck}.ir")
                with open(ir, "w") as f:
                    f.write(program)
                opt = run([args.binary, "emit", "--stage", "opt", ir], cwd=ROOT)
                step_fn = opt[opt.index("func @train_step"):]
                products = sorted(set(re.findall(
                    r"= (masked_matmul_nt|masked_matmul|masked_grad|matmul_nt|matmul_tn|matmul|"
                    r"conv2d_input_grad|conv2d_weight_grad|conv2d) ", step_fn)))
            phases.append({"phase": name, "epoch": epoch + 1, "checkpoint": ck,
                           "products": products, "samples_per_sec": []})
        for _ in range(args.repeats):
            for ph in phases:
                d = os.path.join(work, "t")
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(base, d, ignore=shutil.ignore_patterns("summary.json"))
                with open(os.path.join(d, "latest"), "w") as f:
                    f.write(f"checkpoints/{ph['checkpoint']}\n")
                for c in os.listdir(os.path.join(d, "checkpoints")):
                    if c > ph["checkpoint"]:
                        shutil.rmtree(os.path.join(d, "checkpoints", c))
                stop = int(ph["checkpoint"].split("-")[1]) + args.steps
                run([args.binary, "train", "--resume", d, "--set", f"max_steps={stop}",
                     "--threads", str(args.threads)], cwd=ROOT)
                s = json.load(open(os.path.join(d, "summary.json")))
                ph["samples_per_sec"].append(s["samples_per_sec"])
        dense = None
        for ph in phases:
            ph["median"] = statistics.median(ph["samples_per_sec"])
            if ph["phase"].startswith("dense"):
                dense = ph["median"]
        for ph in phases:
            ph["speed_vs_dense"] = ph["median"] / dense if dense else None
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"model": os.path.relpath(args.model, ROOT), "threads": args.threads,
                       "steps": args.steps, "repeats": args.repeats, "phases": phases}, f,
                      indent=1)
        print(f"{'phase':24} {'samples/s':>10} {'x dense':>8}  products of the step")
        for ph in phases:
            ratio = f"{ph['speed_vs_dense']:.2f}" if ph["speed_vs_dense"] else "-"
            print(f"{ph['phase']:24} {ph['median']:10.0f} {ratio:>8}  {' '.join(ph['products'])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
