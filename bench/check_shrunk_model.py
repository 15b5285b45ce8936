#!/usr/bin/env python3
"""An independent NumPy forward pass of a run's model.safetensors, at the shapes the file holds.

For the activation-density, PruneTrain and ADMM examples (and their dense pairs): LeNet-300-100
(`fc1`..`fc3`, ReLU after the hidden layers) or LeNet-5 (`conv1`, `conv2`, max-pool 2, `fc1`,
`fc2`) with ReLU after both convolutions, or without (`--no-conv-relu`: examples/lenet5_admm.net). It reads the safetensors file by its published layout (8-byte header length,
JSON header, raw little-endian data), runs the Fashion-MNIST test set (pixels / 255) through it and
prints the test accuracy, the parameter count and each tensor's non-zero entries as JSON, with no sparsec code involved.

    bench/.venv/bin/python bench/check_shrunk_model.py RUN_DIR/model.safetensors --data DIR
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
from torch_dropback_train import load_split  # noqa: E402  (IDX reading only; NumPy)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], "<f4").reshape(t["shape"])
    return out


def conv2d(x, w, b):
    """Valid cross-correlation, stride 1: x [N, C, H, W], w [O, C, K, K]."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = h - k + 1, wd - k + 1
    cols = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # N C ho wo k k
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n, ho, wo, c * k * k)
    y = cols @ w.reshape(o, -1).T + b
    return y.transpose(0, 3, 1, 2)


def maxpool2(x):
    n, c, h, w = x.shape
    return x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def forward(p, x, conv_relu=True):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    after_conv = relu if conv_relu else (lambda v: v)
    if "conv1.weight" in p:
        h = maxpool2(after_conv(conv2d(x, p["conv1.weight"], p["conv1.bias"])))
        h = maxpool2(after_conv(conv2d(h, p["conv2.weight"], p["conv2.bias"])))
        h = h.reshape(h.shape[0], -1)
        h = relu(h @ p["fc1.weight"].T + p["fc1.bias"])
        return h @ p["fc2.weight"].T + p["fc2.bias"]
    h = x.reshape(x.shape[0], -1)
    h = relu(h @ p["fc1.weight"].T + p["fc1.bias"])
    h = relu(h @ p["fc2.weight"].T + p["fc2.bias"])
    return h @ p["fc3.weight"].T + p["fc3.bias"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--no-conv-relu", action="store_true",
                    help="LeNet-5 without ReLU after its convolutions")
    args = ap.parse_args()
    p = read_safetensors(args.model)
    x, y = load_split(args.data, "t10k")
    correct = 0
    for i in range(0, x.shape[0], 500):
        logits = forward(p, x[i:i + 500].astype(np.float32), not args.no_conv_relu)
        correct += int((logits.argmax(1) == y[i:i + 500]).sum())
    print(json.dumps({"test_accuracy": correct / x.shape[0],
                      "params_total": int(sum(v.size for v in p.values())),
                      "shapes": {k: list(v.shape) for k, v in sorted(p.items())},
                      "nonzero": {k: int(np.count_nonzero(v)) for k, v in sorted(p.items())}}))


if __name__ == "__main__":
    main()
