#!/usr/bin/env python3
"""Recompute one SGD step of a sparsec run independently (NumPy, float64) and compare.

Usage (LeNet-300-100 style MLPs: flatten -> dense -> relu -> ... -> dense):

    sparsec train examples/lenet300.net --out /tmp/one --set max_steps=1 --set shuffle=false
    python3 scripts/check_sgd_step.py /tmp/one [IDX_DIR]

It reads the initial weights (checkpoints/step-00000000/model.safetensors), the first batch of
the training set in file order, and the optimizer settings from the run's model file; computes
forward, mean softmax cross-entropy, backward and PyTorch's SGD update (on the first step the
momentum buffer equals the gradient); and compares with checkpoints/step-00000001. Needs numpy
and safetensors (pip install numpy safetensors).
"""
import gzip
import re
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def read_idx(path):
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def find(dir_, name):
    for candidate in (dir_ / name, dir_ / (name + ".gz")):
        if candidate.exists():
            return candidate
    raise SystemExit(f"{name} not found in {dir_}")


def option(text, key, default):
    m = re.search(rf"\b{key}\s*:\s*([0-9.eE+-]+|true|false)", text)
    if not m:
        return default
    v = m.group(1)
    return v == "true" if v in ("true", "false") else float(v)


def main():
    run = Path(sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/usr/share/datasets/fashion-mnist")
    model_text = (run / "model.net").read_text()
    lr = option(model_text, "lr", None)
    momentum = option(model_text, "momentum", 0.0)
    wd = option(model_text, "weight_decay", 0.0)
    nesterov = option(model_text, "nesterov", False)
    batch = int(option(model_text, "batch", 64))

    w0 = load_file(str(run / "checkpoints/step-00000000/model.safetensors"))
    w1 = load_file(str(run / "checkpoints/step-00000001/model.safetensors"))
    layers = sorted({k.rsplit(".", 1)[0] for k in w0}, key=lambda n: list(w0).index(n + ".weight"))

    images = read_idx(find(data, "train-images-idx3-ubyte"))[:batch].reshape(batch, -1) / 255.0
    labels = read_idx(find(data, "train-labels-idx1-ubyte"))[:batch].astype(np.int64)

    # Forward, keeping every layer's input and pre-activation.
    p = {k: v.astype(np.float64) for k, v in w0.items()}
    acts, pre = [images], []
    h = images
    for i, name in enumerate(layers):
        z = h @ p[name + ".weight"].T + p[name + ".bias"]
        pre.append(z)
        h = np.maximum(z, 0) if i + 1 < len(layers) else z
        acts.append(h)
    logits = acts[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    soft = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = -np.log(soft[np.arange(batch), labels]).mean()

    # Backward.
    grads = {}
    dz = soft.copy()
    dz[np.arange(batch), labels] -= 1
    dz /= batch
    for i in reversed(range(len(layers))):
        name = layers[i]
        grads[name + ".weight"] = dz.T @ acts[i]
        grads[name + ".bias"] = dz.sum(axis=0)
        if i > 0:
            dh = dz @ p[name + ".weight"]
            dz = dh * (pre[i - 1] > 0)

    worst = 0.0
    for k in w0:
        g = grads[k] + wd * p[k]
        if momentum:
            buf = g  # PyTorch: the first step's buffer is the gradient itself
            g = g + momentum * buf if nesterov else buf
        expected = p[k] - lr * g
        diff = np.abs(expected - w1[k].astype(np.float64)).max()
        worst = max(worst, diff)
        print(f"{k:12s} max |numpy - sparsec| = {diff:.3e}")
    print(f"loss {loss:.6f}; worst difference {worst:.3e}")
    if worst > 1e-5:
        raise SystemExit("FAIL: differences above 1e-5")
    print("OK: agrees to 1e-5")


if __name__ == "__main__":
    main()
