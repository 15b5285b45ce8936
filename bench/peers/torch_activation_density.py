#!/usr/bin/env python3
"""PyTorch peer of `sparsec train` for activation-density shrinking (docs/methods.md §2).

An independent implementation of the same plan as a model file of
bench/activation_density_sweep.py, written from the method's description, with no sparsec part:

- it reads from the model file only its settings: the model (`lenet300_ad`: 784-300-100-10 with
  ReLU; `lenet5_ad`: conv 5x5x20, ReLU, maxpool 2, conv 5x5x50, ReLU, maxpool 2, dense 800-500,
  ReLU, dense 10), epochs, batch, SGD (lr, momentum, weight_decay, nesterov), a multistep
  schedule, and the `activation_density` block (`resize_at`, `min_width`; every hidden layer is
  selected, as the file's default `on`); without a method block it trains the dense baseline;
- data: the IDX files (torch_dropback_train.load_split: pixels / 255), the training set shuffled
  every epoch by NumPy's generator seeded with (seed, epoch), last partial batch dropped; weights
  U(±1/sqrt(fan_in)) from NumPy's generator seeded with `seed`, biases 0 (PyTorch's own streams,
  so seed s pairs only with this peer's dense run of seed s);
- statistics: inside the training step, per unit (dense) or channel (conv), the number of
  positive pre-activations (= non-zero post-ReLU outputs) over the epoch's batches;
- resize after each epoch of `resize_at` (1-based): width `max(min_width, ceil(AD · width))`,
  keeping the units that fired most often (a stable sort: ties to the lower index); the layer's
  weight rows and bias, the next layer's input columns (in blocks of H·W across the flatten) and
  the SGD momentum buffers of all of them are sliced; training continues with a fresh optimizer
  object holding the sliced buffers.

Writes RUN/metrics.jsonl (an `epoch` line per epoch, a `method` line with densities and widths,
as sparsec's) and RUN/summary.json (last, atomically): test accuracy, params_total,
train_flops_total and inference_flops (products and convolutions only, 2 per multiply-add;
a training step is forward + input gradient + weight gradient, the first layer's input gradient
skipped), wall_seconds.

    python torch_activation_density.py MODEL.net --data DIR --out RUN --seed 1 --threads 1
"""

import argparse
import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from torch_dropback_train import load_split, write_json_atomic  # noqa: E402


def settings(text):
    def num(pattern, default=None, kind=float):
        m = re.search(pattern, text)
        return kind(m.group(1)) if m else default

    model = re.search(r"^model\s+(\w+)", text, re.M).group(1)
    s = {
        "model": model,
        "epochs": num(r"epochs\s*:\s*(\d+)", kind=int),
        "batch": num(r"batch\s*:\s*(\d+)", kind=int),
        "lr": num(r"lr\s*:\s*([0-9.eE+-]+)"),
        "momentum": num(r"momentum\s*:\s*([0-9.eE+-]+)", 0.0),
        "weight_decay": num(r"weight_decay\s*:\s*([0-9.eE+-]+)", 0.0),
        "nesterov": re.search(r"nesterov\s*:\s*true", text) is not None,
        "milestones": [], "gamma": 1.0,
    }
    m = re.search(r"multistep\s*\(\s*milestones\s*:\s*\[([^\]]*)\]\s*,\s*gamma\s*:\s*([0-9.eE+-]+)",
                  text)
    if m:
        s["milestones"] = [int(x) for x in m.group(1).split(",") if x.strip()]
        s["gamma"] = float(m.group(2))
    elif re.search(r"schedule\s*:", text) and not re.search(r"schedule\s*:\s*constant", text):
        raise SystemExit("the peer runs a constant or multistep schedule only")
    block = re.search(r"^method\s+activation_density\s*\{(.*?)^\}", text, re.S | re.M)
    s["method"] = None
    if block:
        body = re.sub(r"#.*", "", block.group(1))
        if re.search(r"\bon\s*:", body):
            raise SystemExit("the peer selects every hidden layer (no `on:`)")
        s["method"] = {
            "resize_at": [int(x) for x in re.search(r"resize_at\s*:\s*\[([^\]]*)\]", body)
                          .group(1).split(",") if x.strip()],
            "min_width": int((re.search(r"min_width\s*:\s*(\d+)", body) or [0, 1])[1]),
        }
    elif re.search(r"^method\s", text, re.M):
        raise SystemExit("the model file's method is not activation_density")
    return s


