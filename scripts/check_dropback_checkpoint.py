#!/usr/bin/env python3
"""Check a Dropback checkpoint from the checkpoint alone, with an independent ChaCha8.

Usage:
    python3 scripts/check_dropback_checkpoint.py RUN_DIR/model.safetensors K

For every parameter recorded in the metadata ({name, seed, stream, lo, hi}), regenerate its
initial values exactly as docs/design.md specifies (ChaCha8, key = seed little-endian in the first 8
bytes, stream = the parameter's stream, element i = word i, u = (w >> 8) * 2^-24,
lo + (hi - lo) * u in float32), scale by the recorded init_scale (decay_init), and count the
weights that differ from it. Dropback's invariant: never more than K in all. Pure Python (no
numpy needed): the safetensors header is JSON, the data little-endian float32.
"""
import json
import struct
import sys


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def chacha8_block(key_words, counter, stream):
    # rand_chacha: constants, 8 key words, 64-bit block counter (words 12-13), 64-bit stream
    # (words 14-15).
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + key_words + [
        counter & 0xFFFFFFFF,
        counter >> 32,
        stream & 0xFFFFFFFF,
        stream >> 32,
    ]
    x = list(state)

    def qr(a, b, c, d):
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = rotl(x[b] ^ x[c], 7)

    for _ in range(4):  # 8 rounds = 4 double rounds
        qr(0, 4, 8, 12)
        qr(1, 5, 9, 13)
        qr(2, 6, 10, 14)
        qr(3, 7, 11, 15)
        qr(0, 5, 10, 15)
        qr(1, 6, 11, 12)
        qr(2, 7, 8, 13)
        qr(3, 4, 9, 14)
    return [(x[i] + state[i]) & 0xFFFFFFFF for i in range(16)]


def initial_values(seed, stream, lo, hi, n):
    key = struct.pack("<Q", seed) + bytes(24)
    key_words = list(struct.unpack("<8I", key))
    out = []
    block = 0
    lo, hi = f32(lo), f32(hi)  # the metadata prints the f32 bounds in decimal
    width = f32(hi - lo)
    while len(out) < n:
        for w in chacha8_block(key_words, block, stream):
            if len(out) == n:
                break
            u = f32((w >> 8) * (1.0 / 16777216.0))
            out.append(f32(lo + f32(width * u)))
        block += 1
    return out


def main():
    path, k = sys.argv[1], int(sys.argv[2])
    raw = open(path, "rb").read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["sparsec"])
    data = raw[8 + header_len :]
    scale = meta.get("init_scale", 1.0)
    total = 0
    for record in meta["params"]:
        info = header[record["name"]]
        start, end = info["data_offsets"]
        n = (end - start) // 4
        values = struct.unpack(f"<{n}f", data[start:end])
        if record["init"] == "uniform":
            w0 = initial_values(record["seed"], record["stream"], record["lo"], record["hi"], n)
        else:
            w0 = [0.0] * n
        if scale != 1.0:
            w0 = [f32(v * scale) for v in w0]
        differ = sum(1 for a, b in zip(values, w0) if a != b)
        total += differ
        print(f"{record['name']:14s} {n:8d} weights, {differ:6d} differ from their initial value")
    print(f"total {total} differ; k = {k}")
    if total > k:
        raise SystemExit("FAIL: more than k weights differ from their regenerated initial values")
    print("OK")


if __name__ == "__main__":
    main()
