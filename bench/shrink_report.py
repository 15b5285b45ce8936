#!/usr/bin/env python3
"""The results report of a shape-changing method (activation density, AD-1; PruneTrain, PT-1;
docs/methods.md §5), built from the sweeps of bench/activation_density_sweep.py or
bench/prunetrain_sweep.py.

Reads each OUT/sweep.json given (one per model) and writes, for `--method M`,
  docs/results/M.json  one record per run, re-derivable from the runs, and
  docs/results/M.md    the tables: per configuration, test accuracy (mean ± std
      over seeds), Δaccuracy against the paired dense run of the same seed, the parameter,
      training-FLOP and inference-FLOP reductions (dense / shrunk, from summary.json's
      params_total, train_flops_total, inference_flops), the measured wall-clock ratio, the
      final widths; the AD-1 targets; the same for the PyTorch peer; and each run's accuracy
      recomputed by bench/check_shrunk_model.py (NumPy, from model.safetensors alone).
The figure (docs/results/M.png) is drawn by bench/plot's `ad-plot` from the JSON. Findings are
hand-written in docs/results/M-findings.md and included.

    python3 bench/shrink_report.py --method activation_density runs/ad-lenet300 runs/ad-lenet5 \\
        --data /usr/share/datasets/fashion-mnist --out docs/results
    python3 bench/shrink_report.py --method prunetrain runs/pt-lenet5 --data ... --out DIR
"""

import argparse
import json
import math
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, "bench", ".venv", "bin", "python")


def mean_std(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs, scale=1.0, digits=2):
    m, s = mean_std([x * scale for x in xs])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def numpy_accuracy(run_dir, data):
    path = os.path.join(ROOT, run_dir, "model.safetensors")
    if not data or not os.path.exists(path) or not os.path.exists(PY):
        return None
    res = subprocess.run([PY, os.path.join(ROOT, "bench", "check_shrunk_model.py"), path,
                          "--data", data], stdout=subprocess.PIPE, text=True)
    return json.loads(res.stdout)["test_accuracy"] if res.returncode == 0 else None


