#!/usr/bin/env python3
"""The Dropback sweep of issue 6: paired runs of one model file, resumable.

From a model file with a `method dropback { ... }` block, it trains, for every seed:
  - the paired dense baseline (the same file without its method block: same data, data order,
    schedule and initial weights, since every run's weights come from the same seeded streams);
  - Dropback at k = floor(N / r) for every ratio r (default 5, 13, 25, 50);
  - at one ratio (default 25), the `freeze_after` and `decay_init` variants (DB-2 of
    docs/methods.md §5).
Each run is `sparsec train VARIANT.net --out RUN --set seed=S [--data DIR] [--set epochs=E]
[--set lr=LR] [--threads T]` into OUT/<name>-seed<S>/, with the variant model file written beside it
(OUT/models/). The plan and every finished run's summary go to OUT/sweep.json.

`--peer torch` adds the same plan trained by an independent implementation,
bench/peers/torch_dropback_train.py (PyTorch, faithful Dropback; its own dense run of the same seed
is its pair), into OUT/peer-torch/<name>-seed<S>/, with the model file's epochs, batch and lr (a
LeNet-300-100 or LeNet-5 file with plain SGD and a constant schedule; others are refused). Its
summaries go to sweep.json's `peer_runs`.

Resuming: a run whose summary.json says it completed is skipped; a run directory with a checkpoint
but no final summary is continued with `sparsec train --resume`, which is exact (same bits as an
uninterrupted run); anything else is started afresh. So the same command, run again after an
interruption, finishes the sweep. Every finished run's per-layer table (`sparsec report RUN
--json`: parameters and tracked weights per layer) goes into its sweep.json entry as `layers`.
Standard library only.

    python3 bench/dropback_sweep.py examples/lenet300_dropback.net --out runs/dropback-sweep
    python3 bench/dropback_sweep.py MODEL --seeds 1 --ratios 25 --epochs 1 --dry-run
    python3 bench/dropback_sweep.py examples/lenet300_dropback.net --out runs/dropback-sweep \
        --peer torch
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


def layers_of(args, run_dir):
    """{layer: [parameters, kept]} of a finished run, from `sparsec report RUN --json` (kept:
    tracked weights for Dropback, non-zero ones for dense); None if the report fails."""
    try:
        report = json.loads(run_sparsec(args, ["report", run_dir, "--json"]).stdout)
    except (RuntimeError, ValueError) as e:
        print(f"{run_dir}: no per-layer report ({e})", file=sys.stderr)
        return None
    return {l["layer"]: [l["parameters"], l["kept"]] for l in report["layers"]}


def zero_step_summary(args, dense_file):
    """The summary of a zero-step run of the dense variant (N, epochs, batch, data; writes
    nothing that stays)."""
    with tempfile.TemporaryDirectory(prefix="sparsec-sweep-") as tmp:
        out = os.path.join(tmp, "run")
        cmd = ["train", dense_file, "--out", out, "--set", "max_steps=0"] + data_args(args)
        if args.epochs is not None:
            cmd += ["--set", f"epochs={args.epochs}"]
        run_sparsec(args, cmd)
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)


def data_args(args):
    return ["--data", args.data] if args.data else []


PEER_SCRIPT = os.path.join(ROOT, "bench", "peers", "torch_dropback_train.py")
# The peer's models by parameter count (bench/peers/common.py's tables).
PEER_MODELS = {266_610: "lenet300", 431_080: "lenet5"}


def peer_settings(args, source, base):
    """(model, data dir, epochs, batch, lr) for the peer, from the model file and the zero-step
    run's summary; refuses what the peer does not implement."""
    model = PEER_MODELS.get(base["params_total"])
    if model is None:
        raise SystemExit(f"--peer: the peer has no model of {base['params_total']:,} parameters "
                         f"(it knows {', '.join(PEER_MODELS.values())})")
    opt = re.search(r"optimizer\s*:\s*sgd\s*\((?P<args>[^)]*)\)", source)
    if not opt:
        raise SystemExit("--peer: the model file's optimizer is not `sgd(...)`")
    opts = dict(re.findall(r"(\w+)\s*:\s*([^,\s]+)", opt.group("args")))
    for key in ("momentum", "weight_decay"):
        if float(opts.get(key, "0")) != 0.0:
            raise SystemExit(f"--peer: the peer runs plain SGD; the model file sets {key}")
    sched = re.search(r"schedule\s*:\s*(\w+)", source)
    if sched and sched.group(1) != "constant":
        raise SystemExit("--peer: the peer runs a constant learning rate")
    lr = args.lr if args.lr is not None else float(opts["lr"])
    data = args.data
    if data is None:
        m = re.search(r" from (.+) \(\d+ train", base.get("data", ""))
        if not m or not os.path.isdir(m.group(1)):
            raise SystemExit("--peer: pass --data DIR (the data directory sparsec used is not "
                             "known)")
        data = m.group(1)
    return model, data, base["epochs"], base["batch"], lr


