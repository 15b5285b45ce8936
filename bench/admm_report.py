#!/usr/bin/env python3
"""The ADMM results report (ADMM-1 and ADMM-2, docs/methods.md §3 and §5), built from the sweep
of bench/admm_sweep.py.

Reads OUT/sweep.json and writes
  DIR/admm.json  the runs (one record each, re-derivable from the run directories) and the
      accuracy-compression series the figure draws: every stage end of every progressive
      chain (its per-layer nnz from the `stage_end` lines), every one-shot run's end, the dense
      baseline; sparsec's and the PyTorch peer's;
  DIR/admm.md    the tables: per configuration and stage, test accuracy (mean ± std over
      seeds), Δ against the paired dense run of the same seed (sparsec; the peer against its
      own dense run), the compression of the selected layers (their weights / the weights they
      keep) and of the whole network (parameters / non-zero parameters, from model.safetensors
      by bench/check_shrunk_model.py, which also recomputes the accuracy with NumPy); the
      targets (the largest compression with Δ ≥ −0.5 and ≥ −1.0 points, Δ ≥ −1 at ≥ 12×,
      progressive no worse than one-shot at equal compression).
The figure (DIR/admm.png) is drawn by bench/plot's `admm-plot` from the JSON. Findings are
hand-written in DIR/admm-findings.md and included.

    python3 bench/admm_report.py runs/admm-lenet5 --data /usr/share/datasets/fashion-mnist \\
        [--out DIR]   (default: beside the sweep, OUT/report/)
"""

import argparse
import json
import math
import os
import statistics
import subprocess

import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shrink_report import PY, ROOT, mean_std  # noqa: E402


def pm(xs, scale=100.0, digits=2):
    m, s = mean_std(xs)
    if math.isnan(m):
        return "–"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def signed(xs, scale=100.0):
    m, s = mean_std(xs)
    if math.isnan(m):
        return "–"
    return f"{m * scale:+.2f} ± {s * scale:.2f}"


def metrics(run_dir):
    out = []
    with open(os.path.join(ROOT, run_dir, "metrics.jsonl")) as f:
        for line in f:
            out.append(json.loads(line))
    return out


def stage_ends(run_dir):
    """[(stage, test accuracy, compression of the selected layers)] of a run's stage ends
    (sparsec's and the peer's `method` lines)."""
    out = []
    for rec in metrics(run_dir):
        end = rec.get("stage_end")
        if rec.get("kind") != "method" or not end:
            continue
        nnz = rec["nnz"]
        if all(isinstance(v, dict) for v in nnz.values()):
            size = sum(v["size"] for v in nnz.values())
            kept = sum(v["nnz"] for v in nnz.values())
        else:
            size = None
            kept = sum(nnz.values())
        out.append({"stage": end["stage"], "test_accuracy": end["test_accuracy"],
                    "kept": kept, "size": size})
    return out