class Net:
    """The parameters as plain tensors, so that layers can be resized; `layers` lists, per
    prunable layer, its name and the layer that reads its units (with the block size of a unit
    in that reader's input)."""

    def __init__(self, model, seed, torch):
        import numpy as np

        self.torch = torch
        self.model = model
        rng = np.random.default_rng(seed)

        def uniform(shape, fan_in):
            b = 1.0 / math.sqrt(fan_in)
            return torch.from_numpy(rng.uniform(-b, b, size=shape).astype(np.float32))

        if model == "lenet300_ad":
            shapes = [("fc1", (300, 784)), ("fc2", (100, 300)), ("fc3", (10, 100))]
            self.prunable = [("fc1", "fc2", 1), ("fc2", "fc3", 1)]
        elif model in ("lenet5_ad", "lenet5_prunetrain", "lenet5_admm"):
            shapes = [("conv1", (20, 1, 5, 5)), ("conv2", (50, 20, 5, 5)),
                      ("fc1", (500, 800)), ("fc2", (10, 500))]
            self.prunable = [("conv1", "conv2", 1), ("conv2", "fc1", 16), ("fc1", "fc2", 1)]
        else:
            raise SystemExit(f"the peer has no model `{model}` (lenet300_ad, lenet5_ad)")
        self.p = {}
        for name, shape in shapes:
            fan_in = math.prod(shape[1:])
            self.p[f"{name}.weight"] = uniform(shape, fan_in).requires_grad_()
            self.p[f"{name}.bias"] = torch.zeros(shape[0]).requires_grad_()

    def forward(self, x, pre=None):
        """Logits; `pre` collects each prunable layer's pre-activation."""
        F = self.torch.nn.functional
        p = self.p

        def keep(name, v):
            if pre is not None:
                pre[name] = v.detach()
            return v

        if self.model.startswith("lenet300"):
            h = x.reshape(x.shape[0], -1)
            h = F.relu(keep("fc1", F.linear(h, p["fc1.weight"], p["fc1.bias"])))
            h = F.relu(keep("fc2", F.linear(h, p["fc2.weight"], p["fc2.bias"])))
            return F.linear(h, p["fc3.weight"], p["fc3.bias"])
        h = F.relu(keep("conv1", F.conv2d(x, p["conv1.weight"], p["conv1.bias"])))
        h = F.max_pool2d(h, 2)
        h = F.relu(keep("conv2", F.conv2d(h, p["conv2.weight"], p["conv2.bias"])))
        h = F.max_pool2d(h, 2).reshape(x.shape[0], -1)
        h = F.relu(keep("fc1", F.linear(h, p["fc1.weight"], p["fc1.bias"])))
        return F.linear(h, p["fc2.weight"], p["fc2.bias"])

    def params(self):
        return list(self.p.values())

    def count(self):
        return sum(t.numel() for t in self.p.values())

    def flops(self):
        """(training step per sample, inference per sample): 2 per multiply-add of the products
        and convolutions."""
        fwd, train = 0, 0
        side = 28
        first = True
        for name, w in self.p.items():
            if not name.endswith(".weight"):
                continue
            if w.dim() == 4:
                side = side - w.shape[2] + 1
                macs = w.numel() * side * side
                side //= 2
            else:
                macs = w.numel()
            fwd += 2 * macs
            train += 2 * macs * (2 if first else 3)
            first = False
        return train, fwd

    def optimizer(self, s, lr, buffers=None):
        """SGD as the model file says; `buffers` (in parameter order) are its momentum."""
        opt = self.torch.optim.SGD(self.params(), lr=lr, momentum=s["momentum"],
                                   weight_decay=s["weight_decay"], nesterov=s["nesterov"])
        for p, buf in zip(self.params(), buffers or []):
            if buf is not None:
                opt.state[p]["momentum_buffer"] = buf
        return opt

    def keep_units(self, opt, kept, s, lr):
        """Keep only the units `kept[layer]` (increasing NumPy indices) of each prunable layer
        named: its rows and bias, its reader's input columns (blocks after the flatten) and the
        momentum of all of them. Returns the optimizer of the smaller network."""
        import numpy as np

        torch = self.torch
        buffers = {id(p): opt.state[p].get("momentum_buffer") for p in self.params()}
        for name, reader, block in self.prunable:
            if name not in kept:
                continue
            rows = torch.from_numpy(kept[name])
            cols = torch.from_numpy((kept[name][:, None] * block
                                     + np.arange(block)[None, :]).reshape(-1))
            for pname, axis, ix in ((f"{name}.weight", 0, rows), (f"{name}.bias", 0, rows),
                                    (f"{reader}.weight", 1, cols)):
                old = self.p[pname]
                new = old.detach().index_select(axis, ix).clone().requires_grad_()
                buf = buffers.pop(id(old), None)
                self.p[pname] = new
                buffers[id(new)] = None if buf is None else buf.index_select(axis, ix)
        return self.optimizer(s, lr, [buffers.get(id(p)) for p in self.params()])


def lr_at(s, epoch):
    """The multistep schedule's learning rate of `epoch` (0-based)."""
    return s["lr"] * s["gamma"] ** sum(1 for m in s["milestones"] if epoch >= m)


def evaluate(net, x, y, torch):
    """(test accuracy, mean cross-entropy) over the whole test set."""
    with torch.no_grad():
        correct, total_loss = 0, 0.0
        for i in range(0, x.shape[0], 1000):
            out = net.forward(x[i:i + 1000])
            total_loss += torch.nn.functional.cross_entropy(
                out, y[i:i + 1000], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + 1000]).sum().item()
    return correct / x.shape[0], total_loss / x.shape[0]