def run_peer(args, settings, desc, seed, run_dir):
    model, data, epochs, batch, lr = settings
    cmd = [args.python, PEER_SCRIPT, "--model", model, "--data", data, "--out", run_dir,
           "--seed", str(seed), "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr),
           "--threads", str(args.threads or 2)]
    if desc["mode"] == "dropback":
        cmd += ["--k", str(desc["k"])]
    if desc.get("freeze_after") is not None:
        cmd += ["--freeze-after", str(desc["freeze_after"])]
    if desc.get("decay_init") is not None:
        cmd += ["--decay-init", str(desc["decay_init"])]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def plan(args, source, n):
    """(name, model text, description) per configuration."""
    configs = [("dense", variant(source), {"mode": "dense", "k": n, "ratio": 1.0})]
    for r in args.ratios:
        k = n // r
        configs.append((f"dropback-x{r}", variant(source, k),
                        {"mode": "dropback", "k": k, "ratio": r}))
    if args.no_variants:
        return configs
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
    if summary_of(run_dir) is not None:
        return "done"
    # `latest` (beside summary.json) names the newest checkpoint; see src/checkpoint.rs.
    if os.path.exists(os.path.join(run_dir, "latest")):
        return "partial"
    return "none"


def summary_of(run_dir):
    """A run directory's summary.json if it says the run completed, else None."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a model file with a `method dropback` block")
    p.add_argument("--out", default=os.path.join("runs", "dropback-sweep"))
    p.add_argument("--seeds", type=csv_list(int), default=[1, 2, 3])
    p.add_argument("--ratios", type=csv_list(int), default=[5, 13, 25, 50])
    p.add_argument("--variants-ratio", type=int, default=25)
    p.add_argument("--no-variants", action="store_true",
                   help="leave out the freeze_after and decay_init variants")
    p.add_argument("--freeze-after", type=int, default=5)
    p.add_argument("--decay-init", type=float, default=0.9)
    p.add_argument("--epochs", type=int, help="override the model file's epochs")
    p.add_argument("--lr", type=float, help="override the model file's learning rate")
    p.add_argument("--threads", type=int, help="threads of every run (sparsec: 1 or 2)")
    p.add_argument("--data", help="IDX data directory (else the model file's search order)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    p.add_argument("--peer", choices=["torch"], help="also train the plan with this peer")
    p.add_argument("--python", default=os.path.join(ROOT, "bench", ".venv", "bin", "python"),
                   help="the Python with the peer's framework (bench/setup.sh makes it)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    args = p.parse_args()
    if not os.path.exists(args.binary):
        raise SystemExit(f"no sparsec binary at {args.binary}: run `cargo build --release`")
    if args.peer and not os.path.exists(args.python):
        raise SystemExit(f"no Python at {args.python}: run bench/setup.sh (or pass --python)")
    try:
        with open(args.model) as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {args.model}: {getattr(e, 'strerror', None) or e}")
    method_lines(source)
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    dense_file = os.path.join(args.out, "models", "dense.net")
    with open(dense_file, "w") as f:
        f.write(variant(source))
    base = zero_step_summary(args, dense_file)
    n = base["params_total"]
    peer = peer_settings(args, source, base) if args.peer else None
    configs = plan(args, source, n)
    index = {"model": os.path.abspath(args.model), "params_total": n,
             "seeds": args.seeds, "epochs": args.epochs, "lr": args.lr, "runs": [],
             "peer": args.peer, "peer_runs": []}
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
            if args.lr is not None:
                sets += ["--set", f"lr={args.lr}"]
            threads = ["--threads", str(args.threads)] if args.threads else []
            if state == "done":
                print(f"{name} seed {seed}: done", flush=True)
            elif args.dry_run:
                print(f"{name} seed {seed}: would {'resume' if state == 'partial' else 'train'}"
                      f" (k = {desc['k']})", flush=True)
                index["runs"].append(entry)
                continue
            else:
                if state == "partial":
                    cmd = ["train", "--resume", run_dir] + threads + data_args(args)
                else:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    cmd = ["train", model_file, "--out", run_dir] + sets + threads + \
                        data_args(args)
                print(f"{name} seed {seed}: {'resuming' if state == 'partial' else 'training'}"
                      f" (k = {desc['k']})", flush=True)
                try:
                    run_sparsec(args, cmd)
                except RuntimeError as e:
                    failures += 1
                    print(e, file=sys.stderr)
                    continue
            entry["summary"] = summary_of(run_dir)
            if entry["summary"] is not None:
                entry["layers"] = layers_of(args, run_dir)
            index["runs"].append(entry)
    if peer:
        for name, _, desc in configs:
            for seed in args.seeds:
                run_dir = os.path.join(args.out, f"peer-{args.peer}", f"{name}-seed{seed}")
                entry = dict(desc, name=name, seed=seed, peer=args.peer,
                             run_dir=os.path.abspath(run_dir))
                summary = summary_of(run_dir)
                if summary is not None:
                    print(f"{args.peer} {name} seed {seed}: done", flush=True)
                elif args.dry_run:
                    print(f"{args.peer} {name} seed {seed}: would train", flush=True)
                    index["peer_runs"].append(entry)
                    continue
                else:
                    # The peer keeps no checkpoints: an unfinished run starts again.
                    shutil.rmtree(run_dir, ignore_errors=True)
                    print(f"{args.peer} {name} seed {seed}: training (k = {desc['k']})",
                          flush=True)
                    try:
                        run_peer(args, peer, desc, seed, run_dir)
                    except RuntimeError as e:
                        failures += 1
                        print(e, file=sys.stderr)
                        continue
                    summary = summary_of(run_dir)
                entry["summary"] = summary
                index["peer_runs"].append(entry)
    tmp = os.path.join(args.out, "sweep.json.tmp")
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "sweep.json"))
    print(f"wrote {os.path.join(args.out, 'sweep.json')} ({len(index['runs'])} runs, "
          f"{len(index['peer_runs'])} peer runs, {failures} failed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