def original_widths(run_dir):
    """{layer: width when the run started} of a reshaped sparsec run (`sparsec report --json`)."""
    binary = os.path.join(ROOT, "target", "release", "sparsec")
    res = subprocess.run([binary, "report", os.path.join(ROOT, run_dir), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if res.returncode != 0:
        return {}
    return {w["layer"]: w["original"] for w in json.loads(res.stdout).get("widths", [])}


def record(r, data, peer):
    s = r["summary"]
    widths = {}
    for line in r.get("method", []):
        if "widths" in line:
            widths = line["widths"]
    rec = {
        "model": None, "name": r["name"], "mode": r["mode"], "seed": r["seed"],
        "resize_at": r.get("resize_at"), "file_schedule": r.get("file_schedule", False),
        "implementation": "torch" if peer else "sparsec",
        "test_accuracy": s["test_accuracy"], "params_total": s["params_total"],
        "train_flops_total": s.get("train_flops_total"),
        "inference_flops": s.get("inference_flops"), "wall_seconds": s["wall_seconds"],
        "threads": s.get("threads"), "steps": s["steps"],
        "final_widths": widths, "widths_by_epoch": [
            {"epoch": l["epoch"], "widths": l["widths"]} for l in r.get("method", [])
            if "widths" in l],
        "density_by_epoch": [{"epoch": l["epoch"], "density": l["density"]}
                             for l in r.get("method", []) if "density" in l],
        "test_accuracy_by_epoch": r.get("test_accuracy_by_epoch", []),
        "run_dir": r["run_dir"],
    }
    if not peer:
        rec["numpy_test_accuracy"] = numpy_accuracy(r["run_dir"], data)
        if widths:
            rec["original_widths"] = {k: v for k, v in original_widths(r["run_dir"]).items()
                                      if k in widths}
    return rec


def pair_ratio(recs, dense, key, invert=False):
    """Per seed: dense[key] / rec[key] (a reduction factor), or rec - dense for accuracy."""
    out = []
    for r in recs:
        d = dense.get(r["seed"])
        if d is None or r[key] is None or d[key] is None:
            continue
        out.append(r[key] - d[key] if invert else d[key] / r[key])
    return out


def table(recs, peer=False):
    dense = {r["seed"]: r for r in recs if r["mode"] == "dense"}
    names = []
    for r in recs:
        if r["name"] not in names:
            names.append(r["name"])
    head = ("| configuration | seeds | test accuracy % | Δacc (pt) | params ÷ | train FLOPs ÷ | "
            "inference FLOPs ÷ | wall time ÷ | final widths (seed 1) |")
    rows = [head, "|" + "---|" * 9]
    summary = {}
    for name in names:
        rs = [r for r in recs if r["name"] == name]
        d_acc = pair_ratio(rs, dense, "test_accuracy", invert=True)
        p = pair_ratio(rs, dense, "params_total")
        t = pair_ratio(rs, dense, "train_flops_total")
        i = pair_ratio(rs, dense, "inference_flops")
        w = pair_ratio(rs, dense, "wall_seconds")
        first = min(rs, key=lambda r: r["seed"])
        widths = ", ".join(f"{k} {v}" for k, v in first["final_widths"].items()) or "—"
        label = name + (" (the file's)" if first["file_schedule"] else "")
        rows.append(f"| {label} | {len(rs)} | {pm([r['test_accuracy'] for r in rs], 100)} | "
                    f"{pm(d_acc, 100)} | {pm(p, 1, 2)} | {pm(t, 1, 2)} | {pm(i, 1, 2)} | "
                    f"{pm(w, 1, 2)} | {widths} |")
        summary[name] = {"delta_acc": mean_std(d_acc)[0] * 100, "params": mean_std(p)[0],
                         "train_flops": mean_std(t)[0], "inference_flops": mean_std(i)[0],
                         "wall": mean_std(w)[0], "seeds": len(rs),
                         "file_schedule": first["file_schedule"]}
    return rows, summary


def ad_target(s):
    """AD-1: ≥ 2× fewer parameters, ≥ 1.5× less training compute (FLOPs and wall time),
    Δacc ≥ −1 point."""
    return (s["params"] >= 2 and s["train_flops"] >= 1.5 and s["wall"] >= 1.5
            and s["delta_acc"] >= -1.0)


def pt_target(s):
    """PT-1: ≥ 30 % fewer training FLOPs, ≥ 40 % fewer inference FLOPs, Δacc ≥ −1 point
    (wall time measured and reported)."""
    return (1 - 1 / s["train_flops"] >= 0.30 and 1 - 1 / s["inference_flops"] >= 0.40
            and s["delta_acc"] >= -1.0)


METHODS = {
    "activation_density": {
        "title": "Activation-density shrinking: results (AD-1)",
        "spec": "[docs/methods.md §2](../methods.md#2-activation-density-pruning-in-training)",
        "targets": "AD-1 targets: ≥ 2× fewer parameters, ≥ 1.5× less training compute (FLOPs "
                   "and wall time), Δacc ≥ −1 point",
        "met": ad_target,
        "peer": "bench/peers/torch_activation_density.py",
    },
    "prunetrain": {
        "title": "PruneTrain: results (PT-1)",
        "spec": "[docs/methods.md §4](../methods.md#4-prunetrain-structured-pruning-from-scratch-"
                "with-reconfiguration)",
        "targets": "PT-1 targets: ≥ 30 % fewer training FLOPs (÷ ≥ 1.43), ≥ 40 % fewer "
                   "inference FLOPs (÷ ≥ 1.67), Δacc ≥ −1 point; wall time measured",
        "met": pt_target,
        "peer": "bench/peers/torch_prunetrain.py",
    },
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=sorted(METHODS), required=True)
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--data", help="the data directory, for the NumPy check")
    ap.add_argument("--out", help="where the report goes (default: the first sweep's "
                    "directory; the committed results are written with --out docs/results)")
    args = ap.parse_args()
    meth = METHODS[args.method]
    args.out = args.out or args.sweeps[0]
    base = args.method
    all_recs = []
    figure = f"![widths and accuracy over the epochs]({base}.png)"
    md = [f"# {meth['title']}", "",
          f"Generated by `python3 bench/shrink_report.py --method {base} "
          + " ".join(os.path.relpath(os.path.abspath(s), ROOT) for s in args.sweeps)
          + (" --data " + args.data if args.data else "")
          + " --out " + os.path.relpath(os.path.abspath(args.out), ROOT) + "` from the runs of the "
          f"method's sweep script; findings below are hand-written ({base}-findings.md). The "
          f"method is specified in {meth['spec']}.", "", figure, ""]
    findings = os.path.join(args.out, f"{base}-findings.md")
    if os.path.exists(findings):
        md += ["## Findings", "", open(findings).read().strip(), ""]
    targets = []
    for sweep in args.sweeps:
        with open(os.path.join(sweep, "sweep.json")) as f:
            sw = json.load(f)
        model = os.path.basename(sw["model"]).replace(".net", "")
        recs = [dict(record(r, args.data, False), model=model) for r in sw["runs"]]
        peer = [dict(record(r, args.data, True), model=model) for r in sw.get("peer_runs", [])]
        all_recs += recs + peer
        first = recs[0] if recs else None
        md += [f"## {model}", "",
               f"`{sw['model']}`, seeds {', '.join(map(str, sw['seeds']))}; "
               + (f"{sw['runs'][0]['summary']['data']}; "
                  if first else "")
               + "every ratio is dense ÷ shrunk of the same seed (> 1: the shrunk run is "
               "smaller or faster); Δacc is shrunk − dense in points. Wall time is the whole "
               f"`sparsec train` run ({first['threads'] if first else '?'} thread), "
               "evaluation after every epoch included.", ""]
        rows, summary = table(recs)
        md += ["### sparsec", ""] + rows + [""]
        checks = [r for r in recs if r.get("numpy_test_accuracy") is not None]
        if checks:
            agree = sum(1 for r in checks
                        if abs(r["numpy_test_accuracy"] - r["test_accuracy"]) < 1e-9)
            md += [f"NumPy check (bench/check_shrunk_model.py, model.safetensors alone): "
                   f"{agree} of {len(checks)} runs' test accuracy reproduced exactly.", ""]
        if peer:
            prow, psum = table(peer, True)
            md += [f"### PyTorch peer ({meth['peer']})", "",
                   "Its own code, streams and FLOP count (products and convolutions only), "
                   "paired with its own dense run of the same seed.", ""] + prow + [""]
        for name, s in summary.items():
            if s["file_schedule"] or name != "dense":
                if name == "dense":
                    continue
                met = meth["met"](s)
                targets.append(f"| {model} | {name} | {s['params']:.2f}× | "
                               f"{s['train_flops']:.2f}× | {s['inference_flops']:.2f}× | "
                               f"{s['wall']:.2f}× | {s['delta_acc']:+.2f} | {s['seeds']} | "
                               f"{'met' if met else 'missed'} |")
    at = md.index(figure) + 2
    md[at:at] = [f"## {meth['targets']}", "",
                 "| model | configuration | params ÷ | train FLOPs ÷ | inference FLOPs ÷ | "
                 "wall time ÷ | Δacc (pt) | seeds | |",
                 "|---|---|---|---|---|---|---|---|---|"] + targets + [""]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{base}.json"), "w") as f:
        json.dump({"runs": all_recs}, f, indent=1)
    with open(os.path.join(args.out, f"{base}.md"), "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
