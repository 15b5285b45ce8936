#!/usr/bin/env python3
"""PyTorch peer of `sparsec train`: one full training run on real IDX data, dense or Dropback.

An independent implementation of what `sparsec train` does with a LeNet model file, so that
sparsec's accuracy can be set beside another's under the same settings (issue 6, deliverable 4):

- data: the IDX files of DIR (raw or gzip, as sparsec reads them), pixels x / 255, the whole
  training set shuffled every epoch (NumPy's generator seeded with (seed, epoch)), batches of
  `--batch`, a last partial batch dropped (as sparsec); test accuracy and mean loss on the whole
  test set after every epoch;
- model: common.MODELS' LeNet-300-100 or Caffe LeNet-5, weights U(±1/sqrt(fan_in)) from NumPy's
  generator seeded with `seed`, biases 0; mean softmax cross-entropy; plain SGD at `--lr`,
  constant;
- Dropback (docs/methods.md §1, the authors' order): forward/backward with the effective weights,
  SGD on all weights, score |W − W0| (biases |b|), one global exact top-k (torch.topk) over all
  parameters, everything else back to W0. `--freeze-after E`: from epoch E + 1 (1-based) on, the
  selection is the tracked set at that point (tracked weights keep learning, no new ones).
  `--decay-init d`: step t (0-based) reads W0 as d^t · W0 (d^t in double, rounded to float once,
  as sparsec), so untracked weights shrink by d a step.

The random streams (initial weights, data order) are NumPy's, not sparsec's ChaCha8/SplitMix64:
seed s here is an independent sample, paired only with this peer's own dense run of seed s.

Writes RUN/metrics.jsonl (one line per epoch) and RUN/summary.json (atomically, last) with the
fields bench/dropback_report.py reads from sparsec's summaries. A diverging run (non-finite loss)
writes summary status "diverged" and exits 1. At the end of every Dropback epoch it asserts that
at most k parameters differ from their (decayed) initial value.

    python torch_dropback_train.py --data /usr/share/datasets/fashion-mnist --k 10664 --out RUN
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEER = "torch"


def read_idx(path):
    """An IDX file (raw or gzip, told by its magic bytes) as a NumPy array of its shape."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise SystemExit(f"{path}: {len(body)} data bytes, expected {math.prod(dims)}")
    return np.frombuffer(body, np.uint8).reshape(dims)


def load_split(data_dir, prefix):
    import numpy as np

    def find(name):
        for cand in (name, name + ".gz"):
            path = os.path.join(data_dir, cand)
            if os.path.isfile(path):
                return path
        raise SystemExit(f"{data_dir}: no {name}[.gz]")

    x = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if x.shape[0] != y.shape[0]:
        raise SystemExit(f"{data_dir}: {prefix} has {x.shape[0]} images but {y.shape[0]} labels")
    return (x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, x.shape[1], x.shape[2]), \
        y.astype(np.int64)


class DropbackTrainer:
    """Dense SGD when k is None; Dropback otherwise. Parameters are views of one flat buffer."""

    def __init__(self, model, k, seed, lr, decay_init, torch):
        import torch.nn.functional as F

        from torch_lenet import build  # the timing peer's forward, the same network

        self.torch, self.F, self.lr, self.k = torch, F, lr, k
        self.decay_init = decay_init
        self.forward = build(model, torch, F)
        init = common.initial_params(model, seed)
        self.n = sum(a.size for a in init)
        self.flat = torch.empty(self.n)
        self.params = []
        off = 0
        for a in init:
            view = self.flat[off:off + a.size].view(a.shape)
            view.copy_(torch.from_numpy(a))
            self.params.append(view.detach().requires_grad_())
            off += a.size
        self.flat0 = self.flat.clone()  # W0 (biases 0)
        self.w0 = self.flat0  # this step's W0 (decayed with decay_init)
        self.tracked = None  # indices selected by the last step; None before the first
        self.frozen = False

    def w0_at(self, step):
        if self.decay_init is None:
            return self.flat0
        scale = self.torch.tensor(float(self.decay_init) ** step, dtype=self.torch.float32)
        return self.flat0 * scale

    def step(self, step, x, y):
        torch = self.torch
        if self.k is not None and self.decay_init is not None:
            # Untracked weights read this step's W0 (d^t · W0) in the forward pass.
            self.w0 = self.w0_at(step)
            if self.tracked is not None:
                with torch.no_grad():
                    kept = self.flat[self.tracked]
                    self.flat.copy_(self.w0)
                    self.flat[self.tracked] = kept
        for p in self.params:
            p.grad = None
        logits = self.forward(self.params, x)
        loss = self.F.cross_entropy(logits, y)
        loss.backward()
        with torch.no_grad():
            torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-self.lr)
            if self.k is not None:
                if not self.frozen:
                    scores = (self.flat - self.w0).abs_()
                    self.tracked = torch.topk(scores, self.k, sorted=False).indices
                kept = self.flat[self.tracked]
                self.flat.copy_(self.w0)
                self.flat[self.tracked] = kept
        correct = int((logits.detach().argmax(1) == y).sum())
        return float(loss.detach()), correct

    def changed(self):
        return int((self.flat != self.w0).sum())

    def changed_per_layer(self, model):
        """{layer: parameters differing from W0}, weights and biases of a layer together (the
        `tracked` column of `sparsec report`)."""
        out, off = {}, 0
        for name, shape, _ in common.MODELS[model]:
            size = math.prod(shape)
            layer = name.split(".")[0]
            diff = int((self.flat[off:off + size] != self.w0[off:off + size]).sum())
            out[layer] = out.get(layer, 0) + diff
            off += size
        return out

    def evaluate(self, x, y, batch=1000):
        torch = self.torch
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for j in range(0, x.shape[0], batch):
                xb, yb = x[j:j + batch], y[j:j + batch]
                logits = self.forward(self.params, xb)
                loss_sum += float(self.F.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(1) == yb).sum())
        return correct / x.shape[0], loss_sum / x.shape[0]


