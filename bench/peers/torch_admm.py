#!/usr/bin/env python3
"""PyTorch peer of `sparsec train` for progressive ADMM pruning (docs/methods.md §3), its own code.

The same plan as a model file of bench/admm_sweep.py, on LeNet-5 as examples/lenet5_admm.net
writes it (conv 5x5x20, maxpool 2, conv 5x5x50, maxpool 2, dense 800-500, ReLU, dense 10; no
ReLU after the convolutions), written from the method's description:

- settings from the model file: epochs, batch, SGD (lr, momentum, weight_decay, nesterov), a
  step or multistep schedule; `method admm { keep: {layer: ratio}, rho, rho_growth, rounds,
  epochs_per_round, retrain_epochs, stages }` (the keep map's layers are the selection);
  without it, the dense baseline;
- the schedule of epochs: S stages (S = len(stages), or 1), each `rounds · epochs_per_round`
  epochs under the penalty and `retrain_epochs` of masked retraining, laid out at the end of the
  run; the epochs before them train densely. Stage s keeps `l = round(r · n)` (at least 1) of a
  layer's n weights, `r = min(1, keep · C_last / C_s)`;
- a stage starts with `Z = Π(W)`, `U = 0`, ρ = rho; the loss in its rounds is
  `CE + ρ/2 Σ ‖W − Z + U‖²` (Z and U plain tensors, outside autograd); after each round,
  `Z = Π(W + U)`, `U += W − Z` (under no_grad) and ρ *= rho_growth; after the last round, the hard
  prune: mask = top-l of |W| within the current mask, W and the momentum buffer multiplied by it;
  while a mask is fixed, every step multiplies the gradient by it before the SGD step and the
  weight after it. Π keeps the l largest |·| within the mask (a stable argsort: ties to the lower
  index).

Same data order, initial weights (NumPy streams), metrics and summary fields as
torch_activation_density.py, plus per stage its test accuracy and per-layer nnz.

    python torch_admm.py MODEL.net --data DIR --out RUN --seed 1 --threads 1
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


def settings(text):
    block = re.search(r"^method\s+admm\s*\{(.*?)^\}", text, re.S | re.M)
    stripped = text if not block else text[:block.start()] + text[block.end():]
    # A step schedule is a multistep one with a milestone every `every` epochs.
    step = re.search(r"schedule\s*:\s*step\s*\(\s*every\s*:\s*(\d+)\s*,\s*gamma\s*:\s*([0-9.eE+-]+)"
                     r"\s*\)", stripped)
    if step:
        stripped = stripped[:step.start()] + stripped[step.end():]
    s = base_settings(stripped)
    if s["model"] != "lenet5_admm":
        raise SystemExit(f"the peer trains `lenet5_admm`, not `{s['model']}`")
    if step:
        every = int(step.group(1))
        s["milestones"] = list(range(every, s["epochs"] + 1, every))
        s["gamma"] = float(step.group(2))
    s["method"] = None
    if block:
        body = re.sub(r"#.*", "", block.group(1))

        def num(key, default):
            m = re.search(rf"\b{key}\s*:\s*([0-9.eE+-]+)", body)
            return float(m.group(1)) if m else default
        keep = re.search(r"keep\s*:\s*\{([^}]*)\}", body)
        if not keep:
            raise SystemExit("the peer needs `keep` as a map { layer: ratio }")
        stages = re.search(r"stages\s*:\s*\[([^\]]*)\]", body)
        s["method"] = {
            "keep": {k.strip(): float(v) for k, v in
                     (item.split(":") for item in keep.group(1).split(",") if item.strip())},
            "rho": num("rho", 1e-3), "rho_growth": num("rho_growth", 1.3),
            "rounds": int(num("rounds", 4)), "epochs_per_round": int(num("epochs_per_round", 2)),
            "retrain_epochs": int(num("retrain_epochs", 4)),
            "stages": [float(x) for x in stages.group(1).split(",") if x.strip()] if stages
            else [],
        }
    return s


def forward(net, x, torch):
    F = torch.nn.functional
    p = net.p
    h = F.max_pool2d(F.conv2d(x, p["conv1.weight"], p["conv1.bias"]), 2)
    h = F.max_pool2d(F.conv2d(h, p["conv2.weight"], p["conv2.bias"]), 2).reshape(x.shape[0], -1)
    h = F.relu(F.linear(h, p["fc1.weight"], p["fc1.bias"]))
    return F.linear(h, p["fc2.weight"], p["fc2.bias"])


def phase_of(m, epochs, epoch):
    """('pretrain', 0, 0), ('admm', stage, round) or ('retrain', stage, 0), 1-based."""
    n_stages = max(1, len(m["stages"]))
    per_stage = m["rounds"] * m["epochs_per_round"] + m["retrain_epochs"]
    start = epochs - n_stages * per_stage
    if start < 0:
        raise SystemExit("the ADMM schedule does not fit in the run's epochs")
    if epoch < start:
        return ("pretrain", 0, 0)
    stage, within = divmod(epoch - start, per_stage)
    if stage >= n_stages:
        return ("retrain", n_stages, 0)
    if within < m["rounds"] * m["epochs_per_round"]:
        return ("admm", stage + 1, within // m["epochs_per_round"] + 1)
    return ("retrain", stage + 1, 0)


def main():
    setup = Setup(__doc__.splitlines()[0], settings)
    args, s, torch, net = setup.args, setup.s, setup.torch, setup.net
    import numpy as np

    net.forward = lambda x, pre=None: forward(net, x, torch)
    xtr_t, ytr_t, xte_t, yte_t = setup.xtr, setup.ytr, setup.xte, setup.yte
    batch, steps_per_epoch = setup.batch, setup.steps_per_epoch
    opt = net.optimizer(s, lr_at(s, 0))
    m = s["method"]
    layers = list(m["keep"]) if m else []
    weights = {k: net.p[f"{k}.weight"] for k in layers}
    z = {k: torch.zeros_like(w) for k, w in weights.items()}
    u = {k: torch.zeros_like(w) for k, w in weights.items()}
    mask = {k: torch.ones_like(w) for k, w in weights.items()}
    masked = False

    def kept(layer, stage):
        r = m["keep"][layer]
        if m["stages"]:
            r = min(1.0, r * m["stages"][-1] / m["stages"][stage - 1])
        n = weights[layer].numel()
        return min(n, max(1, int(np.floor(r * n + 0.5))))

    def project(layer, v, stage):
        """Π: v at the l largest |v| within the mask, 0 elsewhere (ties to the lower index)."""
        flat = v.reshape(-1).numpy()
        score = np.where(mask[layer].reshape(-1).numpy() != 0, np.abs(flat), -1.0)
        top = np.argsort(-score, kind="stable")[:kept(layer, stage)]
        out = np.zeros_like(flat)
        out[top] = flat[top]
        return torch.from_numpy(out.reshape(v.shape))

    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    t0 = time.perf_counter()
    train_flops, step = 0, 0
    test_acc = test_loss = math.nan
    rho = 0.0
    current = None
    for epoch in range(s["epochs"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, epoch)
        phase = phase_of(m, s["epochs"], epoch) if m else ("dense", 0, 0)
        if m and phase != current:
            kind, stage, rnd = phase
            if kind == "admm" and rnd == 1:
                with torch.no_grad():
                    for k, w in weights.items():
                        z[k] = project(k, w.detach(), stage)
                        u[k].zero_()
            if kind == "admm":
                rho = m["rho"] * m["rho_growth"] ** (rnd - 1)
            current = phase
        penalty_on = m is not None and current[0] == "admm"
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(
            setup.train_samples))
        step_flops = net.flops()[0] * batch
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            loss = torch.nn.functional.cross_entropy(net.forward(xtr_t[idx]), ytr_t[idx])
            if penalty_on:
                loss = loss + rho / 2 * sum(((w - z[k] + u[k]) ** 2).sum()
                                            for k, w in weights.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masked:
                for k, w in weights.items():
                    w.grad.mul_(mask[k])
            opt.step()
            if masked:
                with torch.no_grad():
                    for k, w in weights.items():
                        w.mul_(mask[k])
            step += 1
            train_flops += step_flops
            if not math.isfinite(loss.item()):
                raise SystemExit(f"diverged at step {step}")
        test_acc, test_loss = evaluate(net, xte_t, yte_t, torch)
        metrics.write(json.dumps({"kind": "epoch", "epoch": epoch + 1, "step": step,
                                  "test_accuracy": test_acc, "test_loss": test_loss}) + "\n")
        if m:
            nxt = phase_of(m, s["epochs"], epoch + 1)
            line = {"kind": "method", "epoch": epoch + 1, "phase": list(nxt)}
            kind, stage, _ = current
            if kind == "admm" and nxt != current:
                with torch.no_grad():
                    for k, w in weights.items():
                        z[k] = project(k, w.detach() + u[k], stage)
                        u[k] += w.detach() - z[k]
                line["nnz_z"] = {k: int((v != 0).sum()) for k, v in z.items()}
                if nxt[0] != "admm" or nxt[1] != stage:
                    with torch.no_grad():
                        for k, w in weights.items():
                            v = w.detach().reshape(-1).numpy()
                            score = np.where(mask[k].reshape(-1).numpy() != 0, np.abs(v), -1.0)
                            top = np.argsort(-score, kind="stable")[:kept(k, stage)]
                            new = np.zeros(v.size, dtype=np.float32)
                            new[top] = 1.0
                            mask[k] = torch.from_numpy(new.reshape(w.shape))
                            w.mul_(mask[k])
                            buf = opt.state[w].get("momentum_buffer")
                            if buf is not None:
                                buf.mul_(mask[k])
                    masked = True
                    line["hard_prune"] = stage
            if (nxt[1] != stage or epoch + 1 == s["epochs"]) and kind != "pretrain":
                line["stage_end"] = {"stage": stage, "test_accuracy": test_acc}
                line["nnz"] = {k: int((w != 0).sum()) for k, w in weights.items()}
            metrics.write(json.dumps(line) + "\n")
        metrics.flush()
    metrics.close()
    nnz = {k: int((w != 0).sum()) for k, w in weights.items()}
    setup.finish("admm" if m else "dense", step, (test_acc, test_loss), train_flops,
                 time.perf_counter() - t0, nnz=nnz)


if __name__ == "__main__":
    main()