class Setup:
    """What both peers start from: the command line (MODEL.net --data --out --seed --threads),
    the model file's settings read by `settings`, the thread limit, the data as tensors and the
    network at its initial weights."""

    def __init__(self, description, settings):
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("model_file")
        ap.add_argument("--data", required=True)
        ap.add_argument("--out", required=True)
        ap.add_argument("--seed", type=int, default=1)
        ap.add_argument("--threads", type=int, default=1)
        self.args = args = ap.parse_args()
        self.s = settings(open(args.model_file).read())
        common.limit_threads(args.threads)
        import torch

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        self.torch = torch
        xtr, ytr = load_split(args.data, "train")
        xte, yte = load_split(args.data, "t10k")
        self.train_samples = xtr.shape[0]
        self.xtr, self.ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
        self.xte, self.yte = torch.from_numpy(xte), torch.from_numpy(yte)
        self.batch = self.s["batch"]
        self.steps_per_epoch = xtr.shape[0] // self.batch
        os.makedirs(args.out, exist_ok=True)
        self.net = Net(self.s["model"], args.seed, torch)
        self.params_start = self.net.count()

    def finish(self, method, steps, test, train_flops, seconds, **extra):
        """Write RUN/summary.json (atomically, last) and print its headline."""
        s, net = self.s, self.net
        summary = {
            "peer": "torch", "version": self.torch.__version__, "model": s["model"],
            "method": method, "seed": self.args.seed, **extra,
            "status": "completed", "epochs": s["epochs"], "epochs_completed": s["epochs"],
            "steps": steps, "batch": self.batch, "threads": self.args.threads,
            "test_accuracy": test[0], "test_loss": test[1],
            "params_start": self.params_start, "params_total": net.count(),
            "train_flops_total": train_flops, "inference_flops": net.flops()[1],
            "wall_seconds": seconds,
            "shapes": {k: list(v.shape) for k, v in net.p.items()},
        }
        write_json_atomic(os.path.join(self.args.out, "summary.json"), summary)
        print(json.dumps({k: summary[k] for k in ("model", "method", "seed", "test_accuracy",
                                                  "params_total", "wall_seconds")}))


def main():
    setup = Setup(__doc__.splitlines()[0], settings)
    args, s, torch, net = setup.args, setup.s, setup.torch, setup.net
    import numpy as np

    xtr_t, ytr_t, xte_t, yte_t = setup.xtr, setup.ytr, setup.xte, setup.yte
    batch, steps_per_epoch, params_start = setup.batch, setup.steps_per_epoch, setup.params_start

    opt = net.optimizer(s, lr_at(s, 0))
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    method = s["method"]
    t0 = time.perf_counter()
    train_flops = 0
    step = 0
    test_acc = test_loss = math.nan
    for epoch in range(s["epochs"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, epoch)
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(
            setup.train_samples))
        counts = {name: 0 for name, _, _ in net.prunable}
        outputs = {}
        step_flops = net.flops()[0] * batch
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            pre = {} if method else None
            logits = net.forward(xtr_t[idx], pre)
            loss = torch.nn.functional.cross_entropy(logits, ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            train_flops += step_flops
            loss_sum += loss.item()
            if not math.isfinite(loss.item()):
                raise SystemExit(f"diverged at step {step}")
            for name, v in (pre or {}).items():
                axes = (0, 2, 3) if v.dim() == 4 else (0,)
                counts[name] = counts[name] + (v > 0).sum(dim=axes).to(torch.int64)
                outputs[name] = outputs.get(name, 0) + v.numel() // v.shape[1]
        test_acc, test_loss = evaluate(net, xte_t, yte_t, torch)
        metrics.write(json.dumps({"kind": "epoch", "epoch": epoch + 1, "step": step,
                                  "train_loss": loss_sum / steps_per_epoch,
                                  "test_accuracy": test_acc, "test_loss": test_loss}) + "\n")
        if method:
            density = {n: counts[n].sum().item() / (outputs[n] * counts[n].numel())
                       for n in counts}
            line = {"kind": "method", "epoch": epoch + 1, "density": density}
            if epoch + 1 in method["resize_at"]:
                widths, kept = {}, {}
                for name, _, _ in net.prunable:
                    c = counts[name].numpy()
                    width = c.shape[0]
                    want = -(-int(c.sum()) // outputs[name])  # ceil(AD · width)
                    keep_n = min(width, max(method["min_width"], want))
                    kept[name] = np.sort(np.argsort(-c, kind="stable")[:keep_n])
                    widths[name] = int(keep_n)
                opt = net.keep_units(opt, kept, s, lr_at(s, epoch))
                line.update({"resize": True, "widths": widths})
            metrics.write(json.dumps(line) + "\n")
        metrics.flush()
    metrics.close()
    setup.finish("activation_density" if method else "dense", step, (test_acc, test_loss),
                 train_flops, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