def check_model(run_dir, data):
    """NumPy's accuracy and the non-zero parameters of a run's model.safetensors."""
    path = os.path.join(ROOT, run_dir, "model.safetensors")
    if not data or not os.path.exists(path) or not os.path.exists(PY):
        return None
    res = subprocess.run([PY, os.path.join(ROOT, "bench", "check_shrunk_model.py"), path,
                          "--data", data, "--no-conv-relu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        return {"error": res.stderr[-500:]}
    return json.loads(res.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    out_dir = args.out or os.path.join(args.sweep, "report")
    os.makedirs(out_dir, exist_ok=True)
    sweep = json.load(open(os.path.join(args.sweep, "sweep.json")))
    selected_size = None
    records = []
    for impl, key in (("sparsec", "runs"), ("torch", "peer_runs")):
        for r in sweep.get(key, []):
            s = r["summary"]
            rec = {"implementation": impl, "name": r["name"], "seed": r["seed"],
                   "mode": r["mode"], "stages": r.get("stages"), "target": r.get("target"),
                   "run_dir": r["run_dir"], "test_accuracy": s["test_accuracy"],
                   "params_total": s.get("params_total"),
                   "wall_seconds": s.get("wall_seconds"),
                   "stage_ends": stage_ends(r["run_dir"]) if r["mode"] != "dense" else []}
            for e in rec["stage_ends"]:
                selected_size = selected_size or e["size"]
            if impl == "sparsec":
                rec["numpy_check"] = check_model(r["run_dir"], args.data)
            records.append(rec)
    for rec in records:
        for e in rec["stage_ends"]:
            e["size"] = e["size"] or selected_size
            e["compression"] = e["size"] / e["kept"] if e["size"] else None

    def dense_of(impl, seed):
        for rec in records:
            if rec["implementation"] == impl and rec["mode"] == "dense" and rec["seed"] == seed:
                return rec["test_accuracy"]
        return None

    # Points: (implementation, configuration, stage) → compression and per-seed (acc, Δ).
    points = {}
    for rec in records:
        if rec["mode"] == "dense":
            continue
        d = dense_of(rec["implementation"], rec["seed"])
        for e in rec["stage_ends"]:
            p = points.setdefault((rec["implementation"], rec["name"], e["stage"]), {
                "implementation": rec["implementation"], "config": rec["name"],
                "kind": "progressive" if rec["stages"] else "oneshot", "stage": e["stage"],
                "compression": e["compression"], "accuracies": [], "deltas": [], "seeds": []})
            p["accuracies"].append(e["test_accuracy"])
            p["deltas"].append(None if d is None else e["test_accuracy"] - d)
            p["seeds"].append(rec["seed"])
    dense = {}
    for rec in records:
        if rec["mode"] == "dense":
            dense.setdefault(rec["implementation"], []).append(rec["test_accuracy"])
    series = [{"implementation": impl, "config": "dense", "kind": "dense",
               "points": [{"compression": 1.0, "accuracies": accs}]}
              for impl, accs in sorted(dense.items())]
    for (impl, config) in sorted({(i, c) for i, c, _ in points}):
        pts = sorted((p for (i, c, _), p in points.items() if i == impl and c == config),
                     key=lambda p: p["stage"])
        series.append({"implementation": impl, "config": config, "kind": pts[0]["kind"],
                       "points": [{"compression": p["compression"], "stage": p["stage"],
                                   "accuracies": p["accuracies"]} for p in pts]})
    with open(os.path.join(out_dir, "admm.json"), "w") as f:
        json.dump({"sweep": os.path.relpath(args.sweep, ROOT), "model": sweep.get("model"),
                   "runs": records, "series": series}, f, indent=1)

    # Targets, from sparsec's points with every seed's Δ known.
    ours = [p for (i, _, _), p in points.items() if i == "sparsec"
            and all(d is not None for d in p["deltas"])]

    def best(threshold):
        ok = [p for p in ours if statistics.fmean(p["deltas"]) >= threshold]
        return max(ok, key=lambda p: p["compression"]) if ok else None

    md = ["# Progressive ADMM pruning: reproduction (ADMM-1, ADMM-2)", "",
          f"Generated by `bench/admm_report.py` from `{os.path.relpath(args.sweep, ROOT)}` "
          f"(bench/admm_sweep.py on `{sweep.get('model')}`, full Fashion-MNIST); the findings "
          "below are hand-written (admm-findings.md). Accuracy is the test accuracy at the end of "
          "each stage (a chain) or run (one-shot), mean ± std over the seeds; Δ is against the "
          "paired dense run of the same seed, in points; compression is the selected layers' "
          "weights over the weights they keep. The peer (bench/peers/torch_admm.py, its own "
          "PyTorch code of the same plan) is paired with its own dense run.", "",
          "| implementation | configuration | stage | compression | seeds | test accuracy, % | "
          "Δ vs dense, points |", "|---|---|---|---|---|---|---|"]
    for impl, accs in sorted(dense.items()):
        md.append(f"| {impl} | dense | – | 1× | {len(accs)} | {pm(accs)} | – |")
    for p in sorted(points.values(), key=lambda p: (p["implementation"] != "sparsec",
                                                     p["config"], p["stage"])):
        deltas = [d for d in p["deltas"] if d is not None]
        md.append(f"| {p['implementation']} | {p['config']} | {p['stage']} | "
                  f"{p['compression']:.1f}× | {len(p['accuracies'])} | {pm(p['accuracies'])} | "
                  f"{signed(deltas)} |")
    md += ["", "## Targets", ""]
    for threshold in (-0.005, -0.01):
        b = best(threshold)
        md.append(f"- Largest compression with mean Δ ≥ {threshold * 100:+.1f} points: " + (
            f"{b['compression']:.1f}× ({b['config']}, stage {b['stage']}, Δ "
            f"{signed(b['deltas'])})" if b else "none"))
    twelve = [p for p in ours if p["compression"] >= 12]
    hit = [p for p in twelve if statistics.fmean(p["deltas"]) >= -0.01]
    md.append("- Δ ≥ −1 point at ≥ 12×: " + ("met (" + ", ".join(
        f"{p['config']} stage {p['stage']} at {p['compression']:.1f}×: {signed(p['deltas'])}"
        for p in hit) + ")" if hit else "missed"))
    pairs = []
    for p in ours:
        if p["kind"] != "oneshot":
            continue
        for q in ours:
            if q["kind"] == "progressive" and abs(q["compression"] / p["compression"] - 1) < 0.02:
                pairs.append((q, p))
    for q, p in pairs:
        verdict = "no worse" if statistics.fmean(q["accuracies"]) >= \
            statistics.fmean(p["accuracies"]) else "worse"
        md.append(f"- Progressive vs one-shot at {p['compression']:.1f}×: {q['config']} "
                  f"stage {q['stage']} {pm(q['accuracies'])} % against {p['config']} "
                  f"{pm(p['accuracies'])} %: {verdict}")
    md += ["", "## Every run", "",
           "NumPy's accuracy reruns the test set through the run's model.safetensors alone "
           "(bench/check_shrunk_model.py). Wall times are each run's own, with other runs "
           "sharing the machine: not a speed comparison (bench/admm_step.py is).", "",
           "| implementation | run | seed | test accuracy, % | NumPy's accuracy, % | "
           "non-zero parameters | wall, s |", "|---|---|---|---|---|---|---|"]
    for rec in records:
        chk = rec.get("numpy_check") or {}
        numpy_acc = f"{100 * chk['test_accuracy']:.2f}" if "test_accuracy" in chk else "–"
        nonzero = sum(chk["nonzero"].values()) if "nonzero" in chk else "–"
        md.append(f"| {rec['implementation']} | {rec['name']} | {rec['seed']} | "
                  f"{100 * rec['test_accuracy']:.2f} | {numpy_acc} | {nonzero} | "
                  f"{rec['wall_seconds'] or 0:.0f} |")
    findings = os.path.join(out_dir, "admm-findings.md")
    if os.path.exists(findings):
        md += ["", "## Findings", "", open(findings).read().strip(), ""]
    with open(os.path.join(out_dir, "admm.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"wrote {out_dir}/admm.json and admm.md")


if __name__ == "__main__":
    main()
