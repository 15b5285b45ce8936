#!/usr/bin/env python3
"""The Dropback results report, built from a sweep's run directories (bench/dropback_sweep.py).

Reads OUT/sweep.json and every run's summary.json, and writes
  docs/results/dropback.json  the figures, one record per run (re-derivable from the runs), and
  docs/results/dropback.md    (embedding docs/results/dropback.png, drawn by bench/plot) the tables: test accuracy mean ± std over seeds, Δaccuracy against
                              the paired dense run (same seed, same data order and schedule),
                              compression N / k, measured weight_state_bytes, peak RSS, samples/s;
                              the largest compression whose mean Δaccuracy stays ≥ −0.5 and ≥ −1.0
                              points; and the DB-1 / DB-2 targets of docs/methods.md §5.
Standard library only.

    python3 bench/dropback_report.py runs/dropback-sweep
"""

import argparse
import hashlib
import json
import math
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mean_std(xs):
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs, scale=100.0, digits=2):
    m, s = mean_std([x * scale for x in xs])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def records(entries):
    """One record per completed run of a sweep's `runs` or `peer_runs`."""
    out = []
    for r in entries:
        s = r.get("summary")
        if not s or s.get("status") != "completed":
            continue
        out.append({
            "name": r["name"], "mode": r["mode"], "seed": r["seed"], "k": r["k"],
            "ratio": r["ratio"], "freeze_after": r.get("freeze_after"),
            "decay_init": r.get("decay_init"),
            "test_accuracy": s["test_accuracy"],
            "test_accuracy_last5": last_epochs_accuracy(r["run_dir"], 5),
            "train_accuracy_last_epoch": last_epoch_train_accuracy(r["run_dir"]),
            "test_loss": s["test_loss"], "train_loss": s["train_loss"], "epochs": s["epochs_completed"],
            "weights_stored": s["weights_stored"],
            "weight_state_bytes": s["weight_state_bytes"],
            "peak_rss_bytes": s["peak_rss_bytes"], "samples_per_sec": s["samples_per_sec"],
            "wall_seconds": s["wall_seconds"],
            "backend": s.get("backend") or f"{r['peer']} {s.get('version', '')}".strip(),
            "threads": s.get("threads"), "data": s["data"], "lr": s.get("lr", run_lr(r["run_dir"])),
            "tracked_per_layer": tracked_per_layer(r, s),
            "run_dir": os.path.relpath(r["run_dir"], ROOT)
            if r["run_dir"].startswith(ROOT) else r["run_dir"],
        })
    return out


def tracked_per_layer(entry, summary):
    """{layer: weights kept} of a Dropback run: sparsec's per-layer report (the sweep's `layers`)
    or the peer's own count (its summary's `tracked_per_layer`); None for dense runs or when
    neither is there."""
    if entry["mode"] != "dropback":
        return None
    if entry.get("layers"):
        return {layer: kept for layer, (_, kept) in entry["layers"].items()}
    return summary.get("tracked_per_layer")


def layer_sizes(entries):
    """{layer: parameters} from the first sparsec run with a per-layer report, or {}."""
    for e in entries:
        if e.get("layers"):
            return {layer: params for layer, (params, _) in e["layers"].items()}
    return {}


def run_lr(run_dir):
    """The learning rate a sparsec run logged (its metrics' first line), or None."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return json.loads(f.readline()).get("lr")
    except (OSError, ValueError):
        return None


def epoch_values(run_dir, key):
    """`key` (test_accuracy, train_accuracy) of every epoch of a run, from its metrics'
    per-epoch lines (sparsec's `kind: epoch`, every line of the peer's); [] if unreadable."""
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return []
    return [l[key] for l in lines if l.get("kind", "epoch") == "epoch" and key in l]


def last_epochs_accuracy(run_dir, epochs):
    """The mean test accuracy of a run's last `epochs` epochs, or None."""
    accs = epoch_values(run_dir, "test_accuracy")
    return statistics.fmean(accs[-epochs:]) if len(accs) >= epochs else None


def last_epoch_train_accuracy(run_dir):
    """The training accuracy over a run's last epoch (the running count of its batches, before
    each step's update), or None."""
    accs = epoch_values(run_dir, "train_accuracy")
    return accs[-1] if accs else None


