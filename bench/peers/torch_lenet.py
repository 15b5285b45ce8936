#!/usr/bin/env python3
"""PyTorch peer of sparsec: LeNet-300-100 / LeNet-5 SGD train steps, dense and Dropback.

Threads: the child process is pinned to T CPUs (os.sched_setaffinity, as `taskset`) and
OMP_NUM_THREADS/MKL_NUM_THREADS=T before torch is imported, then torch.set_num_threads(T) and
torch.set_num_interop_threads(1). Eager mode (no torch.compile): compile_ms is 0.

Dropback (docs/methods.md §1, faithful): all parameters live in one flat buffer (each parameter is
a leaf tensor viewing its slice), W0 in another (zeros for biases). After each SGD step:
scores = |flat - flat0|, idx = torch.topk(scores, k).indices (the exact top-k values; ties at the
k-th value may be broken differently from sparsec's lowest-index rule), then flat <- flat0 with
flat[idx] put back. So at most k entries differ from W0 after every step (--check asserts it).

    python torch_lenet.py                       # every configuration, one JSON line each
    python torch_lenet.py --model lenet300 --mode dropback --batch 64 --threads 1
    python torch_lenet.py --check               # faithfulness check, no timing
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEER = "torch"


def build(model, torch, F):
    def forward(ps, x):
        if model == "lenet300":
            w1, b1, w2, b2, w3, b3 = ps
            h = x.reshape(x.shape[0], -1)
            h = F.relu(F.linear(h, w1, b1))
            h = F.relu(F.linear(h, w2, b2))
            return F.linear(h, w3, b3)
        c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b = ps
        h = F.max_pool2d(F.conv2d(x, c1w, c1b), 2)
        h = F.max_pool2d(F.conv2d(h, c2w, c2b), 2)
        h = h.reshape(h.shape[0], -1)
        h = F.relu(F.linear(h, f1w, f1b))
        return F.linear(h, f2w, f2b)

    return forward


class Trainer:
    def __init__(self, model, mode, torch):
        import torch.nn.functional as F

        self.torch = torch
        self.mode = mode
        self.forward = build(model, torch, F)
        self.F = F
        init = common.initial_params(model)
        n = sum(a.size for a in init)
        self.n = n
        self.k = common.dropback_k(model)
        self.flat = torch.empty(n)
        self.params = []
        off = 0
        for a in init:
            view = self.flat[off:off + a.size].view(a.shape)
            view.copy_(torch.from_numpy(a))
            self.params.append(view.detach().requires_grad_())  # a leaf sharing flat's storage
            off += a.size
        if mode == "dropback":  # dense SGD keeps no W0
            self.flat0 = self.flat.clone()  # W0 (biases: 0)
            self.scores = torch.empty(n)

    def step(self, x, y):
        torch = self.torch
        for p in self.params:
            p.grad = None
        loss = self.F.cross_entropy(self.forward(self.params, x), y)
        loss.backward()
        with torch.no_grad():
            torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-common.LR)
            if self.mode == "dropback":
                self.dropback()
        return loss

    def dropback(self):
        torch = self.torch
        torch.sub(self.flat, self.flat0, out=self.scores)
        self.scores.abs_()
        idx = torch.topk(self.scores, self.k, sorted=False).indices
        kept = self.flat[idx]
        self.flat.copy_(self.flat0)
        self.flat[idx] = kept

    def changed(self):
        return int((self.flat != self.flat0).sum())


def run_single(args):
    model, mode, batch, threads = args.model[0], args.mode[0], args.batch[0], args.threads[0]
    common.limit_threads(threads)
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    trainer = Trainer(model, mode, torch)
    if args.check:
        xs, ys = common.synthetic_data()
        batches = [(torch.from_numpy(xs[j:j + batch]), torch.from_numpy(ys[j:j + batch]))
                   for j in range(0, common.DATA_SAMPLES - batch + 1, batch)]
    else:
        batches = [(torch.from_numpy(x), torch.from_numpy(y))
                   for x, y in common.synthetic_batches(batch)]
    nb = len(batches)

    def batch_of(i):
        return batches[i % nb]

    if args.check:
        # Faithfulness: at most k entries differ from W0 after every Dropback step, and the set
        # kept equals an independent NumPy exact top-k (stable, lowest index first on ties)
        # wherever the k-th score is not tied.
        for i in range(args.check_steps):
            x, y = batch_of(i)
            for p in trainer.params:
                p.grad = None
            loss = trainer.F.cross_entropy(trainer.forward(trainer.params, x), y)
            loss.backward()
            with torch.no_grad():
                torch._foreach_add_(trainer.params, [p.grad for p in trainer.params],
                                    alpha=-common.LR)
                stepped = trainer.flat.clone()
                if mode == "dropback":
                    trainer.dropback()
            changed = trainer.changed()
            if mode == "dropback":
                assert changed <= trainer.k, (changed, trainer.k)
                s = np.abs(stepped.numpy() - trainer.flat0.numpy())
                order = np.argsort(-s, kind="stable")
                ref = np.zeros(trainer.n, bool)
                ref[order[:trainer.k]] = True
                kth = s[order[trainer.k - 1]]
                untied = s != kth
                want = np.where(ref, stepped.numpy(), trainer.flat0.numpy())
                got = trainer.flat.numpy()
                assert np.array_equal(got[untied], want[untied]), "top-k set differs"
            common.emit(args, {"peer": PEER, "model": model, "mode": mode, "check_step": i + 1,
                               "loss": float(loss.detach()), "changed_from_w0": changed, "k": trainer.k,
                               "ok": True})
        return 0

    def step(i):
        x, y = batch_of(i)
        trainer.step(x, y)

    steps, seconds, cpu, others, windows = common.measure(step, lambda: None, args)
    common.emit(args, {
        "peer": PEER, "model": model, "mode": mode, "batch": batch, "threads": threads,
        "samples_per_sec": steps * batch / seconds, "step_ms": seconds / steps * 1e3,
        "peak_rss_bytes": common.peak_rss_bytes(), "compile_ms": 0.0,
        "steps": steps, "windows_samples_per_sec": [round(w * batch, 1) for w in windows],
        "cpu_util": cpu / seconds, "other_cpus": round(others, 3),
        "select": "torch.topk" if mode == "dropback" else None,
        "k": trainer.k if mode == "dropback" else None, "params": trainer.n,
        "version": torch.__version__,
    })
    return 0


def main():
    def extra(p):
        p.add_argument("--check-steps", type=int, default=5)

    args = common.parser(PEER, ["dense", "dropback"], extra).parse_args()
    if args.check and args.mode == ["dense", "dropback"]:
        args.mode = ["dropback"]
    if args.check:
        args.threads = args.threads[:1]
        args.batch = args.batch[2:3] or args.batch[:1]
    if args.single:
        return run_single(args)
    return common.fan_out(args, ["check-steps"])


if __name__ == "__main__":
    sys.exit(main())
