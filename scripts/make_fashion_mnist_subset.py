#!/usr/bin/env python3
"""Make the class-balanced Fashion-MNIST subset bundled in data/fashion-mnist-subset/.

Takes the first N training images of each class and the first M test images of each class from
the official IDX files, keeps them in their original relative order, and writes them as gzip IDX
files with the original names. Standard library only; the output is byte-reproducible (gzip
header with mtime 0 and no file name, compression level 9).

Usage:
    python3 scripts/make_fashion_mnist_subset.py \
        [--src /usr/share/datasets/fashion-mnist] [--out data/fashion-mnist-subset] \
        [--train-per-class 600] [--test-per-class 100]
"""

import argparse
import gzip
import io
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
CLASSES = 10


def read_file(directory, name):
    """Read `name` or `name.gz` from `directory`, decompressing gzip by its magic bytes."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            with open(path, "rb") as f:
                raw = f.read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            return path, raw
    sys.exit(f"error: neither {name} nor {name}.gz in {directory}")


def read_images(directory, name):
    path, raw = read_file(directory, name)
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IMAGES_MAGIC:
        sys.exit(f"error: {path}: bad magic {magic:#010x}")
    size = rows * cols
    if len(raw) != 16 + n * size:
        sys.exit(f"error: {path}: expected {16 + n * size} bytes, found {len(raw)}")
    return [raw[16 + i * size : 16 + (i + 1) * size] for i in range(n)], rows, cols


def read_labels(directory, name):
    path, raw = read_file(directory, name)
    magic, n = struct.unpack(">II", raw[:8])
    if magic != LABELS_MAGIC:
        sys.exit(f"error: {path}: bad magic {magic:#010x}")
    if len(raw) != 8 + n:
        sys.exit(f"error: {path}: expected {8 + n} bytes, found {len(raw)}")
    return list(raw[8:])


def write_gzip(path, payload):
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that changes between runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def subset(src, out, prefix, per_class):
    images, rows, cols = read_images(src, f"{prefix}-images-idx3-ubyte")
    labels = read_labels(src, f"{prefix}-labels-idx1-ubyte")
    if len(images) != len(labels):
        sys.exit(f"error: {prefix}: {len(images)} images but {len(labels)} labels")
    taken = [0] * CLASSES
    keep = []
    for i, label in enumerate(labels):
        if label >= CLASSES:
            sys.exit(f"error: {prefix}: label {label} at {i} is not < {CLASSES}")
        if taken[label] < per_class:
            taken[label] += 1
            keep.append(i)
    if any(t < per_class for t in taken):
        sys.exit(f"error: {prefix}: not enough samples per class: {taken}")
    n = len(keep)
    write_gzip(
        os.path.join(out, f"{prefix}-images-idx3-ubyte.gz"),
        struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + b"".join(images[i] for i in keep),
    )
    write_gzip(
        os.path.join(out, f"{prefix}-labels-idx1-ubyte.gz"),
        struct.pack(">II", LABELS_MAGIC, n) + bytes(labels[i] for i in keep),
    )
    print(f"{prefix}: {n} samples ({per_class} per class) from {len(labels)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="data/fashion-mnist-subset")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    subset(args.src, args.out, "train", args.train_per_class)
    subset(args.src, args.out, "t10k", args.test_per_class)


if __name__ == "__main__":
    main()
