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
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from activation_density_sweep import common_args, run_sweep  # noqa: E402
from activation_density_sweep import ROOT  # noqa: E402

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
    common_args(ap)
    ap.add_argument("--ratios", default="0.1,0.2,0.3",
                    help="ratios besides the file's (default 0.1, 0.2, 0.3)")
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
    # Every seed's dense run and the file's setting first, then the other ratios.
    first = ["dense", f"pt-r{own}"]
    order = [(n, s) for s in seeds for n in first] + \
        [(n, s) for n in configs if n not in first for s in seeds]
    run_sweep(args, configs, order)


if __name__ == "__main__":
    main()