def model_digest(run_dir):
    """SHA-256 of a run's model.safetensors, or None."""
    try:
        with open(os.path.join(run_dir, "model.safetensors"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def pair_with_dense(recs, n):
    """Adds delta_accuracy (against the dense run of the same seed) and compression; returns
    the records grouped by configuration name, in plan order."""
    dense = {r["seed"]: r for r in recs if r["mode"] == "dense"}
    for r in recs:
        base = dense.get(r["seed"])
        r["delta_accuracy"] = None if base is None else r["test_accuracy"] - base["test_accuracy"]
        r["delta_accuracy_last5"] = None if base is None or None in (
            r["test_accuracy_last5"], base["test_accuracy_last5"]) else \
            r["test_accuracy_last5"] - base["test_accuracy_last5"]
        r["compression"] = n / r["weights_stored"]
    by = {}
    for r in recs:
        by.setdefault(r["name"], []).append(r)
    return by


def mean_delta(rs):
    """Mean Δ in points over the runs that have a pair, or None."""
    ds = [r["delta_accuracy"] for r in rs if r["delta_accuracy"] is not None]
    return statistics.fmean(ds) * 100 if ds else None


def is_plain(r):
    return r["mode"] == "dropback" and not r["freeze_after"] and not r["decay_init"]


def verdicts(by):
    """Markdown lines: the largest compression at −0.5/−1.0 points, DB-1 and DB-2."""
    lines = []
    plain = [nm for nm, rs in by.items() if is_plain(rs[0]) and mean_delta(rs) is not None]
    for floor in (-0.5, -1.0):
        ok = [nm for nm in plain if mean_delta(by[nm]) >= floor]
        best = max(ok, key=lambda nm: by[nm][0]["compression"], default=None)
        lines.append(f"- Largest compression with mean Δaccuracy ≥ {floor} points: " + (
            f"**{by[best][0]['compression']:.1f}×** ({best}, Δ = {mean_delta(by[best]):+.2f})"
            if best else "none of the swept ratios"))
    by_ratio = {by[nm][0]["ratio"]: nm for nm in plain}
    for ratio, floor, label in ((13, -0.5, "DB-1 at 13×"), (25, -1.5, "DB-1 at 25×")):
        nm = by_ratio.get(ratio)
        if nm:
            d = mean_delta(by[nm])
            lines.append(f"- {label}: Δ = {d:+.2f} points (target ≥ {floor}): "
                         f"**{'met' if d >= floor else 'missed'}**.")
    frozen = [nm for nm, rs in by.items() if rs[0]["freeze_after"]]
    if frozen and by_ratio.get(by[frozen[0]][0]["ratio"]):
        nm, ref = frozen[0], by_ratio[by[frozen[0]][0]["ratio"]]
        if mean_delta(by[nm]) is not None:
            gap = mean_delta(by[nm]) - mean_delta(by[ref])
            lines.append(f"- DB-2 ({nm} against {ref}): {gap:+.2f} points (target within "
                         f"±0.3): **{'met' if abs(gap) <= 0.3 else 'missed'}**.")
    return lines


def load_sweep(path):
    """A sweep directory's sweep.json; a missing or unreadable one ends the report with a
    message (exit 1), not a traceback."""
    index = os.path.join(path, "sweep.json")
    try:
        with open(index) as f:
            return json.load(f)
    except OSError as e:
        raise SystemExit(f"error: {index}: {e.strerror} (is {path} a dropback_sweep.py --out "
                         "directory?)")
    except ValueError as e:
        raise SystemExit(f"error: {index}: not valid JSON ({e})")


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise SystemExit(f"error: {path}: {e.strerror}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir")
    p.add_argument("--setting-sweep", action="append", default=[], metavar="DIR",
                   help="a sweep of the same model at another --lr and/or --epochs "
                        "(repeatable): reported as a separate finding, each paired with its own "
                        "dense runs")
    p.add_argument("--repeat", metavar="DIR",
                   help="a sweep repeating some configurations (same or new seeds), set beside "
                        "the main sweep's spread")
    p.add_argument("--findings", metavar="FILE",
                   help="hand-written markdown (what the figures mean), placed after the plot "
                        "under a `Findings` heading; every figure it quotes must come from the "
                        "tables below")
    p.add_argument("--out", help="where the report goes (default: SWEEP_DIR/report; the "
                                 "committed one is docs/results)")
    args = p.parse_args()
    if args.out is None:
        args.out = os.path.join(args.sweep_dir, "report")
    if args.findings:
        read_text(args.findings)
    sweep = load_sweep(args.sweep_dir)
    n = sweep["params_total"]
    recs = records(sweep["runs"])
    by = pair_with_dense(recs, n)
    if "dense" not in by:
        raise SystemExit("no completed dense baseline in the sweep")
    peer = sweep.get("peer")
    peer_recs = records(sweep.get("peer_runs", []))
    peer_by = pair_with_dense(peer_recs, n) if peer_recs else {}
    model = os.path.relpath(sweep["model"], ROOT)

    cmds = [sweep_command(model, args.sweep_dir, sweep) + (f" --peer {peer}" if peer else "")]
    for d in args.setting_sweep:
        cmds.append(sweep_command(model, d, load_sweep(d)))
    if args.repeat:
        cmds.append(sweep_command(model, args.repeat, load_sweep(args.repeat)) + " --threads 1")
    report_cmd = f"python3 bench/dropback_report.py {rel(args.sweep_dir)}" + "".join(
        f" --setting-sweep {rel(d)}" for d in args.setting_sweep) + (
        f" --repeat {rel(args.repeat)}" if args.repeat else "") + (
        f" --findings {rel(args.findings)}" if args.findings else "") + (
        f" --out {rel(args.out)}")
    md = ["# Dropback on Fashion-MNIST: paired sweep", "",
          "Generated by `bench/dropback_report.py` from the run directories of "
          "`bench/dropback_sweep.py`; the figures, one record per run, are in "
          "[`dropback.json`](dropback.json). Reproduce with:", "", "```sh"] + cmds + [
          report_cmd,
          "cargo run --release -p sparsec-plot -- docs/results/dropback.json "
          "docs/results/dropback.png", "```", "",
          "![Test accuracy against compression: Dropback (plain SGD) per ratio, the freeze and "
          "decay variants, and the dense baseline](dropback.png)", ""]
    if args.findings:
        md += ["## Findings", "", read_text(args.findings).strip(), "", "## The runs", ""]
    first = recs[0]
    md += [f"- Model: `{model}`, N = {n:,} parameters; {first['epochs']} epochs, lr "
           f"{first['lr']}; {first['data']}.",
           f"- Seeds: {', '.join(str(s) for s in sorted(r['seed'] for r in by['dense']))}. "
           "Each Dropback run is paired with the dense run of the same seed (same initial "
           "weights, data order and schedule); Δ is Dropback − dense in points, averaged over "
           "seeds (± the standard deviation over seeds).",
           f"- Backend {first['backend']}, {threads_used(recs)} thread(s). Peak RSS is the mean of "
           "the runs' own `summary.json` figures (it includes the data set held in memory); "
           "samples/s is the fastest seed's, since sweeps may share the machine with other work "
           "(bench/RESULTS.md is where speed is measured against the peers)."]
    if peer_by:
        pf = peer_recs[0]
        md += [f"- Peer: `bench/peers/torch_dropback_train.py` ({pf['backend']}, "
               f"{threads_used(peer_recs)} thread(s)), an independent faithful Dropback with the same "
               "settings (data, epochs, batch, lr, k, freeze/decay) but its own random streams "
               "(NumPy's): its seed s is paired with its own dense run of seed s, not with "
               "sparsec's."]
    md.append("")
    head = ("| configuration | weights stored | compression | test accuracy % | "
            "Δ vs dense (points) | weight state bytes | peak RSS MiB | samples/s |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if peer_by:
        head += f" {peer} accuracy % | {peer} Δ (points) |"
        rule += "---:|---:|"
    md += [head, rule]
    for name, rs in by.items():
        row = (f"| {name} | {rs[0]['weights_stored']:,} | {rs[0]['compression']:.1f}× | "
               f"{pm([r['test_accuracy'] for r in rs])} | {delta_cell(rs)} | "
               f"{rs[0]['weight_state_bytes']:,} | "
               f"{statistics.fmean(r['peak_rss_bytes'] for r in rs) / 2**20:.0f} | "
               f"{max(r['samples_per_sec'] for r in rs):,.0f} |")
        if peer_by:
            prs = peer_by.get(name)
            row += (f" {pm([r['test_accuracy'] for r in prs])} | {delta_cell(prs)} |"
                    if prs else " — | — |")
        md.append(row)
    md.append("")
    md += last5_section(by, peer_by, peer)
    md += budget_section(by, peer_by, peer, layer_sizes(sweep["runs"]))
    md += fit_section(by)
    md += ["## Targets ([docs/methods.md §5]"
           "(../methods.md#5-reproducing-on-a-cpu-baselines-and-targets))", "",
           "Judged on the final test accuracy (the table above), averaged over seeds.", "",
           "sparsec:", ""] + verdicts(by) + [""]
    if peer_by:
        md += [f"The {peer} peer, judged the same way:", ""] + verdicts(peer_by) + [""]
        md += comparison(by, peer_by, peer)
    extra = {}
    if args.setting_sweep:
        md += ["## Other learning rates and schedules (a separate finding)", "",
               "The main sweep keeps the model file's settings for every configuration. These "
               "sweeps repeat some configurations with another lr or number of epochs; each "
               "Dropback run is paired with the dense run of its own setting and seed, and the "
               "last column sets it against the main sweep's dense run of the same seed "
               f"(lr {first['lr']}, {first['epochs']} epochs).", "",
               "| setting | configuration | train accuracy % (last epoch) | test accuracy % | "
               "Δ vs dense, same setting | Δ vs the main sweep's dense |",
               "|---|---|---:|---:|---:|---:|"]
        main_dense = {r["seed"]: r for r in by["dense"]}
        extra["setting_sweeps"] = []
        for d in args.setting_sweep:
            other = load_sweep(d)
            lrecs = records(other["runs"])
            label = ", ".join(
                [f"lr {other['lr']}"] * (other.get("lr") is not None)
                + [f"{other['epochs']} epochs"] * (other.get("epochs") is not None)) or rel(d)
            lby = pair_with_dense(lrecs, n)
            for name, rs in lby.items():
                for r in rs:
                    r["setting"] = label
                    base = main_dense.get(r["seed"])
                    r["delta_vs_main_dense"] = None if base is None else \
                        r["test_accuracy"] - base["test_accuracy"]
                vs_main = [r["delta_vs_main_dense"] for r in rs
                           if r["delta_vs_main_dense"] is not None]
                train = [r["train_accuracy_last_epoch"] for r in rs
                         if r["train_accuracy_last_epoch"] is not None]
                md.append(f"| {label} | {name} | {pm(train) if train else '—'} | "
                          f"{pm([r['test_accuracy'] for r in rs])}"
                          f" | {delta_cell(rs)} | {pm(vs_main) if vs_main else '—'} |")
            extra["setting_sweeps"] += lrecs
        md.append("")
    if args.repeat:
        md += repeat_section(by, records(load_sweep(args.repeat)["runs"]), extra)
    os.makedirs(args.out, exist_ok=True)
    data = {"params_total": n, "runs": recs, "peer": peer, "peer_runs": peer_recs}
    data.update(extra)
    for fname, text in (("dropback.json", json.dumps(data, indent=1) + "\n"),
                        ("dropback.md", "\n".join(md))):
        tmp = os.path.join(args.out, fname + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(args.out, fname))
    print(f"wrote {args.out}/dropback.md and dropback.json ({len(recs)} runs, "
          f"{len(peer_recs)} peer runs)")
    return 0


def threads_used(recs):
    """The thread counts of a set of runs, as text ("2", or "1 and 2")."""
    counts = sorted({r["threads"] for r in recs if r["threads"] is not None})
    return " and ".join(map(str, counts)) or "?"


def seeds_arg(sweep):
    return "" if sweep["seeds"] == [1, 2, 3] else f" --seeds {','.join(map(str, sweep['seeds']))}"


def plain_ratios(sweep):
    """The ratios N/k of a sweep's plain Dropback runs, ascending."""
    return sorted({r["ratio"] for r in sweep["runs"] if r["mode"] == "dropback"
                   and r.get("freeze_after") is None and r.get("decay_init") is None})


def sweep_command(model, path, sweep):
    """The dropback_sweep.py command that makes `sweep` (its settings, seeds and ratios)."""
    ratios = plain_ratios(sweep)
    variants = any(r.get("freeze_after") is not None or r.get("decay_init") is not None
                   for r in sweep["runs"])
    return (f"python3 bench/dropback_sweep.py {model} --out {rel(path)}"
            + (f" --lr {sweep['lr']}" if sweep.get("lr") is not None else "")
            + (f" --epochs {sweep['epochs']}" if sweep.get("epochs") is not None else "")
            + seeds_arg(sweep) + f" --ratios {','.join(map(str, ratios))}"
            + ("" if variants else " --no-variants"))


def rel(path):
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT) else path


def delta_cell(rs):
    if rs[0]["mode"] == "dense":
        return "—"
    ds = [r["delta_accuracy"] for r in rs if r["delta_accuracy"] is not None]
    return pm(ds) if ds else "—"


def epoch_jitter(rs, epochs=5):
    """The mean over runs of the std of test accuracy over their last `epochs` epochs, points."""
    out = []
    for r in rs:
        accs = epoch_values(os.path.join(ROOT, r["run_dir"]), "test_accuracy")[-epochs:]
        if len(accs) == epochs:
            out.append(statistics.stdev(a * 100 for a in accs))
    return statistics.fmean(out) if out else None


def last5_section(by, peer_by, peer):
    """Accuracy and Δ on the mean test accuracy of the last five epochs: the same comparison
    with less of the epoch-to-epoch noise of a constant learning rate."""
    jitter = epoch_jitter([r for rs in by.values() for r in rs])
    sides = [("sparsec", by)] + ([(peer, peer_by)] if peer_by else [])
    lines = ["## The same, on the last five epochs", "",
             "At a constant learning rate the test accuracy moves from epoch to epoch "
             + (f"(its std over a run's last five epochs is {jitter:.2f} points on average "
                "here), " if jitter is not None else "")
             + "so one final figure per run is a noisy draw. The mean test accuracy over the "
             "last five epochs of each run, paired the same way, tells whether a verdict "
             "rests on that noise.", "",
             "| configuration |" + "".join(f" {who} accuracy % | {who} Δ (points) |"
                                          for who, _ in sides),
             "|---|" + "---:|---:|" * len(sides)]
    for name, rs in by.items():
        row = f"| {name} |"
        for _, group in sides:
            runs = group.get(name, [])
            accs = [r["test_accuracy_last5"] for r in runs if r["test_accuracy_last5"] is not None]
            ds = [r["delta_accuracy_last5"] for r in runs
                  if r["delta_accuracy_last5"] is not None]
            row += f" {pm(accs) if accs else '—'} |"
            row += " — |" if rs[0]["mode"] == "dense" else f" {pm(ds) if ds else '—'} |"
        lines.append(row)
    return lines + [""]


def budget_section(by, peer_by, peer, sizes):
    """How the one global budget is spread over the layers: per Dropback configuration, each
    layer's share of the tracked weights and the fraction of the layer that is tracked (means
    over seeds), sparsec beside the peer."""
    if not sizes:
        return []
    layers = list(sizes)
    head = "| configuration | " + " | ".join(
        f"{l}: share of k / of layer ({sizes[l]:,})" for l in layers) + " |"
    lines = ["## Where the budget goes", "",
             "The top-k is global, so the layers compete for one budget. Per layer: its share "
             "of the tracked weights, then the fraction of the layer's parameters that is "
             "tracked at the end of training (means over seeds; sparsec from `sparsec report "
             f"RUN --json`{', the peer from its own count' if peer_by else ''}).", "",
             head, "|---|" + "---:|" * len(layers)]

    def cells(rs):
        per = [r["tracked_per_layer"] for r in rs if r.get("tracked_per_layer")]
        if not per:
            return None
        total = statistics.fmean(sum(p.values()) for p in per)
        out = []
        for l in layers:
            kept = statistics.fmean(p.get(l, 0) for p in per)
            out.append(f"{100 * kept / total:.1f} % / {100 * kept / sizes[l]:.1f} %")
        return out

    for name, rs in by.items():
        if rs[0]["mode"] != "dropback":
            continue
        for who, group in (("sparsec", rs), (peer, peer_by.get(name, []))):
            row = cells(group)
            if row:
                lines.append(f"| {name} ({who}) | " + " | ".join(row) + " |")
    return lines + [""]


def fit_section(by):
    """Training against test accuracy per configuration: whether Dropback's loss is in fitting
    the training set (capacity) or in generalising."""
    lines = ["## Where the accuracy goes", "",
             "Training accuracy over the last epoch (counted on each batch before its update) "
             "beside the final test accuracy, means over seeds. If the tracked budget limited "
             "only generalisation, training accuracy would hold while test accuracy fell.", "",
             "| configuration | train accuracy % (last epoch) | train loss | test accuracy % | "
             "train − test (points) |", "|---|---:|---:|---:|---:|"]
    for name, rs in by.items():
        tr = [r["train_accuracy_last_epoch"] for r in rs
              if r["train_accuracy_last_epoch"] is not None]
        if not tr:
            continue
        te = statistics.fmean(r["test_accuracy"] for r in rs)
        lines.append(f"| {name} | {statistics.fmean(tr) * 100:.2f} | "
                     f"{statistics.fmean(r['train_loss'] for r in rs):.4f} | {te * 100:.2f} | "
                     f"{(statistics.fmean(tr) - te) * 100:+.2f} |")
    return lines + [""]


def comparison(by, peer_by, peer):
    """sparsec's mean Δ against the peer's, per configuration, with the standard error of the
    difference (each side's std over seeds / sqrt(seeds))."""
    lines = [f"## sparsec against the {peer} peer", "",
             "Difference of the mean Δ (sparsec − peer) per configuration, ± the standard error "
             "of that difference (from both sides' spread over seeds). Within about two standard "
             "errors the two implementations agree.", "",
             "| configuration | sparsec Δ | peer Δ | difference | standard error | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, rs in by.items():
        prs = peer_by.get(name)
        if rs[0]["mode"] == "dense" or not prs:
            continue
        a = [r["delta_accuracy"] * 100 for r in rs if r["delta_accuracy"] is not None]
        b = [r["delta_accuracy"] * 100 for r in prs if r["delta_accuracy"] is not None]
        if len(a) < 2 or len(b) < 2:
            continue
        diff = statistics.fmean(a) - statistics.fmean(b)
        se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
        lines.append(f"| {name} | {statistics.fmean(a):+.2f} | {statistics.fmean(b):+.2f} | "
                     f"{diff:+.2f} | {se:.2f} | {abs(diff) / se if se else math.inf:.1f} |")
    return lines + [""]


# Two-sided 95 % quantiles of Student's t by degrees of freedom (beyond the table: the normal's).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
       10: 2.23}


def prediction_interval(xs):
    """(low, high): where one more independent draw lands with 95 % probability, from n draws
    (mean ± t · std · sqrt(1 + 1/n), assuming normal noise); None under two draws."""
    if len(xs) < 2:
        return None
    m, sd = mean_std(xs)
    half = T95.get(len(xs) - 1, 1.96) * sd * math.sqrt(1 + 1 / len(xs))
    return m - half, m + half


def repeat_section(by, reps, extra):
    """Repeated runs beside the main sweep: a seed the sweep has must give the same model bits
    (the same machine: bits depend on the CPU's instruction set, not on threads); a new seed is
    a fresh draw, set against the 95 % prediction interval of the sweep's seeds."""
    lines = ["## Independent repeats", "",
             "Runs repeated in a separate sweep directory (`--repeat`). A seed the main sweep "
             "already has must give the same `model.safetensors` bit for bit on the same machine "
             "(whatever the thread count: the repeat runs with 1 thread, the sweep with 2); a new "
             "seed is a fresh draw, set against the range where one more seed should land with "
             "95 % probability (mean ± t·std·√(1 + 1/n) over the sweep's n seeds).", "",
             "| configuration | seed | threads | test accuracy % | sweep: same seed, or 95 % "
             "range of a new seed | verdict |", "|---|---:|---:|---:|---:|---|"]
    extra["repeat"] = reps
    for r in reps:
        rs = by.get(r["name"])
        if not rs:
            continue
        same = [x for x in rs if x["seed"] == r["seed"]]
        acc = r["test_accuracy"] * 100
        if same:
            a, b = model_digest(os.path.join(ROOT, r["run_dir"])), \
                model_digest(os.path.join(ROOT, same[0]["run_dir"]))
            r["same_model_bits"] = a is not None and a == b
            ref = f"{same[0]['test_accuracy'] * 100:.2f}"
            verdict = "same model bits" if r["same_model_bits"] else "**model differs**"
        else:
            interval = prediction_interval([x["test_accuracy"] * 100 for x in rs])
            if interval is None:
                ref, verdict = "—", "one seed: no spread to judge by"
            else:
                lo, hi = interval
                r["prediction_interval"] = [lo, hi]
                r["within_prediction_interval"] = lo <= acc <= hi
                ref = f"{lo:.2f} – {hi:.2f}"
                verdict = "within" if lo <= acc <= hi else "**outside**"
        lines.append(f"| {r['name']} | {r['seed']} | {r['threads']} | {acc:.2f} | {ref} | "
                     f"{verdict} |")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())
