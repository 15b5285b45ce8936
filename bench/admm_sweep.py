#!/usr/bin/env python3
"""The ADMM reproduction (ADMM-1 and ADMM-2, docs/methods.md §3): paired runs, resumable.

From a model file with a progressive `method admm { ... stages: [..., C] }` block (its `keep`
ratios are the last stage's, compression C), it trains, for every seed:
  - `dense`: the paired dense baseline, the file without its method block (same data order,
    schedule, epochs and initial weights);
  - `prog-C`: the file as written (the progressive chain, ending at C);
  - `oneshot-C`: one-shot ADMM to C: the same file with `stages` removed (same epochs: the
    pretraining takes the chain's earlier stages' epochs);
  - `oneshot-c` for every other target of `--targets`: one-shot with every layer's keep ratio
    as the chain's stage at c keeps it (`min(1, keep · C / c)`), so the two compare at equal
    per-layer compression;
  - `prog-X` for `--extend X`: the chain with one more stage at X, its keep ratios scaled by
    C / X, and `epochs` grown by one stage.
Each run is `sparsec train VARIANT.net --out OUT/<name>-seed<S> --set seed=S`; OUT/sweep.json
collects every finished run (summary, test accuracy per epoch, the `method` lines: stage ends,
nnz, ρ, Z updates). `--only` trains a subset (to split a sweep over processes; a last
`--record-only` collects them all). `--peer torch` adds bench/peers/torch_admm.py for `dense`
and `prog-C`. Resuming is bench/activation_density_sweep.py's.

    python3 bench/admm_sweep.py examples/lenet5_admm.net \\
        --data /usr/share/datasets/fashion-mnist --out runs/admm-lenet5 --threads 1
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from activation_density_sweep import common_args, run_sweep  # noqa: E402
from activation_density_sweep import ROOT  # noqa: E402

METHOD = re.compile(r"^method\s+admm\s*\{(?P<body>.*?)^\}", re.S | re.M)
KEEP = re.compile(r"keep\s*:\s*\{(?P<map>[^}]*)\}")
STAGES = re.compile(r"\s*stages\s*:\s*\[(?P<list>[^\]]*)\]\n?")
EPOCHS = re.compile(r"epochs\s*:\s*(?P<n>\d+)")
PEER = os.path.join(ROOT, "bench", "peers", "torch_admm.py")


def parse_keep(body):
    m = KEEP.search(body)
    if not m:
        raise SystemExit("the sweep needs `keep` as a map `{ layer: ratio, ... }`")
    out = {}
    for item in m.group("map").split(","):
        if item.strip():
            k, v = item.split(":")
            out[k.strip()] = float(v)
    return out


def stage_list(body):
    m = STAGES.search(body)
    return [float(x) for x in m.group("list").split(",") if x.strip()] if m else []


def fmt(x):
    return f"{x:.6g}"


def variant(source, dense=False, keep=None, stages=None, extra_epochs=0):
    m = METHOD.search(source)
    if not m:
        raise SystemExit("the model file has no `method admm { ... }` block")
    if dense:
        return source[: m.start()] + "# (dense baseline: the method block removed)\n" + \
            source[m.end():]
    body = m.group("body")
    if keep is not None:
        body = KEEP.sub("keep: { " + ", ".join(f"{k}: {fmt(v)}" for k, v in keep.items()) + " }",
                        body)
    if stages is not None:
        body = STAGES.sub("\n" if not stages else
                          "\n    stages: [" + ", ".join(fmt(s) for s in stages) + "]\n", body)
    text = source[: m.start()] + "method admm {" + body + "}" + source[m.end():]
    if extra_epochs:
        n = int(EPOCHS.search(text).group("n"))
        text = EPOCHS.sub(f"epochs: {n + extra_epochs}", text, count=1)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap)
    ap.add_argument("--targets", default="10,15,30",
                    help="one-shot compressions besides the chain's last (default 10, 15, 30)")
    ap.add_argument("--extend", default="167", help="an extra stage for a longer chain")
    ap.add_argument("--only", help="train only these configurations (comma-separated)")
    args = ap.parse_args()
    args.peer_script = PEER
    source = open(args.model).read()
    body = METHOD.search(source).group("body")
    keep, stages = parse_keep(body), stage_list(body)
    if not stages:
        raise SystemExit("the model file's ADMM has no `stages`: the sweep compares a chain")
    last = stages[-1]
    rounds = int(re.search(r"rounds\s*:\s*(\d+)", body).group(1))
    per_round = int(re.search(r"epochs_per_round\s*:\s*(\d+)", body).group(1))
    retrain = int(re.search(r"retrain_epochs\s*:\s*(\d+)", body).group(1))
    stage_epochs = rounds * per_round + retrain

    def scaled(c):
        return {k: min(1.0, v * last / c) for k, v in keep.items()}

    name = f"{last:g}"
    configs = {
        "dense": (variant(source, dense=True), {"mode": "dense"}),
        f"prog-{name}": (source, {"mode": "admm", "stages": stages, "target": last,
                                  "file_schedule": True}),
        f"oneshot-{name}": (variant(source, stages=[]), {"mode": "admm", "stages": [],
                                                          "target": last}),
    }
    for c in [float(x) for x in args.extend.split(",") if x]:
        configs[f"prog-{c:g}"] = (
            variant(source, keep=scaled(c), stages=stages + [c], extra_epochs=stage_epochs),
            {"mode": "admm", "stages": stages + [c], "target": c})
    for c in [float(x) for x in args.targets.split(",") if x]:
        configs[f"oneshot-{c:g}"] = (variant(source, keep={k: v for k, v in scaled(c).items()},
                                             stages=[]),
                                     {"mode": "admm", "stages": [], "target": c})
    seeds = [int(s) for s in args.seeds.split(",")]
    only = set(args.only.split(",")) if args.only else set(configs)
    unknown = only - set(configs)
    if unknown:
        raise SystemExit(f"--only: unknown configurations {sorted(unknown)}; "
                         f"known: {list(configs)}")
    order = [(n, s) for s in seeds for n in configs if n in only]
    run_sweep(args, configs, order)


if __name__ == "__main__":
    main()