def write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(common.MODELS), default="lenet300")
    p.add_argument("--data", required=True, help="directory of the four IDX files")
    p.add_argument("--out", required=True, help="run directory (created; must not hold a run)")
    p.add_argument("--k", type=int, help="tracked weights (Dropback); omit for dense SGD")
    p.add_argument("--freeze-after", type=int, help="epochs after which the tracked set is kept")
    p.add_argument("--decay-init", type=float, help="W0 scaled by this factor every step")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.k is None and (args.freeze_after is not None or args.decay_init is not None):
        p.error("--freeze-after and --decay-init need --k")
    if args.k is not None and not 1 <= args.k <= common.param_count(args.model):
        p.error(f"--k must be in 1..={common.param_count(args.model)}")
    common.limit_threads(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    xtr, ytr = load_split(args.data, "train")
    xte, yte = load_split(args.data, "t10k")
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte_t, yte_t = torch.from_numpy(xte), torch.from_numpy(yte)
    steps_per_epoch = xtr.shape[0] // args.batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{xtr.shape[0]} training samples: fewer than one batch")
    os.makedirs(args.out, exist_ok=True)
    summary_path = os.path.join(args.out, "summary.json")
    if os.path.exists(summary_path):
        raise SystemExit(f"{args.out} already holds a run (summary.json)")
    trainer = DropbackTrainer(args.model, args.k, args.seed, args.lr, args.decay_init, torch)
    summary = {
        "peer": PEER, "version": torch.__version__, "model": args.model,
        "method": "dense" if args.k is None else "dropback", "k": args.k,
        "freeze_after": args.freeze_after, "decay_init": args.decay_init, "seed": args.seed,
        "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "threads": args.threads,
        "params_total": trainer.n,
        "data": f"data: IDX from {args.data} ({xtr.shape[0]} train, {xte.shape[0]} test)",
    }
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    t0 = time.perf_counter()
    train_seconds = 0.0
    step = 0
    status = "completed"
    test_acc = test_loss = train_loss = math.nan
    epochs_done = 0
    for epoch in range(args.epochs):
        if args.k is not None and args.freeze_after is not None and epoch >= args.freeze_after:
            trainer.frozen = True
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(
            xtr.shape[0]))
        loss_sum, correct = 0.0, 0
        e0 = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            loss, c = trainer.step(step, xtr_t[idx], ytr_t[idx])
            step += 1
            if not math.isfinite(loss):
                status = "diverged"
                break
            loss_sum += loss
            correct += c
        train_seconds += time.perf_counter() - e0
        if status != "completed":
            print(f"diverged: loss {loss} at step {step} (epoch {epoch + 1})", file=sys.stderr)
            break
        if args.k is not None:
            changed = trainer.changed()
            assert changed <= args.k, f"{changed} parameters differ from W0, k = {args.k}"
        train_loss = loss_sum / steps_per_epoch
        test_acc, test_loss = trainer.evaluate(xte_t, yte_t)
        epochs_done = epoch + 1
        line = {"epoch": epochs_done, "step": step, "train_loss": train_loss,
                "train_accuracy": correct / (steps_per_epoch * args.batch),
                "test_accuracy": test_acc, "test_loss": test_loss}
        if args.k is not None:
            line["changed_from_w0"] = changed
        metrics.write(json.dumps(line) + "\n")
        metrics.flush()
    metrics.close()
    stored = trainer.n if args.k is None else trainer.changed()
    summary.update({
        "status": status, "epochs_completed": epochs_done, "steps": step,
        "test_accuracy": test_acc, "test_loss": test_loss, "train_loss": train_loss,
        "weights_stored": stored,
        "tracked_per_layer": None if args.k is None else trainer.changed_per_layer(args.model),
        # sparsec's accounting: a dense value is 4 bytes, a tracked one 4 + a 4-byte index.
        "weight_state_bytes": 4 * stored if args.k is None else 8 * stored,
        "samples_per_sec": step * args.batch / train_seconds if train_seconds else 0.0,
        "wall_seconds": time.perf_counter() - t0, "peak_rss_bytes": common.peak_rss_bytes(),
    })
    write_json_atomic(summary_path, summary)
    print(json.dumps({k: summary[k] for k in ("method", "k", "seed", "status",
                                              "test_accuracy", "wall_seconds")}))
    return 0 if status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
