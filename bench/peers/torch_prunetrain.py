#!/usr/bin/env python3
"""PyTorch peer of `sparsec train` for PruneTrain (docs/methods.md §4), its own code.

The same plan as a model file of bench/prunetrain_sweep.py, on LeNet-5 with ReLU after its
convolutions (`lenet5_prunetrain`: the network of torch_activation_density.Net):

- settings from the model file: epochs, batch, SGD (lr, momentum, weight_decay, nesterov), a
  multistep schedule; `method prunetrain { ratio, interval, threshold }` (every layer but the
  classifier selected); without it, the dense baseline;
- the group lasso `GL = Σ_g sqrt(Σ_{w∈g} w² + 1e-8)` over conv1's output channels, conv2's input
  and output channels, fc1's input columns (one group per column) and output rows, and fc2's
  input columns; `λ = ratio · CE / ((1 − ratio) · GL)` from the first minibatch at the initial
  weights, then fixed; the loss is `CE + λ·GL` (autograd differentiates it);
- every `interval` epochs: a unit is dead when every group that carries it (its producer's
  row or channel, its consumer's columns, the flatten's block of 16 columns for conv2) has
  max |w| < threshold; dead units are removed from the weights, biases and SGD momentum buffers
  (a layer that would lose every unit stops the run).

Same data, streams, metrics and summary fields as torch_activation_density.py.

    python torch_prunetrain.py MODEL.net --data DIR --out RUN --seed 1 --threads 1
"""

import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_activation_density import Setup, evaluate, lr_at  # noqa: E402
from torch_activation_density import settings as base_settings  # noqa: E402

# (weight, axis) of every group family, as docs/methods.md §4 lists them for LeNet-5.
GROUPS = [("conv1.weight", 0), ("conv2.weight", 1), ("conv2.weight", 0), ("fc1.weight", 1),
          ("fc1.weight", 0), ("fc2.weight", 1)]


def settings(text):
    block = re.search(r"^method\s+prunetrain\s*\{(.*?)^\}", text, re.S | re.M)
    stripped = text if not block else text[:block.start()] + text[block.end():]
    s = base_settings(stripped)
    s["method"] = None
    if block:
        body = re.sub(r"#.*", "", block.group(1))

        def num(key, default):
            m = re.search(rf"\b{key}\s*:\s*([0-9.eE+-]+)", body)
            return float(m.group(1)) if m else default
        s["method"] = {"ratio": num("ratio", 0.2), "interval": int(num("interval", 2)),
                       "threshold": num("threshold", 1e-4)}
    return s


def group_lasso(net, torch):
    total = 0
    for name, axis in GROUPS:
        w = net.p[name]
        dims = [d for d in range(w.dim()) if d != axis]
        total = total + torch.sqrt((w * w).sum(dim=dims) + 1e-8).sum()
    return total


def main():
    setup = Setup(__doc__.splitlines()[0], settings)
    args, s, torch, net = setup.args, setup.s, setup.torch, setup.net
    import numpy as np

    xtr_t, ytr_t, xte_t, yte_t = setup.xtr, setup.ytr, setup.xte, setup.yte
    batch, steps_per_epoch, params_start = setup.batch, setup.steps_per_epoch, setup.params_start

    opt = net.optimizer(s, lr_at(s, 0))
    method = s["method"]
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    lam = 0.0
    if method:
        order = torch.from_numpy(np.random.default_rng([args.seed, 0]).permutation(setup.train_samples))
        idx = order[:batch]
        with torch.no_grad():
            ce = torch.nn.functional.cross_entropy(net.forward(xtr_t[idx]), ytr_t[idx]).item()
            gl = group_lasso(net, torch).item()
        r = method["ratio"]
        lam = r * ce / ((1 - r) * gl)
        metrics.write(json.dumps({"kind": "method", "epoch": 0, "probe": True, "lambda": lam,
                                  "ce": ce, "group_lasso": gl}) + "\n")
    t0 = time.perf_counter()
    train_flops = 0
    step = 0
    test_acc = test_loss = math.nan
    for epoch in range(s["epochs"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, epoch)
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(
            setup.train_samples))
        step_flops = net.flops()[0] * batch
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            loss = torch.nn.functional.cross_entropy(net.forward(xtr_t[idx]), ytr_t[idx])
            if method:
                loss = loss + lam * group_lasso(net, torch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            train_flops += step_flops
            if not math.isfinite(loss.item()):
                raise SystemExit(f"diverged at step {step}")
        test_acc, test_loss = evaluate(net, xte_t, yte_t, torch)
        metrics.write(json.dumps({"kind": "epoch", "epoch": epoch + 1, "step": step,
                                  "test_accuracy": test_acc, "test_loss": test_loss}) + "\n")
        if method and (epoch + 1) % method["interval"] == 0:
            t = method["threshold"]
            widths, kept = {}, {}
            for name, reader, block in net.prunable:
                w = net.p[f"{name}.weight"].detach()
                rd = net.p[f"{reader}.weight"].detach()
                out_max = w.abs().reshape(w.shape[0], -1).max(dim=1).values
                cols = rd.abs().transpose(0, 1).reshape(w.shape[0], -1).max(dim=1).values \
                    if rd.dim() == 4 else \
                    rd.abs().reshape(rd.shape[0], w.shape[0], block).amax(dim=(0, 2))
                live = np.nonzero(((out_max >= t) | (cols >= t)).numpy())[0]
                if live.size == 0:
                    raise SystemExit(f"every channel of {name} is dead after epoch {epoch + 1}")
                widths[name] = int(live.size)
                if live.size < w.shape[0]:
                    kept[name] = live
            opt = net.keep_units(opt, kept, s, lr_at(s, epoch))
            metrics.write(json.dumps({"kind": "method", "epoch": epoch + 1,
                                      "widths": widths}) + "\n")
        metrics.flush()
    metrics.close()
    setup.finish("prunetrain" if method else "dense", step, (test_acc, test_loss), train_flops,
                 time.perf_counter() - t0, **{"lambda": lam})


if __name__ == "__main__":
    main()
