#!/usr/bin/env python3
"""The PruneTrain reproduction (PT-1, docs/methods.md §4-5): paired runs, resumable.

From a model file with a `method prunetrain { ... }` block, it trains, for every seed, the
paired dense baseline (the file without its method block) and PruneTrain at the file's ratio,
then, for every seed, the other ratios of `--ratios` (default 0.1, 0.3). Each run is
`sparsec train VARIANT.net --out OUT/<name>-seed<S> --set seed=S [--data DIR] [--threads T]`
(OUT/models/ holds the variants); OUT/sweep.json collects each finished run's summary.json,
its per-epoch test accuracy and its `method` lines (λ, CE, GL, widths). `--peer torch` adds
bench/peers/torch_prunetrain.py (PyTorch, its own code) for the dense run and the file's ratio.
Resuming is as bench/activation_density_sweep.py's (same helpers): the same command finishes
an interrupted sweep.

    python3 bench/prunetrain_sweep.py examples/lenet5_prunetrain.net \\
        --data /usr/share/datasets/fashion-mnist --out runs/pt-lenet5 --threads 1
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from activation_density_sweep import ROOT, record, train, train_peer  # noqa: E402

METHOD = re.compile(r"^method\s+prunetrain\s*\{(?P<body>.*?)^\}", re.S | re.M)
PEER = os.path.join(ROOT, "bench", "peers", "torch_prunetrain.py")


def variant(source, ratio=None, dense=False):
    m = METHOD.search(source)
    if not m:
        raise SystemExit("the model file has no `method prunetrain { ... }` block")
    if dense:
        return source[: m.start()] + "# (dense baseline: the method block removed)\n" + \
            source[m.end():]
    body = re.sub(r"ratio\s*:\s*[0-9.eE+-]+", f"ratio: {ratio}", m.group("body"))
    return source[: m.start()] + "method prunetrain {" + body + "}" + source[m.end():]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--ratios", default="0.1,0.2,0.3",
                    help="ratios besides the file's (default 0.1, 0.2, 0.3)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "sparsec"))
    ap.add_argument("--peer", choices=["torch"])
    ap.add_argument("--peer-only", action="store_true",
                    help="train only the peer's runs (sparsec's finished ones are recorded)")
    ap.add_argument("--record-only", action="store_true",
                    help="train nothing: write sweep.json from the finished runs (every "
                    "configuration, the peer's too)")
    ap.add_argument("--python", default=os.path.join(ROOT, "bench", ".venv", "bin", "python"))
    args = ap.parse_args()
    args.peer_script = PEER
    source = open(args.model).read()
    own = float(re.search(r"ratio\s*:\s*([0-9.eE+-]+)", METHOD.search(source).group("body"))
                .group(1))
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = {"dense": (variant(source, dense=True), {"mode": "dense", "ratio": None}),
               f"pt-r{own}": (variant(source, own), {"mode": "prunetrain", "ratio": own,
                                                      "file_schedule": True})}
    for r in [float(x) for x in args.ratios.split(",") if x]:
        if r != own:
            configs[f"pt-r{r}"] = (variant(source, r), {"mode": "prunetrain", "ratio": r,
                                                         "file_schedule": False})
    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
    files = {}
    for name, (text, _) in configs.items():
        files[name] = os.path.join(args.out, "models", f"{name}.net")
        with open(files[name], "w") as f:
            f.write(text)
    first = ["dense", f"pt-r{own}"]
    order = [(n, s) for s in seeds for n in first] + \
        [(n, s) for n in configs if n not in first for s in seeds]
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
    if args.record_only:
        for name, seed in [(n, s) for s in seeds for n in configs]:
            run_dir = os.path.join(args.out, "peer-torch", f"{name}-seed{seed}")
            peer_runs[(name, seed)] = record(run_dir, name, configs[name][1], seed)
        save()
    elif args.peer:
        for name, seed in [(n, s) for s in seeds for n in first]:
            run_dir = os.path.join(args.out, "peer-torch", f"{name}-seed{seed}")
            train_peer(args, files[name], run_dir, seed)
            peer_runs[(name, seed)] = record(run_dir, name, configs[name][1], seed)
            save()


if __name__ == "__main__":
    main()
